"""Fetching envelopes from the broker's inbox into the state directory, resumably.

Layout: `inbox/<envelope id>/header`, `accepted-receipt`, and `part-N` once part N is complete
(`part-N.partial` while it is not).

Invariants:
- A part is fetched in `DOWNLOAD_CHUNK_BYTES` pieces straight to its partial file; memory never
  holds a whole part. An interrupted part resumes with `Range: bytes=<size of the partial
  file>-<end>`; a partial file longer than the part is started again, and the file is cut at
  the part's length whatever the broker sends.
- A part file is complete only when renamed from `.partial` after reaching its length; its
  digest is checked by the caller (keyless, against the signed header) before it is opened.
- Every loop is bounded: each round either makes progress or counts as a failure, and
  failures stop after `RetryPolicy.max_attempts`.
- Nothing here is trusted: the header and receipt are verified by `clients.inbox`.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.directory import b64decode
from clients.inbox_files import write_small_file
from clients.transport import BrokerTransport, retry_after_of, transient
from protocol import codec
from protocol.envelope import HEADER_LIMITS, EnvelopeHeader
from protocol.errors import CaseBridgeError, InvalidField, MalformedInput, UpstreamUnavailable

ENVELOPE_ID = re.compile(r"[0-9a-f]{32}")
ACCEPTED_RECEIPT_HEADER = "CaseBridge-Accepted-Receipt"
DOWNLOAD_CHUNK_BYTES = 1 << 20
PAGE_SIZE = 50
MAX_WAIT_SECONDS = 60


@dataclass(frozen=True, slots=True)
class InboxItem:
    """One entry of `GET /v1/inbox`, as the broker claims it (verified only once downloaded)."""

    cursor: int
    envelope_id: str
    envelope_hash: str
    sender_id: str
    accepted_at: int
    expires_at: int
    header_length: int
    part_lengths: tuple[int, ...]
    state: str

    @classmethod
    def parse(cls, value: Any) -> InboxItem:
        if not isinstance(value, dict):
            raise MalformedInput(reason="inbox item is not an object")
        lengths = value.get("part_lengths")
        if not isinstance(lengths, list):
            raise MalformedInput(reason="inbox item: part_lengths is not a list")
        return cls(
            cursor=codec.int_(value.get("cursor"), "cursor"),
            envelope_id=codec.str_(value.get("envelope_id"), "envelope_id", pattern=ENVELOPE_ID),
            envelope_hash=codec.str_(value.get("envelope_hash"), "envelope_hash", max_len=64),
            sender_id=codec.str_(value.get("sender_id"), "sender_id", max_len=70),
            accepted_at=codec.int_(value.get("accepted_at"), "accepted_at"),
            expires_at=codec.int_(value.get("expires_at"), "expires_at"),
            header_length=codec.int_(value.get("header_length"), "header_length"),
            part_lengths=tuple(codec.int_(n, "part_lengths") for n in lengths),
            state=codec.str_(value.get("state"), "state", max_len=32),
        )


@dataclass(frozen=True, slots=True)
class DownloadProgress:
    envelope_id: str
    complete: bool
    fetched_bytes: int
    total_bytes: int


def check_envelope_id(text: str) -> str:
    """An envelope id as the API and the file names write it: 32 lowercase hex digits."""
    if not isinstance(text, str) or not ENVELOPE_ID.fullmatch(text):
        raise InvalidField("envelope_id", "32 lowercase hex digits, as `casebridge send` prints them")
    return text


def part_path(directory: Path, part_no: int) -> Path:
    return directory / f"part-{part_no}"


def check_part(path: Path, header: EnvelopeHeader, part_no: int) -> bool:
    """Whether a downloaded part has the length and digest the signed header gives (keyless)."""
    verifier = header.part_verifier(part_no)
    try:
        with path.open("rb") as f:
            while chunk := f.read(DOWNLOAD_CHUNK_BYTES):
                verifier.update(chunk)
        verifier.finish()
    except MalformedInput:
        return False
    return True


class EnvelopeDownloader:
    """Lists the inbox and fetches envelopes into `root/<envelope id>/`."""

    def __init__(self, transport: BrokerTransport, root: Path) -> None:
        self._transport = transport
        self.root = root

    def directory(self, envelope_id: str) -> Path:
        return self.root / check_envelope_id(envelope_id)

    async def list_inbox(
        self, *, after: int = 0, limit: int = PAGE_SIZE, wait: int = 0
    ) -> tuple[list[InboxItem], int]:
        wait = max(0, min(wait, MAX_WAIT_SECONDS))
        query: dict[str, str | int] = {"after": after, "limit": limit}
        if wait:
            query["wait"] = wait
        answer = (
            await self._transport.request("GET", "/v1/inbox", query=query, read_timeout_seconds=wait + 30.0)
        ).json()
        if not isinstance(answer, dict) or not isinstance(answer.get("items"), list):
            raise MalformedInput(reason="inbox answer is not {items, next}")
        items = [InboxItem.parse(v) for v in answer["items"]]
        next_cursor = answer.get("next")
        return items, codec.int_(after if next_cursor is None else next_cursor, "next")

    async def header(self, envelope_id: str) -> tuple[bytes, bytes | None]:
        """The header bytes and the accepted receipt (None if the broker sent none), from disk
        or from the broker."""
        directory = self.directory(envelope_id)
        header_path, receipt_path = directory / "header", directory / "accepted-receipt"
        if header_path.exists() and receipt_path.exists():
            return header_path.read_bytes(), receipt_path.read_bytes()
        resp = await self._transport.request("GET", f"/v1/inbox/{envelope_id}/header")
        if len(resp.body) > HEADER_LIMITS.max_bytes:
            raise MalformedInput(reason="header larger than the limit")
        receipt_b64 = resp.headers.get(ACCEPTED_RECEIPT_HEADER)
        if receipt_b64 is None:
            return resp.body, None
        receipt = b64decode(receipt_b64, ACCEPTED_RECEIPT_HEADER)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        await asyncio.to_thread(write_small_file, receipt_path, receipt)
        await asyncio.to_thread(write_small_file, header_path, resp.body)
        return resp.body, receipt

    async def download(self, envelope_id: str, *, max_bytes: int | None = None) -> DownloadProgress:
        """Fetch an envelope's header and parts, resuming partial parts with Range requests.
        With `max_bytes`, stop after about that many part bytes (a metered link, say); call
        again to continue where it stopped."""
        header_bytes, _ = await self.header(envelope_id)
        header = EnvelopeHeader.parse(header_bytes)
        directory = self.directory(envelope_id)
        fetched = 0
        for part in header.parts:
            budget = None if max_bytes is None else max_bytes - fetched
            if budget is not None and budget <= 0:
                break
            fetched += await self._part(envelope_id, part.part_no, part.ciphertext_length, budget)
        complete = all(part_path(directory, p.part_no).exists() for p in header.parts)
        return DownloadProgress(envelope_id, complete, fetched, header.total_ciphertext_length)

    async def _part(self, envelope_id: str, part_no: int, length: int, budget: int | None) -> int:
        final = part_path(self.directory(envelope_id), part_no)
        if final.exists():
            return 0
        partial = final.with_name(f"{final.name}.partial")
        fetched, failures = 0, 0
        while True:
            offset = partial.stat().st_size if partial.exists() else 0
            if offset > length:
                partial.unlink()
                offset = 0
            if offset == length:
                break
            if budget is not None and fetched >= budget:
                return fetched
            try:
                got = await self._fetch(envelope_id, part_no, partial, offset, length, budget, fetched)
                if got == 0:
                    raise UpstreamUnavailable(reason=f"part {part_no}: the broker sent no bytes")
                fetched += got
                failures = 0
            except CaseBridgeError as e:
                failures += 1
                if not transient(e) or failures >= self._transport.retry.max_attempts:
                    raise
                await self._transport.pause(failures - 1, retry_after_of(e))
        os.replace(partial, final)
        return fetched

    async def _fetch(
        self,
        envelope_id: str,
        part_no: int,
        partial: Path,
        offset: int,
        length: int,
        budget: int | None,
        already: int,
    ) -> int:
        """One request for the rest of a part, written from `offset`; returns the bytes kept."""
        headers = {"Range": f"bytes={offset}-{length - 1}"} if offset else {}
        got = 0
        async with self._transport.stream(
            f"/v1/inbox/{envelope_id}/parts/{part_no}", headers=headers
        ) as resp:
            if resp.status != 206:
                offset = 0  # A whole part (no Range asked, or the broker ignored it).
            elif not resp.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                raise MalformedInput(reason="Content-Range does not start where the file stops")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "r+b") as sink:
                sink.truncate(offset)
                sink.seek(offset)
                try:
                    async for chunk in resp.content.iter_chunked(DOWNLOAD_CHUNK_BYTES):
                        keep = chunk[: length - offset - got]
                        sink.write(keep)
                        got += len(keep)
                        if offset + got >= length or (budget is not None and already + got >= budget):
                            break
                finally:
                    sink.flush()
                    os.fsync(sink.fileno())
        return got
