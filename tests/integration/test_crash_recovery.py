"""Crash recovery under load: the broker is killed with SIGKILL several times while agencies
send, and a recipient application is killed too; afterwards every referral the broker accepted
was handled by its recipient's application exactly once, and nothing else was.

Everything is a real process on 127.0.0.1: `casebridge broker serve` on a fixed port (restarted
on the same data after each kill); three sending agencies, each an `AgencyClient` with two
sending tasks and its outbox flusher; three recipient applications, each an `AgencyClient` whose
`deliveries` it handles inside `processing`, writing its own record in the same local
transaction. The agencies' processes are this module run as a program (`main`). When the
senders have enqueued everything, a new client instance on each sender's state directory sends
what is still pending (`resume_outbox`).

The kills happen at random moments (the seed is in every failure message): each one when the
referrals enqueued so far cross a randomly drawn share of the load, so every kill falls inside
the load whatever the machine's speed. Everything is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import socket
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from clients.agency import AgencyClient, OutboxState
from clients.transport import RetryPolicy
from keys.keystore import KDF_PROFILES, save_identity
from protocol import codec
from tests.integration.broker_harness import TEST_PASSPHRASE, BrokerProcess
from tests.integration.pki import Pki

SENDERS = {"TH-ATPD": "", "TH-DSDW": "", "TH-OCSC": "สำนักงานคณะกรรมการคุ้มครองเด็ก"}
RECIPIENTS = {"LA-MOLSW": "", "LA-LWU": "", "LA-NSATIP": "ສຳນັກງານ ຕ້ານການຄ້າມະນຸດ"}
TASKS_PER_SENDER = 2
REFERRALS_PER_TASK = 334
PER_SENDER = TASKS_PER_SENDER * REFERRALS_PER_TASK
TOTAL = len(SENDERS) * PER_SENDER
BROKER_KILLS = 4
BODY_BYTES = 2048
FLUSH_SECONDS = 0.3
SETTLE_SECONDS = 120.0
PROCESS_MAX_SECONDS = 300
CRASH_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.02, max_delay_seconds=0.2)
APP_TABLE = (
    "CREATE TABLE IF NOT EXISTS app_handled ("
    " envelope_id TEXT NOT NULL, sender_id TEXT NOT NULL, body_sha256 TEXT NOT NULL)"
)
REPOSITORY = Path(__file__).resolve().parents[2]


def referral(sender: str, task: int, number: int) -> bytes:
    """A 2 KiB referral body that names where it came from."""
    text = {
        "เรื่อง": "ส่งต่อกรณี นางสาว สมหญิง ใจดี",
        "ຜູ້ເຄາະຮ້າຍ": "ນາງ ສົມພອນ ແກ້ວມະນີ",
        "from": f"{sender}/{task}/{number}",
        "notes": "",
    }
    size = len(json.dumps(text, ensure_ascii=False).encode())
    text["notes"] = "ข" * ((BODY_BYTES - size) // 3) + "x" * ((BODY_BYTES - size) % 3)
    body = json.dumps(text, ensure_ascii=False).encode()
    assert len(body) == BODY_BYTES
    return body


# --- the agencies' applications, each run as its own process -------------------------------------


def open_client(args: argparse.Namespace) -> AgencyClient:
    return AgencyClient.open(
        args.keystore,
        TEST_PASSPHRASE,
        trust=args.trust,
        broker_url=args.broker,
        state_dir=args.state,
        retry=CRASH_RETRY,
    )


async def recipient_application(args: argparse.Namespace) -> None:
    """Handle every delivery exactly once: the application's record and the processed mark
    commit together. Runs until killed (or `PROCESS_MAX_SECONDS`)."""
    async with asyncio.timeout(PROCESS_MAX_SECONDS), open_client(args) as client:
        with client.state.transaction() as db:
            db.execute(APP_TABLE)
        async for delivery in client.deliveries(follow=True, wait_seconds=2):
            digest = hashlib.sha256(delivery.body).hexdigest()
            with client.processing(delivery) as db:
                db.execute(
                    "INSERT INTO app_handled VALUES (?, ?, ?)",
                    (delivery.envelope_id, delivery.sender_id, digest),
                )


async def sender_application(args: argparse.Namespace) -> None:
    """Send `PER_SENDER` referrals from `TASKS_PER_SENDER` tasks, round robin over the
    recipients; an unreachable broker leaves them pending for the flusher (or a later client)."""
    async with asyncio.timeout(PROCESS_MAX_SECONDS), open_client(args) as client:
        await client.refresh_directory()
        flusher = asyncio.create_task(client.run_outbox_flusher(FLUSH_SECONDS))

        async def task(number: int) -> None:
            for n in range(REFERRALS_PER_TASK):
                to = args.to[(number + n) % len(args.to)]
                await client.send([to], referral(client.agency_id, number, n))

        try:
            await asyncio.gather(*(task(t) for t in range(TASKS_PER_SENDER)))
        finally:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="An agency's application in the crash test.")
    parser.add_argument("role", choices=["sender", "recipient"])
    parser.add_argument("--keystore", type=Path, required=True)
    parser.add_argument("--trust", type=Path, action="append", required=True)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--to", action="append", default=[])
    args = parser.parse_args()
    application = sender_application if args.role == "sender" else recipient_application
    with contextlib.suppress(TimeoutError):
        asyncio.run(application(args))


# --- the test --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def read_only(database: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10))


class Agency:
    """One agency's application process: started, SIGKILLed, started again."""

    def __init__(self, pki: Pki, agency_id: str, directory: Path, url: str, role: str) -> None:
        self.agency_id = agency_id
        directory.mkdir(parents=True, exist_ok=True)
        self.keystore = directory / "agency.cbks"
        save_identity(self.keystore, pki[agency_id], TEST_PASSPHRASE, KDF_PROFILES["interactive"])
        self.roots = pki.write_roots(directory / "trust")
        self.state = directory / "state"
        self.database = self.state / "state.sqlite3"
        self.log = directory / "process.log"
        self.url = url
        self.role = role
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self, *extra: str) -> None:
        trust = [arg for path in self.roots for arg in ("--trust", str(path))]
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.integration.test_crash_recovery", self.role,
                "--keystore", str(self.keystore), *trust, "--broker", self.url, "--state", str(self.state),
                *extra, cwd=REPOSITORY, env={**os.environ, "PYTHONPATH": str(REPOSITORY)},
                stdout=log, stderr=log,
            )  # fmt: skip
        self.starts += 1

    async def finished(self) -> int:
        assert self.process is not None
        return await self.process.wait()

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    def rows(self, query: str) -> list[tuple[str, ...]]:
        """Rows of the agency's state database, read while it runs (WAL lets a reader in)."""
        if not self.database.exists():
            return []
        with read_only(self.database) as db:
            try:
                return db.execute(query).fetchall()
            except sqlite3.OperationalError:
                return []

    def handled(self) -> list[tuple[str, ...]]:
        """The recipient application's own records: (envelope id, sender id, body digest)."""
        return self.rows("SELECT envelope_id, sender_id, body_sha256 FROM app_handled")

    def unposted_receipts(self) -> int:
        rows = self.rows("SELECT count(*) FROM signed_receipts WHERE posted = 0")
        return int(rows[0][0]) if rows else 0

    def enqueued(self) -> int:
        rows = self.rows("SELECT count(*) FROM outbox")
        return int(rows[0][0]) if rows else 0

    def client(self, pki: Pki) -> AgencyClient:
        """A new client instance on this agency's state directory."""
        roots = [pki.root_cert("TH"), pki.root_cert("LA")]
        return AgencyClient(
            pki[self.agency_id], roots=roots, broker_url=self.url, state_dir=self.state, retry=CRASH_RETRY
        )

    def log_tail(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")[-2000:]


class Broker:
    """The broker process of the moment, killed and restarted on the same data."""

    def __init__(self, first: BrokerProcess) -> None:
        self.current = first
        self.restarted: list[BrokerProcess] = []

    async def crash_and_restart(self, down_seconds: float) -> None:
        assert await self.current.kill() == -signal.SIGKILL
        await asyncio.sleep(down_seconds)
        self.current = await BrokerProcess.serve(self.current.config, self.current.log_file)
        self.restarted.append(self.current)

    async def close(self) -> None:
        for process in self.restarted:
            await process.close()


async def crash_at_random_moments(
    broker: Broker, senders: list[Agency], recipient: Agency, rng: random.Random
) -> None:
    """Kill the broker when the load crosses each of `BROKER_KILLS` drawn shares of it, and one
    recipient application when it crosses one more."""
    moments = [(rng.uniform(0.1, 0.9), "broker") for _ in range(BROKER_KILLS)]
    moments.append((rng.uniform(0.2, 0.8), "recipient"))
    for share, what in sorted(moments):
        for _ in range(int(PROCESS_MAX_SECONDS / 0.05)):
            if sum(s.enqueued() for s in senders) >= share * TOTAL:
                break
            await asyncio.sleep(0.05)
        if what == "broker":
            await broker.crash_and_restart(rng.uniform(0.1, 1.0))
        else:
            await recipient.kill()
            await recipient.start()


def audit_facts(database: Path) -> tuple[Counter[bytes], Counter[tuple[str, bytes]]]:
    """Envelope-accepted leaves per envelope id, and receipt leaves per (kind, envelope id),
    from the broker's stored log. Leaves are `[version, kind, time, fields...]`; the envelope id
    is the first field of an acceptance and the second of a receipt (docs/audit-log.md)."""
    accepted: Counter[bytes] = Counter()
    receipts: Counter[tuple[str, bytes]] = Counter()
    with read_only(database) as db:
        for (leaf,) in db.execute("SELECT leaf FROM audit_log ORDER BY idx"):
            items = codec.decode(bytes(leaf))
            if items[1] == "envelope_accepted":
                accepted[items[3]] += 1
            elif items[1] == "receipt":
                receipts[(items[3], items[4])] += 1
    return accepted, receipts


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as opened:
        yield opened


@pytest.mark.slow
async def test_every_accepted_referral_is_handled_exactly_once_through_broker_and_recipient_crashes(
    broker_process: Callable[..., Awaitable[BrokerProcess]],
    live_pki: Pki,
    tmp_path: Path,
    session: aiohttp.ClientSession,
) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    why = f"(random seed {seed})"
    for agency_id, name in {**SENDERS, **RECIPIENTS}.items():
        if agency_id not in live_pki.agencies:
            live_pki.agencies[agency_id] = live_pki.new_agency(agency_id, name)
    first = await broker_process(
        listen_port=free_port(),
        rate_limit_per_minute=10_000_000,
        rate_limit_burst=1_000_000,
        log_level="WARNING",
    )
    await first.enroll(live_pki, session, *SENDERS, *RECIPIENTS)
    broker = Broker(first)
    senders = [Agency(live_pki, a, tmp_path / a, first.url, "sender") for a in SENDERS]
    recipients = [Agency(live_pki, a, tmp_path / a, first.url, "recipient") for a in RECIPIENTS]
    try:
        for recipient in recipients:
            await recipient.start()
        for sender in senders:
            await sender.start(*(arg for r in RECIPIENTS for arg in ("--to", r)))
        await crash_at_random_moments(broker, senders, recipients[0], rng)
        for sender in senders:
            assert await sender.finished() == 0, (sender.log_tail(), why)
        assert sum(s.enqueued() for s in senders) == TOTAL, why
        assert len(broker.restarted) == BROKER_KILLS
        # A recipient application dies once more while it catches up.
        await recipients[1].kill()
        await recipients[1].start()

        created: dict[str, tuple[str, str]] = {}
        async with asyncio.timeout(SETTLE_SECONDS):
            for sender in senders:
                async with sender.client(live_pki) as client:
                    for _ in range(100):
                        if not client.outbox(OutboxState.PENDING):
                            break
                        await client.resume_outbox()
                    outbox = client.outbox()
                    # Every outbox entry ended accepted, with the broker's accepted receipt.
                    states = Counter(e.state for e in outbox)
                    assert states == {OutboxState.ACCEPTED: PER_SENDER}, (sender.agency_id, states, why)
                    for entry in outbox:
                        assert "accepted" in {r.kind for r in client.receipts(entry.envelope_id)}, why
                        created[entry.envelope_id] = (sender.agency_id, entry.recipients[0])
            assert len(created) == TOTAL, why
            # Until every referral is handled and every recipient has posted its receipts.
            while sum(len({row[0] for row in r.handled()}) for r in recipients) < TOTAL or any(
                r.unposted_receipts() for r in recipients
            ):
                await asyncio.sleep(0.2)
        for recipient in recipients:
            await recipient.kill()
        assert [r.starts for r in recipients] == [2, 2, 1]

        # Each recipient application handled each referral sent to it exactly once, and
        # nothing else.
        handled: Counter[str] = Counter()
        bodies: set[str] = set()
        for recipient in recipients:
            for envelope_id, sender_id, digest in recipient.handled():
                handled[envelope_id] += 1
                bodies.add(digest)
                assert created.get(envelope_id) == (sender_id, recipient.agency_id), (envelope_id, why)
        assert set(handled) == set(created), why
        assert set(handled.values()) == {1}, (handled.most_common(3), why)
        # ... and every referral's body arrived intact.
        sent = {
            hashlib.sha256(referral(s, t, n)).hexdigest()
            for s in SENDERS
            for t in range(TASKS_PER_SENDER)
            for n in range(REFERRALS_PER_TASK)
        }
        assert bodies == sent, why

        # The broker's audit log holds one acceptance per envelope, and one accepted and one
        # verified receipt for each.
        assert await broker.current.stop() == 0
        accepted, receipts = audit_facts(broker.current.settings.database_file)
        ids = {bytes.fromhex(e) for e in created}
        assert set(accepted) == ids, why
        assert set(accepted.values()) == {1}, why
        for kind in ("accepted", "verified"):
            counted = {e: n for (k, e), n in receipts.items() if k == kind}
            assert set(counted) == ids, (kind, why)
            assert set(counted.values()) == {1}, (kind, why)
    finally:
        for agency in (*senders, *recipients):
            await agency.kill()
        await broker.close()


if __name__ == "__main__":
    main()
