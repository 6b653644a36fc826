"""The relay benchmark on PostgreSQL beside SQLite, in one run on one machine.

    .venv/bin/python -m bench.postgres_bench relay [--pairs 2] [--seconds 15] [--rate 20]
    .venv/bin/python -m bench.postgres_bench inbox [--sizes 10000,1000000]   (bench.postgres_inbox)

relay: the throughput phase of `bench.relay_bench` (closed loop, `--window` envelopes in flight
per sender, 2 KiB referrals) against three brokers in turn: SQLite (`synchronous = FULL`), one
`casebridge broker serve` on PostgreSQL, and two replicas sharing that database, each sender on
one replica and its recipient on the other (so every push crosses replicas through
LISTEN/NOTIFY). With `--rate`, an open-loop latency phase at that rate for SQLite and PostgreSQL.
Prints envelopes per second and the ratio PostgreSQL / SQLite (target: >= 0.7). With `--waits`,
each PostgreSQL phase also samples `pg_stat_activity` every few milliseconds and prints what the
broker's database sessions were doing (`WaitSampler`): on average how many were waiting for the
audit sequencer's advisory lock, flushing the write-ahead log, running a statement, or holding a
transaction open while the broker (Python) prepared its next statement.

Invariants:
- PostgreSQL is a throwaway server (`tests.postgres_server`) on 127.0.0.1 with `fsync=on` and
  `synchronous_commit=on`, so a commit waits for the disk as SQLite's does.
- The broker's CPU figure is the first replica's process only; PostgreSQL's own processes are
  not in it (the load average shows the whole machine).
- Every phase is bounded by `--seconds` and by the per-sender `--count`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import asyncpg

from bench.relay_bench import BROKER_SETTINGS, envelope_sizes, specs
from bench.relay_phases import PhaseResult, run_phase
from bench.relay_world import (
    SENDERS,
    RelayWorld,
    ServerProcess,
    create_world,
    load_average,
    start_broker,
)
from tests.postgres_server import PostgresServer

TARGET_RATIO = 0.7
DATABASE = "casebridge_bench"
SAMPLE_INTERVAL_SECONDS = 0.005
BROKER_SESSIONS = (
    "SELECT state, wait_event_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 48) "
    "FROM pg_stat_activity WHERE application_name = 'casebridge-broker' AND state <> 'idle' "
    "AND pid <> pg_backend_pid()"
)


class WaitSampler:
    """Samples the broker's non-idle database sessions in a thread of its own, until stopped.

    Each sample adds one to every (state, wait event, statement) seen; divided by the number of
    busy samples (those with at least one non-idle session) it is the mean number of sessions in
    that condition while the database was busy (like an active-session history)."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="wait-sampler")
        self.seen: Counter[tuple[str, str, str]] = Counter()
        self.busy_samples = 0

    def __enter__(self) -> WaitSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self._dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(BROKER_SESSIONS)
                if rows:
                    self.busy_samples += 1
                for state, kind, event, query in rows:
                    wait = f"{kind}:{event}" if kind else "on CPU"
                    self.seen[(str(state), wait, str(query))] += 1
                await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
        finally:
            await conn.close()

    def summary(self, top: int = 14) -> list[dict[str, object]]:
        n = max(self.busy_samples, 1)
        by_wait: Counter[tuple[str, str]] = Counter()
        for (state, wait, _), count in self.seen.items():
            by_wait[(state, wait)] += count
        lines: list[dict[str, object]] = [
            {"state": s, "wait": w, "sessions": round(c / n, 3)} for (s, w), c in by_wait.most_common(top)
        ]
        lines += [
            {"state": s, "wait": w, "statement": q, "sessions": round(c / n, 3)}
            for (s, w, q), c in self.seen.most_common(top)
        ]
        return lines


def print_waits(sampler: WaitSampler) -> None:
    print(f"    database sessions while busy ({sampler.busy_samples} samples), mean count by state and wait:")
    for line in sampler.summary():
        statement = f"  {line['statement']}" if "statement" in line else ""
        print(f"      {line['sessions']:6.2f}  {line['state']:<20} {line['wait']:<24}{statement}")


def print_result(r: PhaseResult) -> None:
    print(
        f"  {r.name:<28} sent {r.sent:>6} verified {r.verified:>6} {r.verified_per_second:>7.0f}/s  "
        f"push p50/p99 {r.push.p50_ms:6.1f}/{r.push.p99_ms:6.1f} ms  verified p50/p99 "
        f"{r.verified_latency.p50_ms:6.1f}/{r.verified_latency.p99_ms:6.1f} ms  "
        f"broker CPU {r.server_cpu_ms_per_envelope:.2f} ms/env  load {load_average()}"
    )
    if r.errors:
        print(f"    {len(r.errors)} errors, first: {r.errors[0][:300]}")


def phase(
    name: str, brokers: list[ServerProcess], world: RelayWorld, args: argparse.Namespace,
    sizes: tuple[int, int], rate: float = 0,
) -> PhaseResult:  # fmt: skip
    """One phase; with two brokers, sender i talks to broker i % 2 and its recipient to the other."""
    senders, recipients = specs("casebridge", brokers[0].url, world, args, sizes, rate=rate)
    if len(brokers) > 1:
        senders = [dataclasses.replace(s, url=brokers[i % 2].url) for i, s in enumerate(senders)]
        recipients = [dataclasses.replace(r, url=brokers[(i + 1) % 2].url) for i, r in enumerate(recipients)]
    if args.waits and args.admin_dsn:
        with WaitSampler(args.admin_dsn) as sampler:
            result = run_phase(name, brokers[0].pid, senders, recipients)
        print_result(result)
        print_waits(sampler)
        args.wait_figures[name] = sampler.summary()
        return result
    result = run_phase(name, brokers[0].pid, senders, recipients)
    print_result(result)
    return result


def run_engine(
    label: str, world: RelayWorld, replicas: int, args: argparse.Namespace, sizes: tuple[int, int]
) -> dict[str, PhaseResult]:
    brokers = [start_broker(world) for _ in range(replicas)]
    results: dict[str, PhaseResult] = {}
    try:
        print(f"{label}: {', '.join(b.url for b in brokers)}; load average {load_average()}")
        results["throughput"] = phase(f"{label} throughput", brokers, world, args, sizes)
        if args.rate:
            results["latency"] = phase(f"{label} {args.rate:.0f}/s", brokers, world, args, sizes, args.rate)
    finally:
        for b in brokers:
            b.stop()
    return results


def relay(args: argparse.Namespace, directory: Path) -> dict[str, object]:
    print(
        f"load average before: {load_average()}  (python {sys.version.split()[0]}); "
        f"receipts posted {'in one batch' if args.receipts == 'batch' else 'one by one'}"
    )
    sizes = envelope_sizes()
    now = int(time.time())
    figures: dict[str, object] = {
        "load_average_before": load_average(),
        "pairs": args.pairs,
        "receipts": args.receipts,
    }
    args.admin_dsn, args.wait_figures = "", {}
    sqlite_world = asyncio.run(create_world(directory / "sqlite", now, **BROKER_SETTINGS))
    sqlite = run_engine("SQLite", sqlite_world, 1, args, sizes)
    server = PostgresServer.start(durable=True)
    try:
        asyncio.run(server.execute(f'CREATE DATABASE "{DATABASE}" TEMPLATE template0 ENCODING UTF8'))
        args.admin_dsn = server.dsn(DATABASE)
        settings = {**BROKER_SETTINGS, "database_url": server.dsn(DATABASE)}
        pg_world = asyncio.run(create_world(directory / "postgres", now, **settings))
        postgres = run_engine("PostgreSQL", pg_world, 1, args, sizes)
        two = run_engine("PostgreSQL x2", pg_world, 2, args, sizes)
    finally:
        server.stop()
    base = sqlite["throughput"].verified_per_second
    print("\nenvelopes/s (verified receipt back at the sender), ratio to SQLite in this run:")
    for label, results in (("SQLite", sqlite), ("PostgreSQL", postgres), ("PostgreSQL, 2 replicas", two)):
        rate = results["throughput"].verified_per_second
        print(f"  {label:<24} {rate:7.0f}/s  {rate / base:5.2f}")
    ratio = postgres["throughput"].verified_per_second / base
    print(f"target PostgreSQL >= {TARGET_RATIO} x SQLite: {'met' if ratio >= TARGET_RATIO else 'NOT met'}")
    print(f"load average after: {load_average()}")
    for label, results in (("sqlite", sqlite), ("postgresql", postgres), ("postgresql_2", two)):
        figures[label] = {k: dataclasses.asdict(v) for k, v in results.items()}
    figures["load_average_after"] = load_average()
    if args.wait_figures:
        figures["waits"] = args.wait_figures
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", choices=["relay", "inbox"])
    parser.add_argument("--pairs", type=int, default=2, help="sender/recipient process pairs (1-4)")
    parser.add_argument("--window", type=int, default=32, help="envelopes in flight per sender")
    parser.add_argument("--count", type=int, default=4000, help="envelopes per sender (throughput)")
    parser.add_argument("--seconds", type=float, default=15.0, help="bound of each sending phase")
    parser.add_argument("--rate", type=float, default=0.0, help="also an open-loop phase at this rate")
    parser.add_argument(
        "--receipts",
        choices=["batch", "single"],
        default="batch",
        help="recipients post delivered + verified in one batch request (default) or one each (relay)",
    )
    parser.add_argument("--waits", action="store_true", help="sample pg_stat_activity (relay)")
    parser.add_argument("--sizes", default="10000,1000000", help="inbox rows (inbox)")
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    if not 1 <= args.pairs <= len(SENDERS):
        parser.error(f"--pairs must be 1 to {len(SENDERS)}")
    with tempfile.TemporaryDirectory(prefix="casebridge-pg-bench-", dir=args.dir) as tmp:
        if args.which == "relay":
            figures = relay(args, Path(tmp))
        else:
            from bench import postgres_inbox

            figures = postgres_inbox.run([int(n) for n in args.sizes.split(",")], Path(tmp))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
