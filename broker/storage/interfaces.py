"""The storage interfaces the broker's services use: one small async Protocol per domain.

Every engine (SQLite, PostgreSQL) implements all of them and passes the same contract
suite (tests/integration/test_storage_contract.py). Engine-specific SQL lives only inside an
engine's package.

Invariants every implementation keeps:
- A method that changes state changes it in one transaction, together with the audit entries
  recording the change (the leaves passed in); if an audit append fails, nothing is changed.
- A method returns only after its transaction is durable (committed with a sync to disk),
  except `NonceStore.remember`, which may lose the entries of the last moments before a crash
  (requests are idempotent, so that costs at most a repeated answer).
- Refusals are `CaseBridgeError`s (`Conflict` for a used id with other bytes); engine errors are
  `StorageUnavailable`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from broker.storage.records import (
    Acceptance,
    Change,
    EnvelopeRecord,
    InboxEntry,
    NewEnvelope,
    NewReceipt,
    ReceiptIssuer,
    ReceiptOutcome,
    ReceiptRecord,
    StoreCounts,
    StoredCertificate,
    StoredEncryptionKey,
    StoredRevocationList,
    StoredRoot,
    TokenLease,
)


class DirectoryStore(Protocol):
    """Pinned roots, agency certificates, encryption-key statements and revocation lists."""

    async def roots(self) -> list[StoredRoot]: ...

    async def add_root(self, root: StoredRoot, leaf: bytes) -> bool:
        """Record a configured root; False (and no audit entry) if it is already recorded."""
        ...

    async def certificates(self) -> list[StoredCertificate]: ...

    async def add_certificate(self, cert: StoredCertificate, leaf: bytes) -> bool:
        """True if stored now, False if these exact bytes were already; `Conflict` if the key id
        is registered with other bytes."""
        ...

    async def encryption_keys(self) -> list[StoredEncryptionKey]: ...

    async def add_encryption_key(self, key: StoredEncryptionKey, leaf: bytes) -> bool:
        """As `add_certificate`, keyed by the encryption key's id."""
        ...

    async def revocation_lists(self) -> list[StoredRevocationList]:
        """The newest list of each country."""
        ...

    async def add_revocation_list(self, crl: StoredRevocationList, leaf: bytes) -> bool:
        """True if stored now, False if these exact bytes are the country's newest already;
        `Conflict` if the number is not above the newest held."""
        ...


class DeliveryStore(Protocol):
    """Envelopes, their parts (metadata and small ciphertexts), inboxes and receipts."""

    async def accept_envelope(self, new: NewEnvelope, issue: ReceiptIssuer) -> Acceptance:
        """Store an envelope, its inbox entries, the acceptance leaf, and the `accepted` receipts
        `issue` signs (each queued to the sender's feed with its own leaf), in one transaction.
        The same id with the same hash returns the first acceptance (`created` False); the same
        id with another hash raises `Conflict`."""
        ...

    async def acceptance(self, envelope_id: bytes) -> Acceptance | None:
        """The stored acceptance of an envelope (as `accept_envelope` first returned it)."""
        ...

    async def envelope(self, envelope_id: bytes) -> EnvelopeRecord | None: ...

    async def header(self, envelope_id: bytes) -> bytes | None:
        """The header bytes, None if unknown or purged."""
        ...

    async def inline_part(self, envelope_id: bytes, part_no: int) -> bytes | None:
        """A part's ciphertext kept in the database, None if it is not inline or was purged."""
        ...

    async def inbox_entry(self, envelope_id: bytes, recipient_id: str) -> InboxEntry | None: ...

    async def inbox_entries(self, envelope_id: bytes) -> list[InboxEntry]: ...

    async def inbox(self, recipient_id: str, after: int, limit: int) -> list[InboxEntry]:
        """Open (pending or delivered) entries with a cursor above `after`, oldest first."""
        ...

    async def record_receipt(self, receipt: NewReceipt) -> ReceiptOutcome:
        """Apply `from_states -> to_state` to the inbox entry and, if applied, queue the receipt to
        the sender's feed and append its leaf. The same receipt bytes again: `duplicate`."""
        ...

    async def receipts_for(self, envelope_id: bytes) -> list[ReceiptRecord]: ...

    async def sender_feed(self, sender_id: str, after: int, limit: int) -> list[ReceiptRecord]: ...

    async def expiring(self, now: int, limit: int) -> list[InboxEntry]:
        """Open entries of envelopes whose expiry time is at or before `now`."""
        ...

    async def purgeable(self, limit: int) -> list[EnvelopeRecord]:
        """Unpurged envelopes with no open inbox entry left."""
        ...

    async def mark_purged(self, envelope_id: bytes, now: int, leaf: bytes) -> bool:
        """Drop the header and inline ciphertext and mark the envelope purged; False if it was
        already purged or still has open entries (nothing changes then)."""
        ...

    async def stored_hashes(self) -> set[bytes]:
        """Hashes of envelopes whose ciphertext is still kept (for sweeping orphan blobs)."""
        ...

    async def counts(self) -> StoreCounts: ...


class NonceStore(Protocol):
    """Request nonces seen within the replay window."""

    async def remember(self, key_id: bytes, nonce: bytes, expires_at: int, now: int) -> bool:
        """True if `(key_id, nonce)` is new (or its earlier use expired): it is now remembered
        until `expires_at`. False if it was seen within its window."""
        ...

    async def forget_expired(self, now: int) -> int: ...


class BlobWriter(Protocol):
    """One part's ciphertext being written: to a temporary file until `commit`."""

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> None:
        """Sync the file and move it into place; a crash leaves the old state or the new."""
        ...

    async def abort(self) -> None: ...


class BlobStore(Protocol):
    """Part ciphertext too large for the database, addressed by (envelope hash, part number)."""

    def writer(self, envelope_hash: bytes, part_no: int) -> BlobWriter: ...

    async def size(self, envelope_hash: bytes, part_no: int) -> int | None: ...

    def read(self, envelope_hash: bytes, part_no: int, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes `start` up to (excluding) `end`, in bounded chunks."""
        ...

    async def delete(self, envelope_hash: bytes) -> None:
        """Delete every part of an envelope; deleting what is not there is no error."""
        ...

    async def stored_hashes(self) -> set[bytes]: ...


class AuditLog(Protocol):
    """The append-only audit log (read side, and entries that record no other change)."""

    async def record(self, leaf: bytes, now: int) -> int:
        """Append one entry in its own transaction (broker start and stop, say); its index."""
        ...

    async def size(self) -> int: ...

    async def leaves(self, start: int, end: int) -> list[bytes]: ...


class Leadership(Protocol):
    """This process's claim to run one periodic task (one name in every replica) alone."""

    async def leads(self) -> bool:
        """Whether this process may run a round of the task now; never raises (an error is no
        leadership). A leader first confirms its hold on the database, and a lost or failing
        connection ends it at once (False). A follower tries to take the lead, asking the
        database at most every few seconds (False without asking in between). At most one
        process holds a task's lead; a round begun just before its leader's connection was lost
        may still overlap the next leader's first round, so every task stays safe to run twice."""
        ...


class SharedState(Protocol):
    """What the replicas of one broker coordinate through when they share one database. An
    engine that one process owns (SQLite) has none: its in-process state is the whole truth,
    and its one process leads every periodic task."""

    def changes(self) -> AsyncIterator[Change]:
        """A subscription to the changes other processes commit from this call on, in commit
        order, as hints (a lost connection shows as one `RESYNC`). One per consumer."""
        ...

    async def exchange_tokens(
        self, agency_id: str, returned: int, wanted: int, per_minute: int, burst: int
    ) -> TokenLease:
        """Put back `returned` unused tokens and take up to `wanted` from the agency's bucket,
        which holds at most `burst` and refills at `per_minute` (by the database's clock)."""
        ...

    def leadership(self, task: str) -> AbstractAsyncContextManager[Leadership]:
        """A claim to lead `task` among the replicas, open while the context is: leading
        processes release the lead when it closes, and the database releases it when the process
        dies or its connection drops, so another replica takes over at its next try."""
        ...


class Store(Protocol):
    """One storage engine: the domain stores over one database (and its blob directory)."""

    @property
    def directory(self) -> DirectoryStore: ...

    @property
    def delivery(self) -> DeliveryStore: ...

    @property
    def nonces(self) -> NonceStore: ...

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def audit(self) -> AuditLog: ...

    @property
    def shared(self) -> SharedState | None:
        """The coordination between replicas, None when one process owns the database."""
        ...

    async def check_ready(self) -> None:
        """Raise `StorageUnavailable` unless the database answers and its schema is current."""
        ...

    async def close(self) -> None: ...
