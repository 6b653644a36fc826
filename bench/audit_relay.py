"""The audit log's cost on the relay's storage path: the same envelopes and receipts stored with
the full audit log (tree nodes, envelope index, checkpointer running) and with only the leaf
appended (the log as it was before it had a tree), in one run.

Each envelope is what the broker's writer thread does for a one-recipient referral: accept it
(envelope row, inbox entry, 2 KiB inline ciphertext, its `envelope_accepted` leaf, a broker-signed
`accepted` receipt and its leaf), then record the recipient's `delivered` and `verified`
receipts (each with its leaf): 3 transactions and 4 audit appends. `--concurrency` workers run
at once, so commits are grouped as under load. Leaves are encoded in both phases (the format is
the same); receipts the recipient signs are made before the clock starts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import resource
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import nacl.signing
from prometheus_client import CollectorRegistry

from broker.audit.checkpointer import Checkpointer
from broker.audit.metrics import AuditMetrics
from broker.audit.witnesses import WitnessClient
from broker.clock import SystemClock
from broker.storage.records import OPEN_STATES, InboxState, IssuedReceipt, NewEnvelope, NewPart, NewReceipt
from broker.storage.sqlite.audit import SqliteAuditLog
from broker.storage.sqlite.database import Database
from broker.storage.sqlite.delivery import SqliteDeliveryStore
from protocol import auditlog
from protocol.certificate import AgencyCertificate, Role, RootCertificate
from protocol.note import NoteSigner
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

NOW = 1_750_000_000
SENDER, RECIPIENT = "TH-FOCAL", "LA-FOCAL"
ORIGIN = "casebridge.th-bench/audit"


class LeafOnlyAuditLog(SqliteAuditLog):
    """The baseline: the leaf appended in the caller's transaction, no tree, no index (schema 1,
    once `prepare` dropped what schema 2 adds to `audit_log`)."""

    @staticmethod
    async def prepare(db: Database) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.execute("DROP TRIGGER audit_log_with_nodes")
            conn.execute("DROP INDEX audit_log_without_nodes")

        await db.write(job)

    def append(self, conn: sqlite3.Connection, leaf: bytes, now: int) -> int:
        index = int(conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM audit_log").fetchone()[0])
        conn.execute("INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (?, ?, ?)", (index, leaf, now))
        return index


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"casebridge-audit-bench/" + label.encode()).digest()


def _certificate(
    root_key: nacl.signing.SigningKey, root: RootCertificate, agency_id: str, role: Role
) -> tuple[nacl.signing.SigningKey, AgencyCertificate]:
    key = nacl.signing.SigningKey(_seed(agency_id))
    cert = AgencyCertificate.issue(
        root_key,
        root,
        serial=1,
        agency_id=agency_id,
        name=agency_id,
        roles=[role],
        signing_key=bytes(key.verify_key),
        not_before=0,
        not_after=2 * NOW,
    )
    return key, cert


@dataclass(frozen=True)
class Envelope:
    new_leaf_args: tuple[bytes, bytes]
    delivered: bytes
    verified: bytes


@dataclass(frozen=True)
class Material:
    broker_key: nacl.signing.SigningKey
    broker_cert: AgencyCertificate
    envelopes: tuple[Envelope, ...]


def material(count: int) -> Material:
    """`count` envelopes (id, hash) with the recipient's two receipts already signed."""
    roots = {}
    for country in ("TH", "LA"):
        key = nacl.signing.SigningKey(_seed(f"root-{country}"))
        roots[country] = (
            key,
            RootCertificate.create(key, country=country, name=country, not_before=0, not_after=2 * NOW),
        )
    broker_key, broker_cert = _certificate(*roots["TH"], "TH-BROKER", Role.BROKER)
    recipient_key, recipient_cert = _certificate(*roots["LA"], RECIPIENT, Role.AGENCY)
    envelopes = []
    for n in range(count):
        envelope_id = _seed(f"envelope-{n}")[:16]
        envelope_hash = _seed(f"hash-{n}")
        subject = ReceiptSubject(envelope_hash, envelope_id, SENDER, RECIPIENT)
        signed = [
            Receipt.issue(
                kind, signing_key=recipient_key, signer=recipient_cert, subject=subject, time=NOW
            ).raw
            for kind in (ReceiptKind.DELIVERED, ReceiptKind.VERIFIED)
        ]
        envelopes.append(Envelope((envelope_id, envelope_hash), signed[0], signed[1]))
    return Material(broker_key, broker_cert, tuple(envelopes))


async def _relay_one(delivery: SqliteDeliveryStore, world: Material, envelope: Envelope) -> None:
    envelope_id, envelope_hash = envelope.new_leaf_args
    subject = ReceiptSubject(envelope_hash, envelope_id, SENDER, RECIPIENT)
    accepted = auditlog.EnvelopeAccepted(
        envelope_id, envelope_hash, SENDER, b"k" * 16, (RECIPIENT,), 600, (2368,), NOW + 86_400, b"s" * 64
    )

    def issue(index: int) -> list[IssuedReceipt]:
        receipt = Receipt.issue(
            ReceiptKind.ACCEPTED,
            signing_key=world.broker_key,
            signer=world.broker_cert,
            subject=subject,
            time=NOW,
            log_index=index,
        )
        leaf = auditlog.encode_leaf(
            NOW, auditlog.ReceiptRecorded(ReceiptKind.ACCEPTED, envelope_id, RECIPIENT, receipt.raw)
        )
        return [IssuedReceipt(RECIPIENT, receipt.raw, leaf)]

    new = NewEnvelope(
        envelope_id=envelope_id,
        envelope_hash=envelope_hash,
        sender_id=SENDER,
        sender_key_id=b"k" * 16,
        header=os.urandom(600),
        parts=(NewPart(0, 2368, b"d" * 32, os.urandom(2368)),),
        recipients=(RECIPIENT,),
        accepted_at=NOW,
        expires_at=NOW + 86_400,
        leaf=auditlog.encode_leaf(NOW, accepted),
    )
    await delivery.accept_envelope(new, issue)
    for kind, raw, from_states, to_state in (
        (ReceiptKind.DELIVERED, envelope.delivered, frozenset({InboxState.PENDING}), InboxState.DELIVERED),
        (ReceiptKind.VERIFIED, envelope.verified, OPEN_STATES, InboxState.VERIFIED),
    ):
        leaf = auditlog.encode_leaf(NOW, auditlog.ReceiptRecorded(kind, envelope_id, RECIPIENT, raw))
        await delivery.record_receipt(
            NewReceipt(envelope_id, RECIPIENT, str(kind), raw, NOW, from_states, to_state, leaf)
        )


@dataclass(frozen=True)
class PhaseResult:
    envelopes_per_second: float
    cpu_ms_per_envelope: float
    kernel_ms_per_envelope: float
    envelopes: int
    checkpoints: int


async def phase(
    world: Material, *, full: bool, concurrency: int, seconds: float, directory: Path
) -> PhaseResult:
    """Relay envelopes through a fresh database until all are done or `seconds` passed."""
    db = await Database.open(directory / "broker.sqlite3", now=NOW)
    audit = SqliteAuditLog(db) if full else LeafOnlyAuditLog(db)
    if not full:
        await LeafOnlyAuditLog.prepare(db)
    delivery = SqliteDeliveryStore(db, audit)
    queue = list(reversed(world.envelopes))
    done = 0
    checkpointer = None
    registry = CollectorRegistry()
    metrics = AuditMetrics(registry)
    if full:
        await audit.open_tree()
        signer = NoteSigner(ORIGIN, nacl.signing.SigningKey(_seed("log")))
        witnesses = WitnessClient((), audit, SystemClock(), metrics, timeout_seconds=1.0)
        checkpointer = Checkpointer(
            audit, origin=ORIGIN, signer=signer, clock=SystemClock(), interval_seconds=1,
            idle_seconds=3600, witnesses=witnesses, metrics=metrics,
        )  # fmt: skip
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while queue and time.perf_counter() < deadline:
            await _relay_one(delivery, world, queue.pop())
            done += 1

    async with aiohttp.ClientSession() as session:
        ticking = asyncio.create_task(checkpointer.run(session)) if checkpointer else None
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        if ticking is not None:
            ticking.cancel()
            await asyncio.gather(ticking, return_exceptions=True)
    checkpoints = int(registry.get_sample_value("casebridge_audit_checkpoints_total") or 0)
    await db.close()
    used = (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime)
    kernel = after.ru_stime - cpu.ru_stime
    per = 1000 / max(done, 1)
    return PhaseResult(done / elapsed, used * per, kernel * per, done, checkpoints)


async def compare(
    envelopes: int, concurrency: int, rounds: int, seconds: float
) -> list[tuple[PhaseResult, PhaseResult]]:
    """`rounds` pairs of (leaf only, full audit log), the order alternating from round to round."""
    world = material(envelopes)
    pairs = []
    with tempfile.TemporaryDirectory(prefix="casebridge-audit-relay-") as temp:
        for r in range(rounds):
            results: dict[bool, PhaseResult] = {}
            for full in (False, True) if r % 2 == 0 else (True, False):
                directory = Path(temp) / f"round-{r}-{'full' if full else 'leaf'}"
                directory.mkdir()
                os.sync()
                results[full] = await phase(
                    world, full=full, concurrency=concurrency, seconds=seconds, directory=directory
                )
            pairs.append((results[False], results[True]))
    return pairs
