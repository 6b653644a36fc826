"""What the storage layer stores and returns: plain frozen records, the same for every engine.

Invariants:
- Records hold bytes exactly as received (certificates, headers, receipts, audit leaves); the
  store never re-serialises a signed structure.
- An inbox entry moves only forward: pending -> delivered -> verified | rejected, with pending ->
  verified | rejected allowed (it implies delivery) and pending | delivered -> expired. The
  store applies a transition only from the states the caller names (`NewReceipt.from_states`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class InboxState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    VERIFIED = "verified"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def is_open(self) -> bool:
        """Still waiting for the recipient (the ciphertext must be kept)."""
        return self in (InboxState.PENDING, InboxState.DELIVERED)


OPEN_STATES = frozenset({InboxState.PENDING, InboxState.DELIVERED})


# --- directory ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredRoot:
    key_id: bytes
    country: str
    raw: bytes = field(repr=False)
    added_at: int


@dataclass(frozen=True, slots=True)
class StoredCertificate:
    key_id: bytes
    agency_id: str
    raw: bytes = field(repr=False)
    registered_at: int


@dataclass(frozen=True, slots=True)
class StoredEncryptionKey:
    key_id: bytes
    agency_id: str
    raw: bytes = field(repr=False)
    registered_at: int


@dataclass(frozen=True, slots=True)
class StoredRevocationList:
    country: str
    number: int
    raw: bytes = field(repr=False)
    registered_at: int


# --- envelopes, inboxes, receipts -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewPart:
    part_no: int
    length: int
    digest: bytes
    inline_data: bytes | None = field(default=None, repr=False)
    """The ciphertext when kept in the database; None when it is a blob file."""


@dataclass(frozen=True, slots=True)
class NewEnvelope:
    envelope_id: bytes
    envelope_hash: bytes
    sender_id: str
    sender_key_id: bytes
    header: bytes = field(repr=False)
    parts: tuple[NewPart, ...]
    recipients: tuple[str, ...]
    accepted_at: int
    expires_at: int
    leaf: bytes = field(repr=False)
    """The audit leaf recording the acceptance; its index goes into every accepted receipt."""


@dataclass(frozen=True, slots=True)
class IssuedReceipt:
    """A broker-signed receipt made inside a transaction, with the audit leaf recording it."""

    recipient_id: str
    raw: bytes = field(repr=False)
    leaf: bytes = field(repr=False)


ReceiptIssuer = Callable[[int], Sequence[IssuedReceipt]]
"""Given the acceptance leaf's audit index, sign one `accepted` receipt per recipient. Runs
inside the acceptance transaction, so it must be quick and do no I/O."""


@dataclass(frozen=True, slots=True)
class PartRecord:
    part_no: int
    length: int
    digest: bytes
    stored_inline: bool


@dataclass(frozen=True, slots=True)
class EnvelopeRecord:
    envelope_id: bytes
    envelope_hash: bytes
    sender_id: str
    sender_key_id: bytes
    header_length: int
    parts: tuple[PartRecord, ...]
    accepted_at: int
    expires_at: int
    accepted_index: int
    purged_at: int | None

    @property
    def purged(self) -> bool:
        return self.purged_at is not None


@dataclass(frozen=True, slots=True)
class InboxEntry:
    recipient_id: str
    cursor: int
    state: InboxState
    envelope: EnvelopeRecord


@dataclass(frozen=True, slots=True)
class ReceiptRecord:
    sender_id: str
    seq: int
    envelope_id: bytes
    recipient_id: str
    kind: str
    raw: bytes = field(repr=False)
    recorded_at: int
    log_index: int


@dataclass(frozen=True, slots=True)
class Acceptance:
    """The answer to an acceptance: the first one, whether this call created it or not."""

    created: bool
    envelope: EnvelopeRecord
    receipts: tuple[ReceiptRecord, ...]
    """The `accepted` receipts, one per recipient, in recipient order."""
    cursors: tuple[tuple[str, int], ...]
    """Each recipient's inbox cursor for the envelope."""


@dataclass(frozen=True, slots=True)
class NewReceipt:
    """A receipt to record, and the inbox transition it makes."""

    envelope_id: bytes
    recipient_id: str
    kind: str
    raw: bytes = field(repr=False)
    recorded_at: int
    from_states: frozenset[InboxState]
    to_state: InboxState
    leaf: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ReceiptOutcome:
    """What recording a receipt did. `previous` and `state` are the entry's state before and
    after (both None: the recipient has no entry for the envelope)."""

    recorded: ReceiptRecord | None
    duplicate: bool
    previous: InboxState | None
    state: InboxState | None


@dataclass(frozen=True, slots=True)
class StoreCounts:
    agencies: int
    certificates: int
    envelopes_stored: int
    open_inbox_entries: int
    audit_entries: int


# --- replicas sharing one database ------------------------------------------------------------


class ChangeKind(StrEnum):
    INBOX = "inbox"
    """An envelope reached `agency_id`'s inbox at cursor `position`."""
    RECEIPT = "receipt"
    """A receipt joined `agency_id`'s (the sender's) feed at seq `position`."""
    DIRECTORY = "directory"
    """A certificate, encryption key or revocation list was registered."""
    RESYNC = "resync"
    """Changes may have been missed (the connection carrying them was lost): re-read."""


@dataclass(frozen=True, slots=True)
class Change:
    """A change another process committed to the shared database: a hint, never a record."""

    kind: ChangeKind
    agency_id: str = ""
    envelope_id: bytes = b""
    position: int = 0


@dataclass(frozen=True, slots=True)
class TokenLease:
    """Rate-limit tokens taken from an agency's shared bucket; when none were granted,
    `retry_after_seconds` says when one will be there."""

    granted: int
    retry_after_seconds: int
