"""Sender and recipient processes of the relay benchmark, and their timing.

Each worker is one agency in its own process (started with multiprocessing's `spawn`). Times are
`time.monotonic()`, which is CLOCK_MONOTONIC on Linux: one clock for every process of the
machine, so a sender's submit time and a recipient's push time compare directly.

- A sender seals its envelopes before the start signal (sealing is measured by
  `bench.envelope_bench`), then sends them either closed-loop (at most `window` envelopes whose
  verified receipt it does not hold yet) or open-loop at `rate` per second, where each envelope's
  submit time is its scheduled time (so a slow answer delays nothing and hides nothing). It
  follows its receipt feed on every "receipt" hint and stops once every envelope it sent has its
  verified receipt, or `grace_seconds` after the last send.
- A recipient receives every "inbox" hint's envelope (in its own task) and stops on the stop
  signal, after its tasks finish.
Every loop is bounded by a count and a time.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.relay_flows import BareFlow, CaseBridgeFlow, Flow

START_WAIT_SECONDS = 300.0


@dataclass(frozen=True)
class WorkerSpec:
    role: str
    """"sender" or "recipient"."""
    flow: str
    """"casebridge" or "bare"."""
    url: str
    agency_id: str
    keystore: str = ""
    passphrase: str = ""
    roots: tuple[str, ...] = ()
    peer: str = ""
    count: int = 0
    window: int = 0
    """Closed loop with this many envelopes in flight; 0 for open loop at `rate`."""
    rate: float = 0.0
    seconds: float = 20.0
    grace_seconds: float = 15.0
    sizes: tuple[int, int] = (0, 0)
    batch_receipts: bool = True
    """A recipient posts delivered and verified in one batch request (else one request each)."""


@dataclass
class WorkerResult:
    agency_id: str
    role: str
    cpu_seconds: float = 0.0
    submitted: dict[str, float] = field(default_factory=dict)
    accepted: dict[str, float] = field(default_factory=dict)
    verified: dict[str, float] = field(default_factory=dict)
    pushed: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_flow(spec: WorkerSpec) -> Flow:
    if spec.flow == "casebridge":
        return CaseBridgeFlow(
            spec.url,
            Path(spec.keystore),
            spec.passphrase,
            [Path(p) for p in spec.roots],
            batch_receipts=spec.batch_receipts,
        )
    return BareFlow(spec.url, spec.agency_id, *spec.sizes, batch_receipts=spec.batch_receipts)


def _hints(message: aiohttp.WSMessage) -> dict[str, Any] | None:
    if message.type is not aiohttp.WSMsgType.TEXT:
        return None
    value = json.loads(message.data)
    return value if isinstance(value, dict) else None


class SenderRun:
    def __init__(self, flow: Flow, spec: WorkerSpec, result: WorkerResult) -> None:
        self.flow = flow
        self.spec = spec
        self.result = result
        self.window = asyncio.Semaphore(spec.window or 1)
        self.wake = asyncio.Event()
        self.all_sent = False
        self.finished = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.cursor = 0

    def _check_finished(self) -> None:
        r = self.result
        if self.all_sent and all(e in r.verified for e in r.accepted) and not self.tasks:
            self.finished.set()

    async def _one(self, envelope_id: str, body_item: Any, at: float) -> None:
        self.result.submitted[envelope_id] = at
        try:
            await self.flow.submit(body_item)
            self.result.accepted[envelope_id] = time.monotonic()
        except Exception as e:  # A benchmark counts failures instead of stopping.
            self.result.errors.append(f"submit: {type(e).__name__}: {e}")
            if self.spec.window:
                self.window.release()

    def _spawn(self, envelope_id: str, item: Any, at: float) -> None:
        task = asyncio.create_task(self._one(envelope_id, item, at))
        self.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.tasks.discard(t)
            self._check_finished()

        task.add_done_callback(done)

    async def catch_up(self) -> None:
        """Skip what the feed held before this phase (bounded: one page per round)."""
        for _ in range(10_000):
            page = await self.flow.feed(self.cursor)
            self.cursor = page.next
            if not page.full:
                return

    async def follow_feed(self) -> None:
        r = self.result
        while True:
            await self.wake.wait()
            self.wake.clear()
            try:
                page = await self.flow.feed(self.cursor)
            except Exception as e:
                r.errors.append(f"feed: {type(e).__name__}: {e}")
                await asyncio.sleep(0.05)
                self.wake.set()
                continue
            now = time.monotonic()
            for item in page.items:
                if item.kind == "verified" and item.envelope_id not in r.verified:
                    r.verified[item.envelope_id] = now
                    if self.spec.window:
                        self.window.release()
            self.cursor = max(self.cursor, page.next)
            if page.full:
                self.wake.set()
            self._check_finished()

    async def listen(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            hint = _hints(message)
            if hint is None:
                return
            if hint.get("type") == "receipt":
                self.wake.set()

    async def send(self, items: list[Any]) -> None:
        spec = self.spec
        t0 = time.monotonic()
        deadline = t0 + spec.seconds
        if spec.window:
            for item in items:
                try:
                    await asyncio.wait_for(self.window.acquire(), max(deadline - time.monotonic(), 0.001))
                except TimeoutError:
                    break
                self._spawn(item.envelope_id, item, time.monotonic())
        else:
            for i, item in enumerate(items):
                at = t0 + i / spec.rate
                if at > deadline:
                    break
                delay = at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._spawn(item.envelope_id, item, at)
        self.all_sent = True
        self.wake.set()
        self._check_finished()


async def _sender(spec: WorkerSpec, ready: Any, start: Any, result: WorkerResult) -> None:
    flow = make_flow(spec)
    await flow.start()
    try:
        items = flow.seal(spec.count, spec.peer)
        ws = await flow.open_events()
        run = SenderRun(flow, spec, result)
        await run.catch_up()
        listener = asyncio.create_task(run.listen(ws))
        follower = asyncio.create_task(run.follow_feed())
        ready.put(spec.agency_id)
        if not await asyncio.to_thread(start.wait, START_WAIT_SECONDS):
            raise RuntimeError("no start signal")
        cpu = _cpu_seconds()
        await run.send(items)
        try:
            await asyncio.wait_for(run.finished.wait(), spec.grace_seconds)
        except TimeoutError:
            result.errors.append(f"{len(result.accepted) - len(result.verified)} without verified receipt")
        for task in (listener, follower, *run.tasks):
            task.cancel()
        await asyncio.gather(listener, follower, *run.tasks, return_exceptions=True)
        result.cpu_seconds = _cpu_seconds() - cpu
        await ws.close()
    finally:
        await flow.close()


async def _recipient(spec: WorkerSpec, ready: Any, stop: Any, result: WorkerResult) -> None:
    flow = make_flow(spec)
    await flow.start()
    tasks: set[asyncio.Task[None]] = set()

    async def handle(envelope_id: str) -> None:
        try:
            await flow.receive(envelope_id)
            result.received[envelope_id] = time.monotonic()
        except Exception as e:
            result.errors.append(f"receive: {type(e).__name__}: {e}")

    async def listen(ws: aiohttp.ClientWebSocketResponse) -> None:
        async for message in ws:
            hint = _hints(message)
            if hint is None:
                return
            if hint.get("type") == "inbox" and hint["envelope_id"] not in result.pushed:
                result.pushed[hint["envelope_id"]] = time.monotonic()
                task = asyncio.create_task(handle(hint["envelope_id"]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    try:
        ws = await flow.open_events()
        listener = asyncio.create_task(listen(ws))
        ready.put(spec.agency_id)
        cpu = _cpu_seconds()
        await asyncio.to_thread(stop.wait, START_WAIT_SECONDS + 600)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        if tasks:
            await asyncio.wait(set(tasks), timeout=30)
        result.cpu_seconds = _cpu_seconds() - cpu
        await ws.close()
    finally:
        await flow.close()


def run_worker(spec: WorkerSpec, ready: Any, signal: Any, results: Any) -> None:
    """The process entry point: `signal` is the start event for a sender, the stop event for a
    recipient; the `WorkerResult` goes to `results` whatever happens."""
    result = WorkerResult(spec.agency_id, spec.role)
    try:
        if spec.role == "sender":
            asyncio.run(_sender(spec, ready, signal, result))
        else:
            asyncio.run(_recipient(spec, ready, signal, result))
    except BaseException:
        result.errors.append(traceback.format_exc(limit=5))
        ready.put(f"failed: {spec.agency_id}")
    results.put(result)
