"""The check a broker runs on its own audit log before it serves anything.

Invariants:
- The sequencer is loaded from the stored border nodes (log2(size) hashes), not by rehashing the
  log; what the check rehashes is bounded (`TAIL_LEAVES` plus the leaves no checkpoint covers).
- The broker refuses to start (`AuditLogDamaged`, a clear message) unless all of these hold:
  the latest stored checkpoint is signed by this broker's checkpoint key under the configured
  origin and agrees with its own row; the log holds at least as many leaves as it covers; the
  tree stored for that size has the checkpoint's root; every leaf from `TAIL_LEAVES` before the
  checkpoint to the end still hashes to its stored leaf hash; and those leaf hashes, folded onto
  the stored border of the tree before them, give the root of the whole stored tree.
- A log with no checkpoint yet (a new broker, or one upgraded from schema 1) is checked the same
  way over its last `TAIL_LEAVES` leaves.
"""

from __future__ import annotations

import logging

from broker.audit.records import AuditLogDamaged, TreeHead
from broker.audit.store import AuditStore
from protocol.errors import VerificationError
from protocol.merkle import CompactRange, border_nodes, leaf_hash
from protocol.note import VerifierKey, open_checkpoint

TAIL_LEAVES = 256
CHECK_BATCH = 4096

log = logging.getLogger("casebridge.broker.audit")


async def _check_tail(audit: AuditStore, start: int, head: TreeHead) -> None:
    """Leaves [start, head.size) match their stored hashes and, on the stored border at
    `start`, fold into the stored root."""
    tree = CompactRange.from_border(start, await audit.node_hashes(border_nodes(start)))
    for at in range(start, head.size, CHECK_BATCH):
        leaves = await audit.checked_leaves(at, min(at + CHECK_BATCH, head.size))
        tree.extend(leaf_hash(leaf) for leaf in leaves)
    if tree.root() != head.root_hash:
        raise AuditLogDamaged(
            reason=f"the stored tree nodes of leaves {start}..{head.size} do not match the leaves"
        )


async def verify_stored_log(audit: AuditStore, *, origin: str, log_key: VerifierKey) -> TreeHead:
    """Load the sequencer and check the stored log against its latest checkpoint (see module);
    `AuditLogDamaged` saying what disagrees if the check fails."""
    try:
        return await _verify(audit, origin, log_key)
    except AuditLogDamaged as e:
        if e.detail != AuditLogDamaged.remedy:
            raise
        raise AuditLogDamaged(
            f"the audit log failed its start check: {e.reason}. {AuditLogDamaged.remedy}", reason=e.reason
        ) from e


async def _verify(audit: AuditStore, origin: str, log_key: VerifierKey) -> TreeHead:
    head = await audit.open_tree()
    latest = await audit.latest_checkpoint()
    if latest is None:
        await _check_tail(audit, max(0, head.size - TAIL_LEAVES), head)
        log.info("audit_log_checked", extra={"size": head.size, "checkpoint_size": None})
        return head
    try:
        signed = open_checkpoint(latest.note, origin=origin, log_key=log_key)
    except VerificationError as e:
        raise AuditLogDamaged(
            f"the last audit checkpoint ({latest.size} entries) does not verify under origin "
            f"{origin} and this broker's checkpoint key ({e.reason}). If log_origin or the keystore "
            "was changed, restore the ones that signed this log; otherwise the log was tampered "
            "with: keep the data directory for investigation and restore the last good backup.",
            reason=f"checkpoint {latest.seq}: {e.reason}",
        ) from e
    checkpoint = signed.checkpoint
    if (checkpoint.size, checkpoint.root_hash) != (latest.size, latest.root_hash):
        raise AuditLogDamaged(reason=f"checkpoint {latest.seq}: its note and its row disagree")
    if head.size < checkpoint.size:
        raise AuditLogDamaged(
            reason=f"the log holds {head.size} entries but its last checkpoint covers {checkpoint.size}"
        )
    if (await audit.tree_head(checkpoint.size)).root_hash != checkpoint.root_hash:
        raise AuditLogDamaged(reason=f"the stored tree of size {checkpoint.size} is not the checkpoint's")
    await _check_tail(audit, max(0, checkpoint.size - TAIL_LEAVES), head)
    log.info("audit_log_checked", extra={"size": head.size, "checkpoint_size": checkpoint.size})
    return head
