"""Part ciphertext in PostgreSQL, in chunks of `CHUNK_BYTES`, shared by every replica.

Invariants:
- A part is written under a fresh upload id, chunk by chunk as it streams in (memory holds at
  most one chunk), with relaxed commits; `commit` links (envelope hash, part number) to the
  upload in one durable transaction, whose commit also makes every chunk before it durable.
  Until then the part is absent, so a crash leaves the old state or the new, never half a part.
- Parts are named by envelope hash, which fixes every byte (the header carries the digests):
  two uploads of one name hold the same bytes, and the second to commit is dropped.
- Reads are ranged: only the chunks overlapping the range are fetched, and of the first and
  last only the bytes in range. No connection is held while the reader waits for its consumer.
- Orphans: an upload never committed (a crash or a lost connection mid-upload) is removed by
  the next broker to open the store after `ORPHAN_GRACE_SECONDS`; and `stored_hashes` leaves
  out parts committed more recently than that, because another replica may be about to accept
  the envelope they belong to (the broker's start-up sweep removes parts no envelope names).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

from broker.storage.postgresql.database import Database
from protocol.errors import StorageUnavailable

CHUNK_BYTES = 1 << 20
ORPHAN_GRACE_SECONDS = 3600


class PostgresBlobWriter:
    def __init__(self, db: Database, envelope_hash: bytes, part_no: int) -> None:
        self._db = db
        self._envelope_hash = envelope_hash
        self._part_no = part_no
        self._upload_id = secrets.token_bytes(16)
        self._buffer = bytearray()
        self._chunks = 0
        self._length = 0
        self._started = False

    async def _start(self) -> None:
        if not self._started:
            async with self._db.connection(relaxed=True) as conn:
                await conn.execute(
                    "INSERT INTO blob_uploads (upload_id, started_at) "
                    "VALUES ($1, extract(epoch FROM clock_timestamp())::bigint)",
                    self._upload_id,
                )
            self._started = True

    async def _store_chunk(self, data: bytes) -> None:
        async with self._db.connection(relaxed=True) as conn:
            await conn.execute(
                "INSERT INTO blob_chunks (upload_id, chunk_no, data) VALUES ($1, $2, $3)",
                self._upload_id,
                self._chunks,
                data,
            )
        self._chunks += 1

    async def write(self, data: bytes) -> None:
        await self._start()
        self._buffer += data
        self._length += len(data)
        while len(self._buffer) >= CHUNK_BYTES:
            chunk = bytes(self._buffer[:CHUNK_BYTES])
            del self._buffer[:CHUNK_BYTES]
            await self._store_chunk(chunk)

    async def commit(self) -> None:
        await self._start()
        if self._buffer:
            await self._store_chunk(bytes(self._buffer))
            self._buffer.clear()
        async with self._db.transaction() as conn:
            linked = await conn.fetchval(
                "INSERT INTO blobs (envelope_hash, part_no, upload_id, length, chunk_bytes, committed_at) "
                "VALUES ($1, $2, $3, $4, $5, extract(epoch FROM clock_timestamp())::bigint) "
                "ON CONFLICT (envelope_hash, part_no) DO NOTHING RETURNING 1",
                self._envelope_hash,
                self._part_no,
                self._upload_id,
                self._length,
                CHUNK_BYTES,
            )
            if linked is None:
                await conn.execute("DELETE FROM blob_uploads WHERE upload_id = $1", self._upload_id)

    async def abort(self) -> None:
        self._buffer.clear()
        if self._started:
            async with self._db.connection(relaxed=True) as conn:
                await conn.execute(
                    "DELETE FROM blob_uploads u WHERE upload_id = $1 "
                    "AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.upload_id = u.upload_id)",
                    self._upload_id,
                )


class PostgresBlobStore:
    def __init__(self, db: Database, *, orphan_grace_seconds: int = ORPHAN_GRACE_SECONDS) -> None:
        self._db = db
        self._grace = orphan_grace_seconds

    async def remove_abandoned_uploads(self) -> int:
        """Remove uploads never committed and older than the grace period; how many."""
        async with self._db.connection() as conn:
            count = await conn.fetchval(
                "WITH gone AS (DELETE FROM blob_uploads u "
                "WHERE u.started_at < extract(epoch FROM clock_timestamp())::bigint - $1 "
                "AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.upload_id = u.upload_id) RETURNING 1) "
                "SELECT COUNT(*) FROM gone",
                self._grace,
            )
        return int(count)

    def writer(self, envelope_hash: bytes, part_no: int) -> PostgresBlobWriter:
        return PostgresBlobWriter(self._db, envelope_hash, part_no)

    async def size(self, envelope_hash: bytes, part_no: int) -> int | None:
        async with self._db.connection() as conn:
            length = await conn.fetchval(
                "SELECT length FROM blobs WHERE envelope_hash = $1 AND part_no = $2", envelope_hash, part_no
            )
        return None if length is None else int(length)

    async def read(self, envelope_hash: bytes, part_no: int, start: int, end: int) -> AsyncIterator[bytes]:
        async with self._db.connection() as conn:
            found = await conn.fetchrow(
                "SELECT upload_id, length, chunk_bytes FROM blobs WHERE envelope_hash = $1 AND part_no = $2",
                envelope_hash,
                part_no,
            )
        if found is None:
            raise StorageUnavailable(reason=f"blob part {part_no} is not stored")
        upload_id, length, chunk_bytes = bytes(found[0]), int(found[1]), int(found[2])
        if not 0 <= start <= end <= length:
            raise StorageUnavailable(reason=f"blob range {start}-{end} outside {length} bytes")
        at = start
        while at < end:
            chunk_no, offset = divmod(at, chunk_bytes)
            take = min(chunk_bytes - offset, end - at)
            async with self._db.connection() as conn:
                data = await conn.fetchval(
                    "SELECT substring(data FROM $3 FOR $4) FROM blob_chunks "
                    "WHERE upload_id = $1 AND chunk_no = $2",
                    upload_id,
                    chunk_no,
                    offset + 1,
                    take,
                )
            if data is None or len(data) != take:
                raise StorageUnavailable(reason=f"blob chunk {chunk_no} shorter than recorded")
            at += take
            yield bytes(data)

    async def delete(self, envelope_hash: bytes) -> None:
        async with self._db.transaction() as conn:
            uploads = await conn.fetch(
                "DELETE FROM blobs WHERE envelope_hash = $1 RETURNING upload_id", envelope_hash
            )
            await conn.execute(
                "DELETE FROM blob_uploads WHERE upload_id = ANY($1::bytea[])", [bytes(r[0]) for r in uploads]
            )

    async def stored_hashes(self) -> set[bytes]:
        async with self._db.connection() as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT envelope_hash FROM blobs "
                "WHERE committed_at <= extract(epoch FROM clock_timestamp())::bigint - $1",
                self._grace,
            )
        return {bytes(r[0]) for r in rows}
