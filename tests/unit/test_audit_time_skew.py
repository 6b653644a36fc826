"""Leaf times in a genuine log may step back a little; the verifier tolerates exactly that much.

The broker stamps a leaf when it prepares a change and orders leaves by commit, so concurrent
requests can leave a leaf slightly older than one before it (docs/audit-log.md). The verifier
accepts a step back of up to `TIME_SKEW_SECONDS` from the latest time seen and reports anything
larger as `time_order`, including a clock that walks back in small steps.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from clients.audit.policy import LogPolicy, ProblemKind
from clients.audit.sources import ExportDirectory
from clients.audit.tree_check import TIME_SKEW_SECONDS
from clients.audit.verifier import Verification, verify_log
from tests.audit_log_fixtures import LOG, T0, LogBuilder, Parties, operator_action, register_parties

NOW = T0 + 10**6


def _log_with_times(offsets: list[int]) -> LogBuilder:
    """The parties' registrations, then one operator action per offset from the last time."""
    log = LogBuilder()
    register_parties(log, Parties.create())
    base = log.time + 1000
    for n, offset in enumerate(offsets):
        log.add_raw(operator_action(base + offset, n))
    return log


def _verify(log: LogBuilder, directory: Path) -> Verification:
    return asyncio.run(
        verify_log(ExportDirectory(log.export(directory)), LogPolicy(LOG.vkey), trusted=None, now=NOW)
    )


def test_a_leaf_a_few_seconds_older_than_the_one_before_it_is_concurrency_not_tampering(
    tmp_path: Path,
) -> None:
    result = _verify(_log_with_times([0, 10, 3, 10, 11, TIME_SKEW_SECONDS + 11 - 1, 70]), tmp_path)
    assert result.ok, result.lines()


def test_a_leaf_older_than_the_tolerated_skew_is_a_time_order_problem(tmp_path: Path) -> None:
    log = _log_with_times([0, 100, 100 - TIME_SKEW_SECONDS - 1, 101])
    result = _verify(log, tmp_path)
    order = [p for p in result.problems if p.kind is ProblemKind.TIME_ORDER]
    assert [p.index for p in order] == [len(log.leaves) - 2]
    assert f"more than {TIME_SKEW_SECONDS} s" in order[0].message


def test_a_clock_walking_back_in_small_steps_is_caught_once_it_passes_the_skew(tmp_path: Path) -> None:
    step = TIME_SKEW_SECONDS // 2 + 1
    log = _log_with_times([1000, 1000 - step, 1000 - 2 * step, 1000 - 3 * step])
    result = _verify(log, tmp_path)
    first = len(log.leaves) - 4
    assert [p.index for p in result.problems if p.kind is ProblemKind.TIME_ORDER] == [first + 2, first + 3]
