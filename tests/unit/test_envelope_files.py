"""Envelopes sealed from files and opened into files: round trips, all-or-nothing release, memory.

Everything runs on real files in tmp_path; the memory bound is measured in a real subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import nacl.public
import nacl.signing
import pytest

from clients.envelope_files import (
    QUARANTINE_PREFIX,
    AttachmentFile,
    OpenedFiles,
    SealedFiles,
    load_sealed_directory,
    open_from_directory,
    seal_to_directory,
)
from protocol.certificate import AgencyCertificate, EncryptionKey, Role, RootCertificate, TrustStore
from protocol.envelope import RecipientKey
from protocol.errors import DecryptionFailed, InvalidField, MalformedInput, NotARecipient
from protocol.stream import ABYTES, CHUNK_BYTES, PartDecryptor, PartEncryptor, padded_length

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_750_000_000
MIB = 1 << 20
BODY = "ผู้เสียหาย: สมชาย ใจดี / ຜູ້ປະສານງານ: ນາງ ສົມພອນ ແກ້ວມະນີ".encode()


@dataclass(frozen=True)
class World:
    trust: TrustStore
    sender: AgencyCertificate
    sender_key: nacl.signing.SigningKey
    recipient_id: str
    recipient_enc: EncryptionKey
    recipient_keys: dict[bytes, RecipientKey]


def make_world() -> World:
    roots, certs = [], {}
    for country in ("TH", "LA"):
        root_key = nacl.signing.SigningKey.generate()
        root = RootCertificate.create(
            root_key, country=country, name=f"{country} root", not_before=0, not_after=NOW * 2
        )
        roots.append(root)
        agency_key = nacl.signing.SigningKey.generate()
        cert = AgencyCertificate.issue(
            root_key,
            root,
            serial=1,
            agency_id=f"{country}-FOCAL",
            name="ศูนย์ประสานงาน" if country == "TH" else "ສູນປະສານງານ",
            roles=[Role.AGENCY],
            signing_key=bytes(agency_key.verify_key),
            not_before=0,
            not_after=NOW * 2,
        )
        certs[country] = (cert, agency_key)
    la_cert, la_key = certs["LA"]
    box = nacl.public.PrivateKey.generate()
    enc = EncryptionKey.issue(
        la_key, agency_id=la_cert.agency_id, public_key=bytes(box.public_key), not_before=0, not_after=NOW * 2
    )
    return World(
        trust=TrustStore(roots),
        sender=certs["TH"][0],
        sender_key=certs["TH"][1],
        recipient_id=la_cert.agency_id,
        recipient_enc=enc,
        recipient_keys={enc.key_id: RecipientKey(bytes(box.public_key), bytes(box))},
    )


@pytest.fixture(scope="module")
def world() -> World:
    return make_world()


def write_random(path: Path, size: int) -> bytes:
    """Write `size` random bytes in 1 MiB pieces; return their SHA-256."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, MIB))
            h.update(piece)
            f.write(piece)
            left -= len(piece)
    return h.digest()


def sha256_file(path: Path) -> bytes:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(MIB):
            h.update(piece)
    return h.digest()


def seal(
    world: World, out: Path, attachments: list[Path | AttachmentFile], threaded: bool | None = None
) -> SealedFiles:
    return seal_to_directory(
        out,
        sender=world.sender,
        signing_key=world.sender_key,
        recipients=[world.recipient_enc],
        content_type="application/json",
        body=BODY,
        attachments=attachments,
        now=NOW,
        digest_thread=threaded,
    )


def open_into(
    world: World,
    sealed_dir: Path,
    destination: Path,
    parts: list[Path | BinaryIO] | None = None,
    threaded: bool | None = None,
) -> OpenedFiles:
    header, paths = load_sealed_directory(sealed_dir)
    return open_from_directory(
        header,
        list(paths) if parts is None else parts,
        destination,
        trust=world.trust,
        sender_certificate=world.sender.raw,
        recipient_id=world.recipient_id,
        keys=world.recipient_keys,
        now=NOW + 60,
        digest_thread=threaded,
    )


def flip_byte(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 1]))


# --- round trips ---------------------------------------------------------------------------------


def test_attachments_of_every_size_round_trip_with_thai_and_lao_names(world: World, tmp_path: Path) -> None:
    sizes = {
        "เอกสารประกอบ.pdf": 0,
        "ເອກະສານ.pdf": 1,
        "รูปถ่าย สมชาย.jpg": MIB - 1,
        "ບົດລາຍງານ.docx": MIB,
        "บันทึก.txt": MIB + 1,
        "ສຳເນົາ.bin": 3 * MIB + 123,
    }
    src = tmp_path / "src"
    src.mkdir()
    digests = {name: write_random(src / name, size) for name, size in sizes.items()}
    sealed = seal(world, tmp_path / "sealed", [src / name for name in sizes])
    assert sorted(p.name for p in (tmp_path / "sealed").iterdir()) == sorted(
        ["header"] + [f"part-{i}" for i in range(len(sizes) + 1)]
    )
    assert [p.stat().st_size for p in sealed.part_paths] == [p.ciphertext_length for p in sealed.header.parts]

    opened = open_into(world, tmp_path / "sealed", tmp_path / "inbox")
    assert opened.manifest.body == BODY
    assert [a.filename for a in opened.manifest.attachments] == list(sizes)
    assert [a.length for a in opened.manifest.attachments] == list(sizes.values())
    media = {a.filename: a.media_type for a in opened.manifest.attachments}
    assert media["เอกสารประกอบ.pdf"] == "application/pdf"
    assert media["ສຳເນົາ.bin"] == "application/octet-stream"
    assert [p.name for p in opened.paths] == list(sizes)
    for path in opened.paths:
        assert sha256_file(path) == digests[path.name]
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == sorted(sizes)


def test_given_filename_and_media_type_override_the_path(world: World, tmp_path: Path) -> None:
    plain = tmp_path / "scan-0001.dat"
    digest = write_random(plain, 5000)
    seal(world, tmp_path / "sealed", [AttachmentFile(plain, "หนังสือเดินทาง.pdf", "application/pdf")])
    opened = open_into(world, tmp_path / "sealed", tmp_path / "inbox")
    (info,) = opened.manifest.attachments
    assert (info.filename, info.media_type) == ("หนังสือเดินทาง.pdf", "application/pdf")
    assert opened.paths == (tmp_path / "inbox" / "หนังสือเดินทาง.pdf",)
    assert sha256_file(opened.paths[0]) == digest


def test_parts_given_as_open_readers_open_like_paths(world: World, tmp_path: Path) -> None:
    plain = tmp_path / "ເອກະສານ.pdf"
    digest = write_random(plain, 2 * MIB + 7)
    sealed = seal(world, tmp_path / "sealed", [plain])
    with sealed.part_paths[0].open("rb") as p0, sealed.part_paths[1].open("rb") as p1:
        opened = open_into(world, tmp_path / "sealed", tmp_path / "inbox", parts=[p0, p1])
    assert sha256_file(opened.paths[0]) == digest


def test_taken_names_are_never_overwritten(world: World, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    write_random(a / "เอกสารประกอบ.pdf", 100)
    write_random(b / "เอกสารประกอบ.pdf", 200)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "เอกสารประกอบ.pdf").write_bytes(b"kept")
    seal(world, tmp_path / "sealed", [a / "เอกสารประกอบ.pdf", b / "เอกสารประกอบ.pdf"])
    opened = open_into(world, tmp_path / "sealed", inbox)
    assert [p.name for p in opened.paths] == ["เอกสารประกอบ (2).pdf", "เอกสารประกอบ (3).pdf"]
    assert (inbox / "เอกสารประกอบ.pdf").read_bytes() == b"kept"
    assert [p.stat().st_size for p in opened.paths] == [100, 200]


def test_names_too_long_for_the_file_system_are_shortened_before_the_extension(
    world: World, tmp_path: Path
) -> None:
    name = "ก" * 200 + ".pdf"  # 200 characters, 604 bytes of UTF-8
    plain = tmp_path / "long.pdf"
    write_random(plain, 10)
    seal(world, tmp_path / "sealed", [AttachmentFile(plain, name), AttachmentFile(plain, name)])
    opened = open_into(world, tmp_path / "sealed", tmp_path / "inbox")
    first, second = (p.name for p in opened.paths)
    assert first == "ก" * 83 + ".pdf"  # 253 bytes
    assert len(second.encode()) <= 255
    assert second.endswith(" (2).pdf")


@pytest.mark.parametrize(("seal_threaded", "open_threaded"), [(False, True), (True, False), (False, False)])
def test_digest_on_the_callers_thread_makes_and_checks_the_same_envelope(
    world: World, tmp_path: Path, seal_threaded: bool, open_threaded: bool
) -> None:
    plain = tmp_path / "ເອກະສານ.pdf"
    digest = write_random(plain, 2 * MIB + 1)
    seal(world, tmp_path / "sealed", [plain], threaded=seal_threaded)
    opened = open_into(world, tmp_path / "sealed", tmp_path / "inbox", threaded=open_threaded)
    assert sha256_file(opened.paths[0]) == digest
    flip_byte(tmp_path / "sealed" / "part-1", 5)
    with pytest.raises(DecryptionFailed):
        open_into(world, tmp_path / "sealed", tmp_path / "again", threaded=open_threaded)
    assert_nothing_released(tmp_path / "again", set())


# --- nothing is released unless everything passed ------------------------------------------------


def sealed_three(world: World, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    for name, size in [("หนึ่ง.pdf", 10), ("ສອງ.pdf", MIB + 5), ("สาม.pdf", 2 * MIB + 9)]:
        write_random(src / name, size)
    seal(world, tmp_path / "sealed", sorted(src.iterdir()))
    return tmp_path / "sealed"


def assert_nothing_released(inbox: Path, before: set[str]) -> None:
    assert {p.name for p in inbox.iterdir()} == before
    assert not [p for p in inbox.iterdir() if p.name.startswith(QUARANTINE_PREFIX)]


def test_tampered_last_chunk_of_last_part_releases_nothing(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    last = sealed_dir / "part-3"
    flip_byte(last, last.stat().st_size - ABYTES - 1)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "เดิม.txt").write_bytes(b"already here")
    with pytest.raises(DecryptionFailed):
        open_into(world, sealed_dir, inbox)
    assert_nothing_released(inbox, {"เดิม.txt"})


def test_truncated_part_file_is_refused(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    last = sealed_dir / "part-3"
    os.truncate(last, last.stat().st_size - 1)
    inbox = tmp_path / "inbox"
    with pytest.raises(DecryptionFailed):
        open_into(world, sealed_dir, inbox)
    assert_nothing_released(inbox, set())


def test_part_file_with_bytes_appended_is_refused(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    with (sealed_dir / "part-2").open("ab") as f:
        f.write(b"\x00")
    inbox = tmp_path / "inbox"
    with pytest.raises(DecryptionFailed):
        open_into(world, sealed_dir, inbox)
    assert_nothing_released(inbox, set())


def test_swapped_part_files_are_refused(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    _, parts = load_sealed_directory(sealed_dir)
    inbox = tmp_path / "inbox"
    with pytest.raises(DecryptionFailed):
        open_into(world, sealed_dir, inbox, parts=[parts[0], parts[1], parts[3], parts[2]])
    assert_nothing_released(inbox, set())


def test_missing_part_file_is_refused_before_anything_is_written(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    _, parts = load_sealed_directory(sealed_dir)
    inbox = tmp_path / "inbox"
    with pytest.raises(MalformedInput):
        open_into(world, sealed_dir, inbox, parts=list(parts[:3]))
    assert not inbox.exists()


def test_agency_not_addressed_opens_nothing(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    header, parts = load_sealed_directory(sealed_dir)
    inbox = tmp_path / "inbox"
    with pytest.raises(NotARecipient):
        open_from_directory(
            header,
            list(parts),
            inbox,
            trust=world.trust,
            sender_certificate=world.sender.raw,
            recipient_id="LA-OTHER",
            keys=world.recipient_keys,
            now=NOW + 60,
        )
    assert not inbox.exists()


class WatchingReader:
    """A real file that, whenever it is read, records what the destination holds at that moment."""

    def __init__(self, path: Path, inbox: Path) -> None:
        self._file = path.open("rb")
        self._inbox = inbox
        self.seen: list[tuple[str, int, list[int]]] = []

    def read(self, n: int = -1) -> bytes:
        for entry in self._inbox.iterdir():
            files = [stat.S_IMODE(f.stat().st_mode) for f in entry.iterdir()] if entry.is_dir() else []
            self.seen.append((entry.name, stat.S_IMODE(entry.stat().st_mode), files))
        return self._file.read(n)

    def close(self) -> None:
        self._file.close()


def test_plaintext_waits_in_a_private_hidden_quarantine(world: World, tmp_path: Path) -> None:
    sealed_dir = sealed_three(world, tmp_path)
    _, parts = load_sealed_directory(sealed_dir)
    inbox = tmp_path / "inbox"
    watcher = WatchingReader(parts[3], inbox)
    try:
        open_into(world, sealed_dir, inbox, parts=[*parts[:3], watcher])  # type: ignore[list-item]
    finally:
        watcher.close()
    assert watcher.seen, "the reader was never read"
    for name, mode, files in watcher.seen:
        assert name.startswith(QUARANTINE_PREFIX)
        assert mode == 0o700
        assert all(m == 0o600 for m in files)
    assert len(watcher.seen[-1][2]) == 3  # the last part's file is being written with the other two


# --- sealing ---------------------------------------------------------------------------------------


def test_sealing_never_replaces_an_existing_envelope(world: World, tmp_path: Path) -> None:
    plain = tmp_path / "ເອກະສານ.pdf"
    write_random(plain, 1000)
    first = seal(world, tmp_path / "sealed", [plain])
    before = {p.name: p.read_bytes() for p in (tmp_path / "sealed").iterdir()}
    with pytest.raises(FileExistsError):
        seal(world, tmp_path / "sealed", [plain])
    assert {p.name: p.read_bytes() for p in (tmp_path / "sealed").iterdir()} == before
    assert first.header_path.read_bytes() == first.header.raw


def test_a_directory_is_not_an_attachment(world: World, tmp_path: Path) -> None:
    (tmp_path / "โฟลเดอร์").mkdir()
    with pytest.raises(InvalidField):
        seal(world, tmp_path / "sealed", [tmp_path / "โฟลเดอร์"])
    assert not (tmp_path / "sealed").exists() or not list((tmp_path / "sealed").iterdir())


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="needs Linux procfs")
def test_file_whose_size_changes_while_sealed_is_refused_and_leaves_no_files(
    world: World, tmp_path: Path
) -> None:
    # A procfs file is a regular file whose stat size (0) differs from what reading it gives.
    plain = tmp_path / "บันทึก.txt"
    write_random(plain, 100)
    sealed_dir = tmp_path / "sealed"
    with pytest.raises(InvalidField, match="unchanged while it is sealed"):
        seal(world, sealed_dir, [plain, AttachmentFile(Path("/proc/version"), "version.txt")])
    assert list(sealed_dir.iterdir()) == []


# --- memory ----------------------------------------------------------------------------------------

MEMORY_CHILD = """
import json, resource, sys
from pathlib import Path
from tests.unit.test_envelope_files import make_world, open_into, seal

def peak_bytes():
    # VmHWM, not ru_maxrss: Linux carries the spawning process's (pytest's) high-water mark
    # across exec into ru_maxrss, which would hide this child's own growth.
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))

source, work = Path(sys.argv[1]), Path(sys.argv[2])
world = make_world()
figures = {"baseline": peak_bytes()}
seal(world, work / "sealed", [source])
figures["seal"] = peak_bytes()
opened = open_into(world, work / "sealed", work / "inbox")
figures["open"] = peak_bytes()
probe = bytearray(96 << 20)
probe[::4096] = bytes(len(probe[::4096]))
figures["probe"] = peak_bytes()
figures["out"] = str(opened.paths[0])
print(json.dumps(figures))
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="reads VmHWM from Linux procfs")
def test_a_64_mib_attachment_seals_and_opens_in_bounded_memory(tmp_path: Path) -> None:
    size = 64 * MIB
    source = tmp_path / "ວິດີໂອ.mp4"
    digest = write_random(source, size)
    run = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(source), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figures = json.loads(run.stdout)
    growth_mib = {k: (figures[k] - figures["baseline"]) / MIB for k in ("seal", "open", "probe")}
    assert growth_mib["probe"] > 64, f"the measurement does not see a 96 MiB buffer: {growth_mib}"
    assert growth_mib["seal"] < 64, growth_mib
    assert growth_mib["open"] < 64, growth_mib
    assert sha256_file(Path(figures["out"])) == digest


# --- the detached digest of protocol.stream --------------------------------------------------------


def stream_material() -> tuple[bytes, bytes, bytes]:
    return os.urandom(32), os.urandom(24), os.urandom(36)


def encrypt_all(enc: PartEncryptor, data: bytes) -> list[bytes]:
    return [*enc.update(data), *enc.finalize()]


def test_detached_digest_gives_the_same_ciphertext_and_digest() -> None:
    key, header, ad = stream_material()
    data = os.urandom(2 * CHUNK_BYTES + 3)
    own = PartEncryptor(key, header, ad, len(data))
    detached = PartEncryptor(key, header, ad, len(data))
    digest = detached.detach_digest()
    chunks = encrypt_all(detached, data)
    assert chunks == encrypt_all(own, data)
    for ct in chunks:
        digest.update(ct)
    assert detached.digest is None, "the digest must not be read before it is closed"
    digest.close()
    assert detached.digest == own.digest is not None


def test_detaching_after_the_first_chunk_is_refused() -> None:
    key, header, ad = stream_material()
    enc = PartEncryptor(key, header, ad, 2 * CHUNK_BYTES)
    assert enc.update(os.urandom(CHUNK_BYTES))
    with pytest.raises(ValueError, match="before the first chunk"):
        enc.detach_digest()


@pytest.mark.parametrize("fault", ["left_open", "missing_chunk", "other_bytes"])
def test_decryptor_with_a_detached_digest_fails_closed(fault: str) -> None:
    key, header, ad = stream_material()
    data = os.urandom(CHUNK_BYTES + 10)
    enc = PartEncryptor(key, header, ad, len(data))
    chunks = encrypt_all(enc, data)
    assert enc.digest is not None
    dec = PartDecryptor(key, header, ad, padded_length(len(data)), enc.digest, len(data))
    digest = dec.detach_digest()
    for i, ct in enumerate(chunks):
        dec.update(ct)
        if fault == "other_bytes":
            digest.update(bytes(len(ct)))
        elif not (fault == "missing_chunk" and i == 0):
            digest.update(ct)
    if fault != "left_open":
        digest.close()
    with pytest.raises(DecryptionFailed):
        dec.finalize()
