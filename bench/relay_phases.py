"""One timed phase of the relay benchmark: start the recipients, then the senders, give the
start signal, collect what every worker saw, and summarise it with the server's CPU and memory.

Figures per phase: envelopes per second from the first submit to the last verified receipt at a
sender (and accepted receipts per second); latency percentiles from submit to push (the
recipient's WebSocket hint), to the accepted answer, and to the verified receipt at the sender;
the server's CPU seconds and peak resident memory over the phase; the workers' CPU seconds.
Percentiles are nearest-rank over every envelope of the phase.
"""

from __future__ import annotations

import math
import multiprocessing
import queue
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.relay_workers import WorkerResult, WorkerSpec, run_worker
from bench.relay_world import reset_peak, sample, wait_idle

COLLECT_TIMEOUT_SECONDS = 240.0


@dataclass(frozen=True)
class Latency:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True)
class PhaseResult:
    name: str
    sent: int
    verified: int
    seconds: float
    accepted_per_second: float
    verified_per_second: float
    push: Latency
    accepted: Latency
    verified_latency: Latency
    server_cpu_seconds: float
    server_peak_rss_bytes: int
    sender_cpu_seconds: float
    recipient_cpu_seconds: float
    errors: tuple[str, ...]

    @property
    def server_cpu_ms_per_envelope(self) -> float:
        return 1000 * self.server_cpu_seconds / max(self.verified, 1)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def latency(starts: dict[str, float], ends: dict[str, float]) -> Latency:
    values = [1000 * (ends[k] - starts[k]) for k in ends if k in starts]
    if not values:
        return Latency(0, math.nan, math.nan, math.nan)
    return Latency(len(values), percentile(values, 0.5), percentile(values, 0.99), max(values))


def _wait_ready(ready: multiprocessing.Queue[str], count: int) -> None:
    for _ in range(count):
        name = ready.get(timeout=COLLECT_TIMEOUT_SECONDS)
        if name.startswith("failed"):
            raise RuntimeError(f"a worker could not start ({name})")


def run_phase(
    name: str, server_pid: int, senders: Sequence[WorkerSpec], recipients: Sequence[WorkerSpec]
) -> PhaseResult:
    ctx = multiprocessing.get_context("spawn")
    ready: multiprocessing.Queue[str] = ctx.Queue()
    results: multiprocessing.Queue[WorkerResult] = ctx.Queue()
    start, stop = ctx.Event(), ctx.Event()
    processes = [ctx.Process(target=run_worker, args=(s, ready, stop, results)) for s in recipients]
    processes += [ctx.Process(target=run_worker, args=(s, ready, start, results)) for s in senders]
    collected: list[WorkerResult] = []
    try:
        for p in processes[: len(recipients)]:
            p.start()
        _wait_ready(ready, len(recipients))
        for p in processes[len(recipients) :]:
            p.start()
        _wait_ready(ready, len(senders))
        wait_idle(server_pid)
        reset_peak(server_pid)
        cpu_before = sample(server_pid).cpu_seconds
        start.set()
        started = time.monotonic()
        while sum(r.role == "sender" for r in collected) < len(senders):
            collected.append(results.get(timeout=COLLECT_TIMEOUT_SECONDS))
        after = sample(server_pid)
        elapsed = time.monotonic() - started
        stop.set()
        while len(collected) < len(processes):
            collected.append(results.get(timeout=COLLECT_TIMEOUT_SECONDS))
    except queue.Empty as e:
        raise RuntimeError(f"{name}: workers did not report in time") from e
    finally:
        stop.set()
        start.set()
        for p in processes:
            p.join(60)
            if p.is_alive():
                p.kill()
        ready.close()
        results.close()
    return summarise(name, collected, after.cpu_seconds - cpu_before, after.peak_rss_bytes, elapsed)


def summarise(
    name: str, collected: Sequence[WorkerResult], server_cpu: float, server_peak: int, elapsed: float
) -> PhaseResult:
    submitted: dict[str, float] = {}
    accepted: dict[str, float] = {}
    verified: dict[str, float] = {}
    pushed: dict[str, float] = {}
    errors: list[str] = []
    for r in collected:
        submitted.update(r.submitted)
        accepted.update(r.accepted)
        verified.update(r.verified)
        pushed.update(r.pushed)
        errors += r.errors
    first = min(submitted.values(), default=0.0)
    span_verified = max(verified.values(), default=first) - first
    span_accepted = max(accepted.values(), default=first) - first
    return PhaseResult(
        name=name,
        sent=len(submitted),
        verified=len(verified),
        seconds=elapsed,
        accepted_per_second=len(accepted) / span_accepted if span_accepted > 0 else math.nan,
        verified_per_second=len(verified) / span_verified if span_verified > 0 else math.nan,
        push=latency(submitted, pushed),
        accepted=latency(submitted, accepted),
        verified_latency=latency(submitted, verified),
        server_cpu_seconds=server_cpu,
        server_peak_rss_bytes=server_peak,
        sender_cpu_seconds=sum(r.cpu_seconds for r in collected if r.role == "sender"),
        recipient_cpu_seconds=sum(r.cpu_seconds for r in collected if r.role == "recipient"),
        errors=tuple(errors),
    )
