"""Fixtures for integration tests: storage engines, a PKI, and real brokers on 127.0.0.1.

Fixture API (reusable by client, security and crash tests):
- `store`: a freshly migrated `broker.storage.interfaces.Store`, once per engine in
  `storage_engines.ENGINES` (only "sqlite" for now).
- `clock`: a `ManualClock` at 2026-01-01T00:00:00Z; `clock.advance(seconds)` moves it.
- `pki`: a `Pki` made at `clock.now()`: roots TH and LA, agencies TH-ATPD, TH-DSDW, LA-MOLSW,
  LA-LWU (role agency), TH-OPERATOR (operator), LA-AUDITOR (auditor), broker TH-CASEBRIDGE.
- `broker`: a `RunningBroker` served in this process with `clock`, the operator registered
  offline and the four agencies enrolled over HTTP (certificates and encryption keys).
  `broker.client("TH-ATPD")` signs as an agency, `broker.client(None)` sends unsigned;
  `broker.seal(...)`, `broker.submit(...)`, `broker.sweep()`; `broker.store`, `broker.handlers`.
- `broker_factory`: `async with broker_factory(enroll=(...), **settings_overrides) as b:` for a
  broker with other settings (each in its own directory).
- `live_pki`: a `Pki` made at the real time; `broker_process`: an async factory starting
  `casebridge broker serve` as a subprocess with `live_pki` and only the operator registered
  (`await broker_process(**settings_overrides)` -> `BrokerProcess`: `.url`, `.authority`,
  `.config`, `.log_file` (its JSON log), `.enroll(live_pki, session, *agency_ids)`,
  `.client(live_pki, agency_or_None, session)`, `.stop()` (SIGTERM, returns the exit status),
  `.kill()` (SIGKILL); `await BrokerProcess.serve(p.config, p.log_file)` restarts on the same
  data), each closed at teardown.

Outside fixtures: `broker_harness.start_broker(directory, pki, clock, store=..., **settings)`
serves a broker on a store you opened; `broker.app.drain(app, timeout)` drains it;
`pki.seal`, `pki.frame` and `pki.recipient_receipt` make what clients send.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from broker.clock import SystemClock
from broker.storage.interfaces import Store
from tests.integration.broker_harness import (
    BrokerFactory,
    BrokerProcess,
    ManualClock,
    RunningBroker,
    start_broker,
)
from tests.integration.pki import Pki
from tests.integration.storage_engines import ENGINES, START_TIME

AGENCIES = ("TH-ATPD", "TH-DSDW", "LA-MOLSW", "LA-LWU")


@pytest.fixture(params=sorted(ENGINES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A freshly migrated store, once per engine."""
    async with ENGINES[request.param](tmp_path / "store") as opened:
        yield opened


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START_TIME)


@pytest.fixture
def pki(clock: ManualClock) -> Pki:
    return Pki.create(clock.now())


@pytest.fixture
def broker_factory(tmp_path: Path, pki: Pki, clock: ManualClock) -> BrokerFactory:
    counter = itertools.count()

    @asynccontextmanager
    async def factory(
        *, enroll: Sequence[str] = AGENCIES, **overrides: object
    ) -> AsyncIterator[RunningBroker]:
        async with start_broker(tmp_path / f"broker-{next(counter)}", pki, clock, **overrides) as running:
            await running.enroll(*enroll)
            yield running

    return factory


@pytest.fixture
async def broker(broker_factory: BrokerFactory) -> AsyncIterator[RunningBroker]:
    async with broker_factory() as running:
        yield running


@pytest.fixture
def live_pki() -> Pki:
    return Pki.create(SystemClock().now())


@pytest.fixture
async def broker_process(
    tmp_path: Path, live_pki: Pki
) -> AsyncIterator[Callable[..., Awaitable[BrokerProcess]]]:
    started: list[BrokerProcess] = []
    counter = itertools.count()

    async def start(**overrides: object) -> BrokerProcess:
        process = await BrokerProcess.start(tmp_path / f"process-{next(counter)}", live_pki, **overrides)
        started.append(process)
        return process

    yield start
    for process in started:
        await process.close()
