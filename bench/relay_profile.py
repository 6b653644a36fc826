"""Where the broker's time goes in the throughput phase: py-spy samples the broker process
(every thread: the event loop, the SQLite writer and readers) while a closed-loop phase runs.

py-spy is a profiling aid, not a dependency: `pip install py-spy` into the virtual environment
to use it; without it this phase is skipped with a note. Time inside C (libsodium, SQLite,
the kernel) is charged to the Python function that called it. Two views are printed: each
function's own samples (where the time is spent), and samples grouped by where the innermost
frame lives (our packages, PyNaCl, aiohttp, sqlite3, logging, ...).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.relay_phases import run_phase
from bench.relay_world import RelayWorld, ServerProcess

SAMPLES_PER_SECOND = 200
TOP = 25
_FRAME = re.compile(r"(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
GROUPS = (
    ("nacl/", "PyNaCl (libsodium calls and their argument checks)"),
    ("aiohttp/", "aiohttp"),
    ("multidict/", "aiohttp"),
    ("yarl/", "aiohttp"),
    ("broker/storage/", "broker.storage (SQLite calls: writer thread, readers)"),
    ("sqlite3/", "broker.storage (SQLite calls: writer thread, readers)"),
    ("logging/", "logging"),
    ("broker/logs.py", "logging"),
    ("json/", "json"),
    ("concurrent/futures/", "thread pool hand-offs (run_in_executor)"),
    ("asyncio/", "asyncio event loop"),
    ("selectors.py", "asyncio event loop"),
    ("protocol/httpsig", "protocol.httpsig (request signatures)"),
    ("protocol/structured_fields", "protocol.httpsig (request signatures)"),
    ("protocol/", "protocol (codec, certificates, envelope, receipts)"),
    ("broker/", "broker (web, services)"),
    ("prometheus_client/", "prometheus_client"),
    ("msgpack/", "msgpack"),
)
WAITING = frozenset(
    {
        "select (selectors.py)",
        "EpollSelector.select (selectors.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
        "_worker (concurrent/futures/thread.py)",
        "Database._serve (broker/storage/sqlite/database.py)",
        "Database._checkpoint_main (broker/storage/sqlite/database.py)",
    }
)
"""Frames where a thread waits (for the network, for work, for its timer): py-spy's idle
detection misses some of them when it does not pause the process, so they are set apart."""


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _group(file: str) -> str:
    for needle, name in GROUPS:
        if needle in file:
            return name
    return f"other ({Path(file).name})"


def summarise(raw: Path) -> tuple[Counter[str], Counter[str], int, int]:
    """Own samples by function and by group, the working total and the waiting samples, from
    py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    groups: Counter[str] = Counter()
    total = waiting = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        leaf = stack.split(";")[-1]
        match = _FRAME.match(leaf)
        function, file = (match["function"], match["file"]) if match else (leaf, "")
        name = f"{function} ({file})"
        if name in WAITING:
            waiting += count
            continue
        own[name] += count
        groups[_group(file)] += count
        total += count
    return own, groups, total, waiting


def profiled_throughput(
    broker: ServerProcess,
    world: RelayWorld,
    args: argparse.Namespace,
    sizes: tuple[int, int],
    directory: Path,
) -> dict[str, object] | None:
    from bench.relay_bench import specs

    tool = py_spy()
    if tool is None:
        print("\nProfile: py-spy is not installed (pip install py-spy into .venv); skipped.")
        return None
    raw = directory / "broker-profile.txt"
    log = directory / "py-spy.log"
    with log.open("wb") as output:
        spy = subprocess.Popen(
            [tool, "record", "--pid", str(broker.pid), "--rate", str(SAMPLES_PER_SECOND), "--format", "raw",
             "--output", str(raw), "--nonblocking"],
            stdout=output, stderr=output,
        )  # fmt: skip
    try:
        result = run_phase(
            "profiled casebridge", broker.pid, *specs("casebridge", broker.url, world, args, sizes)
        )
    finally:
        if spy.poll() is None:
            os.kill(spy.pid, signal.SIGINT)
        spy.wait(60)
    if not raw.exists():
        print(f"\nProfile: py-spy wrote nothing ({log.read_text(errors='replace')[-300:]})")
        return None
    for error in result.errors[:3]:
        print(f"  error while profiled: {error[:300]}")
    own, groups, total, waiting = summarise(raw)
    print(
        f"\nProfile of the broker under py-spy ({result.verified_per_second:.0f} envelopes/s while "
        f"sampled; {total} working samples over every thread, {waiting} waiting ones set apart)"
    )
    print("  by where the innermost frame lives:")
    for name, count in groups.most_common():
        print(f"    {100 * count / total:5.1f} %  {name}")
    print(f"  top {TOP} functions by own samples:")
    for name, count in own.most_common(TOP):
        print(f"    {100 * count / total:5.1f} %  {name}")
    return {
        "verified_per_second": result.verified_per_second,
        "samples": total,
        "groups": {k: v / total for k, v in groups.most_common()},
        "top": {k: v / total for k, v in own.most_common(TOP)},
    }
