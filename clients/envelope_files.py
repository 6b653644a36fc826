"""Sealing envelopes from files and opening them into files, in bounded memory.

The I/O layer over the sans-I/O `protocol.envelope`. Whatever an attachment's size, memory holds
a few 1 MiB chunks: plaintext and ciphertext move in 1 MiB reads (a ciphertext chunk is 1 MiB
plus its 17-byte tag). When the process may use more than one CPU, each part's ciphertext
digest is computed on a second thread while the stream encrypts or decrypts the next chunk
(libsodium releases the GIL), through a queue of at most `DIGEST_QUEUE_CHUNKS` chunks; the digest
is still BLAKE2b over the ciphertext in stream order (docs/performance.md has the figures).

Invariants:
- Sealing writes every file to a temporary name in the output directory, fsyncs it, and moves it
  into place only when the whole envelope is sealed: the parts first, then `header`, then the
  directory is fsynced. A failure leaves no temporary file behind. Existing files are never
  replaced (the move is a hard link, which fails if the name exists).
- Opening releases no plaintext until every check passed. `EnvelopeOpener` checks the header in
  the order ARCHITECTURE.md gives before any file is created. `open_into_sinks` hands each
  attachment's quarantined plaintext to a sink the caller opens (the client library seals it at
  once, `clients.received_files`) and returns only after `EnvelopeOpener.finish()`.
  `open_from_directory` decrypts into a quarantine directory inside the destination (hidden,
  mode 0700, files 0600), and only after `finish()` moves the files to their manifest names. Any
  failure, including one while moving, removes the quarantine and whatever was already moved,
  then raises: nothing is released.
- A released file never replaces an existing one: a name that is taken becomes "name (2).ext",
  "name (3).ext", ..., so two attachments with the same name both arrive. Names longer than
  the file system allows (255 bytes; Thai and Lao take 3 bytes a character) are shortened
  before the extension. Released files keep mode 0600.
- Both functions are synchronous plain file I/O; the async client library runs them in a thread.
  Operating-system failures surface as `OSError`; protocol failures as `CaseBridgeError`.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import queue
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

import nacl.signing

from protocol.certificate import AgencyCertificate, EncryptionKey, TrustStore
from protocol.envelope import (
    HEADER_LIMITS,
    MEDIA_TYPE,
    AttachmentInfo,
    EnvelopeHeader,
    EnvelopeOpener,
    EnvelopeSealer,
    Manifest,
    RecipientKey,
    check_filename,
)
from protocol.errors import InvalidField, MalformedInput
from protocol.primitives import Random, system_random
from protocol.stream import ABYTES, CHUNK_BYTES, CiphertextDigest

PLAIN_READ_BYTES = CHUNK_BYTES
CIPHER_READ_BYTES = CHUNK_BYTES + ABYTES
DIGEST_QUEUE_CHUNKS = 2
DEFAULT_MEDIA_TYPE = "application/octet-stream"
DEFAULT_TTL_SECONDS = 14 * 86400
HEADER_NAME = "header"
NAME_MAX_BYTES = 255
MAX_NAME_TRIES = 1000
QUARANTINE_PREFIX = ".casebridge-quarantine-"


def part_name(part_no: int) -> str:
    """The file name of a part's ciphertext in a sealed directory; part 0 is the manifest."""
    return f"part-{part_no}"


@dataclass(frozen=True, slots=True)
class AttachmentFile:
    """A file to attach; the name defaults to the path's, the media type to a guess from it."""

    path: Path
    filename: str | None = None
    media_type: str | None = None


@dataclass(frozen=True, slots=True)
class SealedFiles:
    header: EnvelopeHeader
    header_path: Path
    part_paths: tuple[Path, ...]
    """Ciphertext of each part in part order; `part_paths[0]` is the manifest."""


@dataclass(frozen=True, slots=True)
class OpenedEnvelope:
    header: EnvelopeHeader
    sender: AgencyCertificate
    manifest: Manifest


class PlainSink(Protocol):
    """Where one attachment's quarantined plaintext goes, piece by piece."""

    def write(self, data: bytes, /) -> object: ...


SinkOpener = Callable[[int, AttachmentInfo], AbstractContextManager[PlainSink]]
"""`sink_for(index, info)`: a context manager around attachment `index`'s sink, left without an
error only when that attachment's last chunk passed its checks (and on an error otherwise)."""


@dataclass(frozen=True, slots=True)
class OpenedFiles:
    header: EnvelopeHeader
    sender: AgencyCertificate
    manifest: Manifest
    paths: tuple[Path, ...]
    """Where each attachment was released, in manifest order."""


def guess_media_type(filename: str) -> str:
    guessed, _ = mimetypes.guess_type(filename, strict=False)
    if guessed is not None and MEDIA_TYPE.fullmatch(guessed.lower()):
        return guessed.lower()
    return DEFAULT_MEDIA_TYPE


# --- sealing ------------------------------------------------------------------------------------


def seal_to_directory(
    out_dir: Path,
    *,
    sender: AgencyCertificate,
    signing_key: nacl.signing.SigningKey,
    recipients: Sequence[EncryptionKey],
    content_type: str,
    body: bytes,
    attachments: Sequence[Path | AttachmentFile] = (),
    now: int,
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    rng: Random = system_random,
    digest_thread: bool | None = None,
) -> SealedFiles:
    """Seal `body` and the attachment files into `out_dir` (created if missing) as `header`
    and `part-0`, `part-1`, ...; recipients are encryption keys verified through `TrustStore`.

    `digest_thread` hashes ciphertext on a second thread; by default, when this process may run
    on more than one CPU."""
    threaded = _use_digest_thread(digest_thread)
    sources = [a if isinstance(a, AttachmentFile) else AttachmentFile(Path(a)) for a in attachments]
    infos = [_attachment_info(s) for s in sources]
    sealer = EnvelopeSealer(
        sender=sender,
        signing_key=signing_key,
        recipients=recipients,
        content_type=content_type,
        body=body,
        attachments=infos,
        now=now,
        ttl_seconds=ttl_seconds,
        rng=rng,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (HEADER_NAME, part_name(0)):
        if (out_dir / name).exists():
            raise FileExistsError(f"{out_dir / name} exists; seal each envelope into a directory of its own")
    temporaries: list[Path] = []
    placed: list[Path] = []
    try:
        manifest_tmp = _new_temporary(out_dir, temporaries)
        _write_file(manifest_tmp, [sealer.manifest_ciphertext()])
        part_tmps = [manifest_tmp]
        for i, (source, info) in enumerate(zip(sources, infos, strict=True)):
            part_tmps.append(_new_temporary(out_dir, temporaries))
            _seal_attachment(sealer, i, source.path, info, part_tmps[-1], threaded)
        sealed = sealer.finish()
        header_tmp = _new_temporary(out_dir, temporaries)
        _write_file(header_tmp, [sealed.raw])
        final_parts = tuple(out_dir / part_name(i) for i in range(len(part_tmps)))
        for tmp, final in [*zip(part_tmps, final_parts, strict=True), (header_tmp, out_dir / HEADER_NAME)]:
            os.link(tmp, final)
            placed.append(final)
        _fsync_directory(out_dir)
        placed.clear()
        return SealedFiles(sealed.header, out_dir / HEADER_NAME, final_parts)
    finally:
        for path in [*placed, *temporaries]:
            path.unlink(missing_ok=True)


def _attachment_info(source: AttachmentFile) -> AttachmentInfo:
    name = check_filename(source.filename if source.filename is not None else source.path.name)
    st = source.path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise InvalidField("attachments", f"regular files; {source.path} is not one")
    return AttachmentInfo(name, source.media_type or guess_media_type(name), st.st_size)


def _seal_attachment(
    sealer: EnvelopeSealer, index: int, path: Path, info: AttachmentInfo, out: Path, threaded: bool
) -> None:
    encryptor = sealer.attachment(index)
    changed = InvalidField("attachments", f"{info.filename} left unchanged while it is sealed")
    with (
        path.open("rb") as plain,
        out.open("wb") as sink,
        _Digester(encryptor.detach_digest(), threaded) as digest,
    ):
        seen = 0
        while chunk := plain.read(PLAIN_READ_BYTES):
            seen += len(chunk)
            if seen > info.length:
                raise changed
            for ct in encryptor.update(chunk):
                digest.feed(ct)
                sink.write(ct)
        if seen != info.length:
            raise changed
        for ct in encryptor.finalize():
            digest.feed(ct)
            sink.write(ct)
        sink.flush()
        os.fsync(sink.fileno())


# --- opening ------------------------------------------------------------------------------------


def load_sealed_directory(directory: Path) -> tuple[bytes, tuple[Path, ...]]:
    """The header bytes and part paths of a directory written by `seal_to_directory`."""
    with (directory / HEADER_NAME).open("rb") as f:
        header = f.read(HEADER_LIMITS.max_bytes + 1)
    parsed = EnvelopeHeader.parse(header)
    return header, tuple(directory / part_name(i) for i in range(len(parsed.parts)))


def open_from_directory(
    header: bytes,
    parts: Sequence[Path | BinaryIO],
    destination: Path,
    *,
    trust: TrustStore,
    sender_certificate: bytes | AgencyCertificate,
    recipient_id: str,
    keys: Mapping[bytes, RecipientKey],
    now: int,
    at: int | None = None,
    processed: Container[bytes] = frozenset(),
    digest_thread: bool | None = None,
) -> OpenedFiles:
    """Check and decrypt an envelope whose part ciphertexts are `parts` (paths or readers, in
    part order), releasing its attachments into `destination` (created if missing) only if
    every check passed. Readers are read to their end and not closed. `digest_thread` as for
    `seal_to_directory`."""
    quarantine: list[Path] = []

    def quarantined(index: int, info: AttachmentInfo) -> AbstractContextManager[PlainSink]:
        if not quarantine:
            destination.mkdir(parents=True, exist_ok=True)
            quarantine.append(Path(tempfile.mkdtemp(prefix=QUARANTINE_PREFIX, dir=destination)))
        return _new_file(quarantine[0] / part_name(index + 1))

    released: list[Path] = []
    try:
        opened = open_into_sinks(
            header,
            parts,
            quarantined,
            trust=trust,
            sender_certificate=sender_certificate,
            recipient_id=recipient_id,
            keys=keys,
            now=now,
            at=at,
            processed=processed,
            digest_thread=digest_thread,
        )
        destination.mkdir(parents=True, exist_ok=True)
        for i, info in enumerate(opened.manifest.attachments):
            released.append(_release(quarantine[0] / part_name(i + 1), destination, info.filename))
        _fsync_directory(destination)
        paths = tuple(released)
        released.clear()
        return OpenedFiles(opened.header, opened.sender, opened.manifest, paths)
    finally:
        for path in released:
            path.unlink(missing_ok=True)
        for folder in quarantine:
            shutil.rmtree(folder, ignore_errors=True)


def open_into_sinks(
    header: bytes,
    parts: Sequence[Path | BinaryIO],
    sink_for: SinkOpener,
    *,
    trust: TrustStore,
    sender_certificate: bytes | AgencyCertificate,
    recipient_id: str,
    keys: Mapping[bytes, RecipientKey],
    now: int,
    at: int | None = None,
    processed: Container[bytes] = frozenset(),
    digest_thread: bool | None = None,
) -> OpenedEnvelope:
    """Check and decrypt an envelope as `open_from_directory` does, handing attachment i's
    plaintext, in order, to the sink `sink_for(i, info)` opens. What a sink got is quarantined
    until this returns: on any failure it raises, and the caller must release nothing."""
    threaded = _use_digest_thread(digest_thread)
    opener = EnvelopeOpener(
        header,
        trust=trust,
        sender_certificate=sender_certificate,
        recipient_id=recipient_id,
        keys=keys,
        now=now,
        at=at,
        processed=processed,
    )
    expected = opener.header.parts
    if len(parts) != len(expected):
        raise MalformedInput(reason=f"{len(parts)} part files given, the header lists {len(expected)}")
    with _reader(parts[0]) as source:
        manifest_ct = source.read(expected[0].ciphertext_length + 1)
    manifest = opener.open_manifest(manifest_ct)
    for i, info in enumerate(manifest.attachments):
        with sink_for(i, info) as sink:
            _open_attachment(opener, i, parts[i + 1], sink, threaded)
    return OpenedEnvelope(opener.header, opener.sender, opener.finish())


@contextlib.contextmanager
def _new_file(target: Path) -> Iterator[BinaryIO]:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as sink:
        yield sink
        sink.flush()
        os.fsync(sink.fileno())


def _open_attachment(
    opener: EnvelopeOpener, index: int, part: Path | BinaryIO, sink: PlainSink, threaded: bool
) -> None:
    decryptor = opener.attachment(index)
    with _reader(part) as source, _Digester(decryptor.detach_digest(), threaded) as digest:
        # Bounded: the decryptor refuses any byte past the part's final chunk.
        while ct := source.read(CIPHER_READ_BYTES):
            digest.feed(ct)
            for plain in decryptor.update(ct):
                sink.write(plain)
        digest.close()
        decryptor.finalize()


def _release(held: Path, destination: Path, filename: str) -> Path:
    """Hard-link `held` into `destination` under the first free variant of `filename`."""
    stem, suffix = _split_name(filename)
    for n in range(1, MAX_NAME_TRIES + 1):
        candidate = destination / _fit_name(stem, suffix if n == 1 else f" ({n}){suffix}")
        try:
            os.link(held, candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free name for {filename!r} in {destination} after {MAX_NAME_TRIES} tries")


def _split_name(filename: str) -> tuple[str, str]:
    suffix = Path(filename).suffix
    if len(suffix.encode()) > NAME_MAX_BYTES // 2:
        return filename, ""
    return filename[: len(filename) - len(suffix)], suffix


def _fit_name(stem: str, tail: str) -> str:
    """`stem + tail`, the stem shortened until the name fits in `NAME_MAX_BYTES` of UTF-8."""
    while stem and len((stem + tail).encode()) > NAME_MAX_BYTES:
        stem = stem[:-1]
    name = stem + tail
    return name if name not in {"", ".", ".."} else "attachment"


# --- plumbing -----------------------------------------------------------------------------------


def _use_digest_thread(requested: bool | None) -> bool:
    if requested is not None:
        return requested
    return len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1


class _Digester:
    """Feeds a detached `CiphertextDigest` in order: on a thread of its own through a bounded
    queue when `threaded`, else in the caller's thread. `close` waits for the last chunk and
    closes the digest. Leaving the block on an error stops the thread without closing it."""

    def __init__(self, digest: CiphertextDigest, threaded: bool) -> None:
        self._digest = digest
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=DIGEST_QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._closed = False
        self._thread = (
            threading.Thread(target=self._run, name="casebridge-part-digest", daemon=True)
            if threaded
            else None
        )

    def __enter__(self) -> _Digester:
        if self._thread is not None:
            self._thread.start()
        return self

    def _run(self) -> None:
        # The thread drains the queue to its end even after an error, so `feed` never blocks
        # for ever; the error is raised in the caller's thread by `close`.
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._digest.update(item)
                except BaseException as e:
                    self._error = e

    def feed(self, ct: bytes) -> None:
        if self._thread is None:
            self._digest.update(ct)
        else:
            self._queue.put(ct)

    def _stop(self) -> None:
        if not self._closed:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)
                self._thread.join()

    def close(self) -> None:
        self._stop()
        if self._error is not None:
            raise self._error
        self._digest.close()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self._stop()


@contextlib.contextmanager
def _reader(part: Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(part, Path):
        with part.open("rb") as f:
            yield f
    else:
        yield part


def _new_temporary(directory: Path, registry: list[Path]) -> Path:
    fd, name = tempfile.mkstemp(prefix=".casebridge-", suffix=".partial", dir=directory)
    os.close(fd)
    registry.append(Path(name))
    return registry[-1]


def _write_file(path: Path, pieces: Sequence[bytes]) -> None:
    with path.open("wb") as f:
        for piece in pieces:
            f.write(piece)
        f.flush()
        os.fsync(f.fileno())


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
