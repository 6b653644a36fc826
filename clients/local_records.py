"""What the client keeps in its local state, as plain records (stored by `clients.outbox`).

Ids and hashes are lowercase hex; times are Unix seconds; paths point into the state directory.
A received entry's attachments are `ReceivedFile`s, sealed at rest (`clients.received_files`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from clients.received_files import ReceivedFile


class OutboxState(StrEnum):
    PENDING = "pending"
    ACCEPTED = "accepted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One sealed envelope and how far it got. Ids and hashes are lowercase hex."""

    envelope_id: str
    envelope_hash: str
    recipients: tuple[str, ...]
    directory: Path
    content_digest: str
    total_length: int
    created_at: int
    state: OutboxState
    attempts: int = 0
    last_error: str | None = None
    problem: dict[str, Any] | None = None
    accepted_at: int | None = None


@dataclass(frozen=True, slots=True)
class ReceivedEntry:
    """An envelope opened and verified here, waiting for the application's acknowledgement
    (stored sealed: `clients.received_rows`)."""

    envelope_id: str
    envelope_hash: str
    sender_id: str
    sender_name: str
    content_type: str
    body: bytes
    attachments: tuple[ReceivedFile, ...]
    directory: Path
    accepted_at: int
    received_at: int


@dataclass(frozen=True, slots=True)
class StoredReceipt:
    envelope_id: str
    recipient_id: str
    kind: str
    time: int
    raw: bytes


@dataclass(frozen=True, slots=True)
class CachedDirectory:
    certificates: tuple[bytes, ...]
    encryption_keys: tuple[bytes, ...]
    revocation_lists: tuple[bytes, ...]
