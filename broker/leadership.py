"""Which replica runs each periodic task (the checkpointer, retention): one at a time.

`leading(task, shared, gauge)` holds this replica's claim on `task` while the task runs and
yields a `TaskLeader`. The task's loop asks `leads()` before every round and runs the round only
when it is True; a follower waits and asks again (the engine decides how often the database is
asked, `SharedState.leadership`). With no `SharedState` (SQLite: one process owns the store)
the process always leads.

Gaining and losing the lead are logged (`leadership_gained`, `leadership_lost`, and
`leadership_released` when a leader stops) and shown by `casebridge_leader{task}`, 1 while this
replica leads the task, 0 otherwise (from the moment the claim opens).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import Gauge

from broker.storage.interfaces import Leadership, SharedState

CHECKPOINTER = "checkpointer"
RETENTION = "retention"
TASKS = (CHECKPOINTER, RETENTION)
FOLLOWER_POLL_SECONDS = 1.0

log = logging.getLogger("casebridge.broker.leadership")


class TaskLeader:
    """One task's leadership as its loop sees it; `claim` None means it always leads."""

    def __init__(self, task: str, claim: Leadership | None, gauge: Gauge | None = None) -> None:
        self.task = task
        self.leading = False
        self._claim = claim
        self._gauge = None if gauge is None else gauge.labels(task=task)
        self._show(False)

    async def leads(self) -> bool:
        """Whether to run a round now (see `Leadership.leads`); a change is logged and shown."""
        now = True if self._claim is None else await self._claim.leads()
        if now != self.leading:
            self.leading = now
            self._show(now)
            if now:
                log.info("leadership_gained", extra={"task": self.task})
            else:
                log.warning("leadership_lost", extra={"task": self.task})
        return now

    async def wait_to_lead(self, seconds: float) -> bool:
        """Wait up to `seconds`, asking every `FOLLOWER_POLL_SECONDS`; True as soon as it leads."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            await asyncio.sleep(min(left, FOLLOWER_POLL_SECONDS))
            if await self.leads():
                return True
        return False

    def release(self) -> None:
        if self.leading:
            log.info("leadership_released", extra={"task": self.task})
        self.leading = False
        self._show(False)

    def _show(self, leading: bool) -> None:
        if self._gauge is not None:
            self._gauge.set(1 if leading else 0)


@contextlib.asynccontextmanager
async def leading(
    task: str, shared: SharedState | None, gauge: Gauge | None = None
) -> AsyncIterator[TaskLeader]:
    """This replica's claim on `task` while the block runs (released when it ends)."""
    async with contextlib.AsyncExitStack() as stack:
        claim = None if shared is None else await stack.enter_async_context(shared.leadership(task))
        leader = TaskLeader(task, claim, gauge)
        try:
            yield leader
        finally:
            leader.release()
