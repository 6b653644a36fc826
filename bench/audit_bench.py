"""The audit-log benchmark: proofs from the SQLite node store at 10k and 1M leaves, and the log's
cost on the relay's storage path.

    .venv/bin/python -m bench.audit_bench all                # proofs at 10k and 1M, then relay
    .venv/bin/python -m bench.audit_bench proofs --sizes 10000 1000000 [--dir /var/tmp]
    .venv/bin/python -m bench.audit_bench relay [--envelopes 3000] [--concurrency 32] [--rounds 4]

- proofs: builds a log of N leaves through the broker's own append path (the sequencer, tree
  nodes and envelope index, 10,000 appends per transaction), reopens it (the sequencer resumes
  from the stored border), then times `inclusion_proof` and `consistency_proof` as the HTTP
  handlers call them (a reader thread, one query each): p50 / p99 / max over `--proofs` random
  requests. Every proof is verified against the root of an in-memory tree built alongside, so
  a wrong proof fails the run. Baseline: the same query run directly on a connection (no
  thread hop), and the bulk append rate with the leaf alone (the log before it had a tree).
- relay: `bench.audit_relay`, leaf-only against the full audit log, alternating, in one run.

Targets: inclusion and consistency < 5 ms at 1M leaves; the audit log costs < 15 % of relay
throughput. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from bench.audit_relay import LeafOnlyAuditLog, PhaseResult, compare
from broker.storage.sqlite.audit import SqliteAuditLog, SqliteHashReader
from broker.storage.sqlite.database import Database, connect
from protocol import auditlog
from protocol.merkle import (
    MemoryTree,
    border_nodes,
    consistency_plan,
    inclusion_plan,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)

NOW = 1_750_000_000
BATCH = 10_000
BUILD_SECONDS = 900.0


def leaf(n: int) -> bytes:
    fields = auditlog.EnvelopePurged(n.to_bytes(16, "big"), (n * 7919).to_bytes(32, "big"), 4096 + n % 977)
    return auditlog.encode_leaf(NOW + n // 100, fields)


def milliseconds(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {statistics.median(ordered) * 1e3:.3f}  p99 {p99 * 1e3:.3f}  max {ordered[-1] * 1e3:.3f} ms"


async def build(path: Path, size: int, memory: MemoryTree) -> tuple[float, float]:
    """Append `size` leaves through the real append path; appends per second, full and leaf-only
    (the leaf-only rate measured over the first min(size, 50,000) leaves in a second file)."""
    rates = []
    for audit_class, count, name in (
        (SqliteAuditLog, size, "broker.sqlite3"),
        (LeafOnlyAuditLog, min(size, 50_000), "leaf-only.sqlite3"),
    ):
        db = await Database.open(path / name, now=NOW)
        audit = audit_class(db)
        if audit_class is LeafOnlyAuditLog:
            await LeafOnlyAuditLog.prepare(db)
        deadline = time.perf_counter() + BUILD_SECONDS
        started = time.perf_counter()
        done = 0
        while done < count and time.perf_counter() < deadline:
            batch = [leaf(n) for n in range(done, min(done + BATCH, count))]

            def job(
                conn: sqlite3.Connection, batch: list[bytes] = batch, audit: SqliteAuditLog = audit
            ) -> None:
                for entry in batch:
                    audit.append(conn, entry, NOW)

            await db.write(job)
            if audit_class is SqliteAuditLog:
                for entry in batch:
                    memory.append(leaf_hash(entry))
            done += len(batch)
        rates.append(done / (time.perf_counter() - started))
        await db.close()
        if done < count:
            raise SystemExit(f"building {count} leaves took longer than {BUILD_SECONDS:.0f} s")
    return rates[0], rates[1]


async def proofs(size: int, directory: Path, count: int, seconds: float) -> None:
    memory = MemoryTree()
    full_rate, leaf_rate = await build(directory, size, memory)
    print(f"\n{size:,} leaves: built at {full_rate:,.0f} appends/s (leaf only: {leaf_rate:,.0f}/s)")
    db = await Database.open(directory / "broker.sqlite3", now=NOW)
    audit = SqliteAuditLog(db)
    started = time.perf_counter()
    head = await audit.open_tree()
    resumed = (time.perf_counter() - started) * 1e3
    print(f"  reopened: sequencer from {len(border_nodes(size))} border nodes in {resumed:.1f} ms")
    assert head.root_hash == memory.root()
    rng = random.Random(size)
    timings: dict[str, list[float]] = {"inclusion": [], "consistency": []}
    deadline = time.perf_counter() + seconds
    for _ in range(count):
        if time.perf_counter() >= deadline:
            break
        index = rng.randrange(size)
        started = time.perf_counter()
        proof = await audit.inclusion_proof(index, size)
        timings["inclusion"].append(time.perf_counter() - started)
        verify_inclusion(leaf_hash(leaf(index)), index, size, proof, head.root_hash)
        older = rng.randrange(1, size)
        started = time.perf_counter()
        proof = await audit.consistency_proof(older, size)
        timings["consistency"].append(time.perf_counter() - started)
        verify_consistency(older, size, proof, memory.root(older), head.root_hash)
    await db.close()
    direct = _direct_queries(directory / "broker.sqlite3", size, len(timings["inclusion"]), rng)
    for name, samples in timings.items():
        print(f"  {name:<11} {len(samples)} proofs, verified: {milliseconds(samples)}")
        print(f"  {'':<11} baseline, same query on the calling thread: {milliseconds(direct[name])}")


def _direct_queries(path: Path, size: int, count: int, rng: random.Random) -> dict[str, list[float]]:
    conn = connect(path, query_only=True)
    reader = SqliteHashReader(conn)
    found: dict[str, list[float]] = {"inclusion": [], "consistency": []}
    try:
        for _ in range(count):
            for name, plan in (
                ("inclusion", inclusion_plan(rng.randrange(size), size)),
                ("consistency", consistency_plan(rng.randrange(1, size), size)),
            ):
                started = time.perf_counter()
                plan.assemble(reader.hashes(plan.nodes))
                found[name].append(time.perf_counter() - started)
    finally:
        conn.close()
    return found


def _phase(result: PhaseResult) -> str:
    return (
        f"{result.envelopes_per_second:,.0f}/s ({result.cpu_ms_per_envelope:.2f} ms CPU each, "
        f"{result.kernel_ms_per_envelope:.2f} in the kernel)"
    )


async def relay(envelopes: int, concurrency: int, rounds: int, seconds: float) -> None:
    print(f"\nrelay storage path: {envelopes} envelopes x {rounds} rounds, {concurrency} at once")
    pairs = await compare(envelopes, concurrency, rounds, seconds)
    ratios = []
    for n, (leaf_only, full) in enumerate(pairs):
        ratio = full.envelopes_per_second / leaf_only.envelopes_per_second
        ratios.append(ratio)
        print(f"  round {n}: leaf only {_phase(leaf_only)}")
        print(f"  {'':<8} full log  {_phase(full)}, {full.checkpoints} checkpoints")
        print(f"  {'':<8} full log appends {4 * full.envelopes_per_second:,.0f}/s; ratio {ratio:.2f}")
    best = max(p[1].envelopes_per_second for p in pairs) / max(p[0].envelopes_per_second for p in pairs)
    cpu = statistics.median(p[1].cpu_ms_per_envelope - p[0].cpu_ms_per_envelope for p in pairs)
    print(
        f"  full / leaf only: best {best:.2f}, median {statistics.median(ratios):.2f}; "
        f"the tree, index and checkpointer add {cpu * 1e3:.0f} us of CPU per envelope (median)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.audit_bench", description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("all", "proofs", "relay"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--proofs", type=int, default=2000, help="proofs of each kind per size")
    parser.add_argument("--seconds", type=float, default=60.0, help="time limit of each timed loop")
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: system temp)")
    parser.add_argument("--envelopes", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    print(f"audit benchmark, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if args.what in ("all", "proofs"):
        for size in args.sizes:
            with tempfile.TemporaryDirectory(prefix="casebridge-audit-", dir=args.dir) as temp:
                asyncio.run(proofs(size, Path(temp), args.proofs, args.seconds))
    if args.what in ("all", "relay"):
        asyncio.run(relay(args.envelopes, args.concurrency, args.rounds, args.seconds))


if __name__ == "__main__":
    main()
