"""Group commit for every change the audit log records, with one sequencer across replicas.

Each replica has one `SequencedWriter`. A change that appends audit leaves (an acceptance, a
receipt, a purge, a registration, a start or stop entry) is handed to it. Changes handed in
while a transaction is in flight go together into the next one:

    BEGIN; SELECT pg_advisory_xact_lock(AUDIT_LOCK_ID)  the sequencer, shared by every replica
    the stored tree size and border nodes               one statement (`AuditAppender`)
    every acceptance of the batch                       one pipelined round trip
    every receipt of the batch                          one pipelined round trip
    the other changes, one after the other              their own statements (rare ones)
    the leaves, tree nodes, envelope index entries      one statement for the whole batch
      and change notifications
    COMMIT                                              one synchronous commit for the batch

Why: the sequencer lock is held from the moment it is granted until the commit is on disk, so
whatever runs inside it is serialised across every replica. Measured (docs/performance.md,
PostgreSQL), the holder spent its time not in the commit's disk flush but waiting for the
broker's event loop between its dozen or so statements, while every other writer sat on the
lock holding a pooled connection. A batch pays the lock, the tree's border, the audit rows and
the commit once, and a fixed number of round trips whatever its size; one connection per
replica waits on the lock.

A `Statement` is a change made by one statement that checks and writes at once: `bind` appends
its leaves before anyone knows whether it applies (an accepted receipt carries its own index)
and gives the arguments; `settle` reads the statement's rows. The statements of one kind in a
batch are sent together (`fetchmany`: one round trip, each execution still its own statement
that sees the ones before it). A change that did not apply takes its leaves back, which only
the tail can do: if a later change of the same round trip had appended too, the batch is rolled
back and run again one statement at a time.

Invariants:
- Changes commit in batches in which statements of the same kind keep the order they were
  handed in; acceptances run before receipts (a receipt is only ever made for an envelope whose
  acceptance committed, so none depends on an acceptance in its own batch), and other changes
  after both. The log records them in that order, which is one order they could have run in.
- A change's leaves, nodes and notifications commit with its other writes or not at all. A
  change that raises rolls its whole batch back: it alone gets the error, and the others run
  again in a new transaction. A failure of the batch itself (connection, lock, flush, commit)
  fails every change in it with `StorageUnavailable`.
- A result reaches its caller only after the batch committed with `synchronous_commit = on`.
  A caller that stops waiting (cancelled) does not take its change back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import asyncpg

from broker.storage.postgresql.audit_appender import AuditAppender
from broker.storage.postgresql.database import DRIVER_ERRORS, Connection, Database, unavailable
from protocol.errors import CaseBridgeError

T = TypeVar("T")

MAX_BATCH = 256

log = logging.getLogger("casebridge.broker.storage")

Job = Callable[[Connection, AuditAppender], Awaitable[T]]
"""A change made by its own statements on the connection, its leaves and notifications through
the appender (for the rare changes). It may raise to refuse; only its caller sees the error."""


@dataclass(frozen=True, slots=True)
class Statement(Generic[T]):
    """A change made by one statement (see the module docstring). The writer passes the
    change's position in the batch as `$1`; every row the statement returns starts with it."""

    sql: str
    order: int
    """Rounds run by ascending order (acceptances 0, receipts 1), each kind in one round."""
    bind: Callable[[AuditAppender], Sequence[object]]
    """Append the change's leaves; the arguments `$2`, `$3`, ... of the statement."""
    settle: Callable[[Sequence[asyncpg.Record], Connection, AuditAppender], Awaitable[tuple[T, bool]]]
    """From the statement's rows: the caller's result, and whether the change applied (its
    leaves stay) or not (the writer takes them back). It may announce changes if it applied,
    and may raise to refuse."""


@dataclass(slots=True)
class _Pending:
    change: Job[Any] | Statement[Any]
    future: asyncio.Future[Any] = field(repr=False)


class _ChangeFailed(Exception):
    def __init__(self, position: int, error: Exception) -> None:
        super().__init__(position)
        self.position = position
        self.error = error


class _OneAtATime(Exception):
    """A round trip's outcome cannot be kept as it is: run the batch one statement at a time."""


def _settle(future: asyncio.Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


def _for_caller(error: Exception) -> Exception:
    if isinstance(error, DRIVER_ERRORS) and not isinstance(error, CaseBridgeError):
        return unavailable("query", error)
    return error


async def _roll_back(conn: Connection) -> None:
    """End a failed batch's transaction. A connection that cannot even do that (broken, or left
    mid-protocol by a failed pipelined round trip) is closed, so its pool makes a new one
    instead of handing it out again."""
    if conn.is_closed() or not conn.is_in_transaction():
        return
    try:
        await conn.execute("ROLLBACK")
    except DRIVER_ERRORS:
        conn.terminate()


def _rounds(batch: Sequence[_Pending], one_at_a_time: bool) -> list[list[int]]:
    """Positions of the statements sent together: one SQL each, in the order handed in, rounds
    by the statements' `order`."""
    kinds: dict[str, list[int]] = {}
    order: dict[str, int] = {}
    for position, pending in enumerate(batch):
        if isinstance(pending.change, Statement):
            kinds.setdefault(pending.change.sql, []).append(position)
            order[pending.change.sql] = pending.change.order
    rounds = [kinds[sql] for sql in sorted(kinds, key=lambda sql: order[sql])]
    if one_at_a_time:
        return [[position] for positions in rounds for position in positions]
    return rounds


class SequencedWriter:
    """This replica's writer of audited changes (see the module invariants)."""

    def __init__(self, db: Database, origin: str) -> None:
        self._db = db
        self._origin = origin
        self._waiting: list[_Pending] = []
        self._task: asyncio.Task[None] | None = None

    async def run(self, change: Job[T] | Statement[T]) -> T:
        """Make `change` in the next batch; its result once that batch committed."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(change, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="casebridge-audit-writer")
        return await future

    async def _drain(self) -> None:
        batch: list[_Pending] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                await self._commit(batch)
        except BaseException:
            # Cancelled (the loop is shutting down): nobody will make these changes any more.
            for pending in batch + self._waiting:
                pending.future.cancel()
            self._waiting = []
            raise

    async def _commit(self, batch: list[_Pending]) -> None:
        one_at_a_time = False
        while batch:
            try:
                results = await self._transaction(batch, one_at_a_time)
            except _OneAtATime:
                one_at_a_time = True
                continue
            except _ChangeFailed as failed:
                _settle(batch[failed.position].future, error=_for_caller(failed.error))
                batch = batch[: failed.position] + batch[failed.position + 1 :]
                continue
            except Exception as e:
                if not isinstance(e, CaseBridgeError):
                    log.error(
                        "audited_batch_failed", extra={"error": type(e).__name__, "changes": len(batch)}
                    )
                for pending in batch:
                    _settle(pending.future, error=e)
                return
            for pending, result in zip(batch, results, strict=True):
                _settle(pending.future, result=result)
            return

    async def _transaction(self, batch: Sequence[_Pending], one_at_a_time: bool) -> list[Any]:
        results: list[Any] = [None] * len(batch)
        async with self._db.connection() as conn:
            try:
                appender = await AuditAppender.locked(conn)
                for positions in _rounds(batch, one_at_a_time):
                    await _round(conn, appender, batch, positions, results)
                for position, pending in enumerate(batch):
                    if not isinstance(pending.change, Statement):
                        try:
                            results[position] = await pending.change(conn, appender)
                        except Exception as e:
                            raise _ChangeFailed(position, e) from e
                await appender.flush(conn, self._origin)
                await conn.execute("COMMIT")
            except BaseException:
                await _roll_back(conn)
                raise
        return results

    async def close(self) -> None:
        """Wait for the changes handed in so far."""
        if self._task is not None and not self._task.done():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task


async def _round(
    conn: Connection,
    appender: AuditAppender,
    batch: Sequence[_Pending],
    positions: list[int],
    results: list[Any],
) -> None:
    """Send the statements at `positions` (one SQL) in one round trip and settle each."""
    statements: list[Statement[Any]] = []
    marks = []
    arguments = []
    for position in positions:
        statement = batch[position].change
        if not isinstance(statement, Statement):
            raise AssertionError("a round holds statements only")
        statements.append(statement)
        marks.append(appender.mark())
        try:
            arguments.append((position, *statement.bind(appender)))
        except Exception as e:
            raise _ChangeFailed(position, e) from e
    try:
        rows = await conn.fetchmany(statements[0].sql, arguments)
    except DRIVER_ERRORS as e:
        # A pipelined round trip that failed may leave the connection mid-protocol: close it
        # (which also ends its transaction) rather than let the pool hand it out again.
        conn.terminate()
        if len(positions) > 1:
            raise _OneAtATime from e
        raise _ChangeFailed(positions[0], e) from e
    by_position: dict[int, list[asyncpg.Record]] = {position: [] for position in positions}
    for row in rows:
        by_position[int(row[0])].append(row)
    last = len(positions) - 1
    for k, (position, statement) in enumerate(zip(positions, statements, strict=True)):
        try:
            result, applied = await statement.settle(by_position[position], conn, appender)
        except Exception as e:
            raise _ChangeFailed(position, e) from e
        if not applied:
            if k != last:
                raise _OneAtATime
            appender.rollback(marks[k])
        results[position] = result
