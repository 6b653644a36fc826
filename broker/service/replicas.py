"""Following the other replicas that share this broker's database (PostgreSQL engine).

What another replica commits reaches this one as `Change` hints (`Store.shared.changes()`):
- a new inbox entry or receipt is published to this replica's notifier, exactly as if it had
  been made here, so a recipient connected here by WebSocket or long poll hears of an envelope
  submitted elsewhere at once, and a sender hears of its receipts wherever they were posted;
- a registration (certificate, encryption key, revocation list) refreshes the in-memory
  directory, so every replica authenticates and refuses the same keys;
- `RESYNC` (hints may have been lost) refreshes the directory and wakes every long poll.
Hints are never records: a missed one only delays a client, which fetches through the
endpoints. A failed refresh is logged and tried again at the next change.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from broker.service.context import Services
from broker.service.notify import Topic
from broker.storage.records import Change, ChangeKind
from protocol.errors import CaseBridgeError

log = logging.getLogger("casebridge.broker.replicas")


async def _apply(services: Services, change: Change) -> None:
    if change.kind is ChangeKind.INBOX:
        services.notifier.publish(
            change.agency_id,
            Topic.INBOX,
            {"type": "inbox", "envelope_id": change.envelope_id.hex(), "cursor": change.position},
        )
    elif change.kind is ChangeKind.RECEIPT:
        services.notifier.publish(
            change.agency_id,
            Topic.RECEIPTS,
            {"type": "receipt", "seq": change.position, "envelope_id": change.envelope_id.hex()},
        )
    elif change.kind is ChangeKind.DIRECTORY:
        await services.directory.refresh()
    else:
        await services.directory.refresh()
        services.notifier.wake_all()


async def follow_replicas(services: Services, changes: AsyncIterator[Change]) -> None:
    """Apply other replicas' changes until cancelled. `changes` is subscribed before the call,
    so this first re-reads the directory, to cover what committed before it was."""
    try:
        await services.directory.refresh()
    except CaseBridgeError as e:
        log.error("replica_change_not_applied", extra={"kind": "start", "reason": e.reason})
    async for change in changes:
        try:
            await _apply(services, change)
        except CaseBridgeError as e:
            log.error("replica_change_not_applied", extra={"kind": str(change.kind), "reason": e.reason})
        except Exception:
            log.exception("replica_change_not_applied")
