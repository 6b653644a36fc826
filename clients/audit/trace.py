"""The whole life of one referral in the audit log, each step proven.

For an envelope id: its acceptance, each receipt (accepted, delivered, verified, rejected,
expired) and its purge, in log order. Each step is proven in the log: from a live broker by the
inclusion proof the broker gives, checked against a verified checkpoint (and by the recomputed
tree for the leaves the verification streamed); from an export by recomputing the whole tree.
Each receipt is verified against its signer's certificate as logged, chained to pinned roots
(`registry`), and must be about the logged envelope (hash, id, sender, one of its recipients).

Invariants: the trace is `ok` only if the log verified, at least one leaf names the envelope,
every inclusion proof verified, the broker listed exactly the leaves the stream found, and every
receipt verified. The number of leaves kept is bounded (`MAX_TRACE_LEAVES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clients.audit.broker_log import BrokerAuditLog, EnvelopeEntries
from clients.audit.leaf_records import LeafRecord, parse_leaf
from clients.audit.policy import LogPolicy, Problem, ProblemKind
from clients.audit.registry import CertificateRegistry
from clients.audit.sources import LogSource
from clients.audit.tree_check import Observer
from clients.audit.trusted_state import TrustedState
from clients.audit.verifier import Progress, Verification, verify_log
from clients.cli_output import when
from protocol import auditlog
from protocol.certificate import RootCertificate
from protocol.errors import CaseBridgeError, MalformedInput, VerificationError
from protocol.merkle import leaf_hash, verify_inclusion
from protocol.receipt import ReceiptKind, ReceiptSubject, verify_receipt
from protocol.tlog_proof import TlogProof, verify_tlog_proof

MAX_TRACE_LEAVES = 4096


@dataclass(frozen=True, slots=True)
class TraceStep:
    """One leaf of the referral's life: what it says and how it was proven."""

    record: LeafRecord
    summary: str
    proof: str


@dataclass(frozen=True, slots=True)
class Trace:
    envelope_id: bytes
    verification: Verification
    steps: tuple[TraceStep, ...]
    problems: tuple[Problem, ...]
    pending: int

    @property
    def ok(self) -> bool:
        return self.verification.ok and not self.problems and bool(self.steps)

    @property
    def all_problems(self) -> tuple[Problem, ...]:
        return (*self.verification.problems, *self.problems)


class EnvelopeLeaves:
    """An observer keeping the leaves that name one envelope."""

    def __init__(self, envelope_id: bytes) -> None:
        self.envelope_id = envelope_id
        self.records: dict[int, LeafRecord] = {}

    def observe(self, record: LeafRecord) -> None:
        if record.envelope_id == self.envelope_id and len(self.records) < MAX_TRACE_LEAVES:
            self.records[record.index] = record


def _check_listing(
    envelope_id: bytes,
    answer: EnvelopeEntries,
    verification: Verification,
    seen: dict[int, LeafRecord],
    problems: list[Problem],
) -> tuple[dict[int, LeafRecord], int]:
    """Check the broker's listing for the envelope: each proof, and agreement with the stream."""
    cp = verification.checkpoint
    assert cp is not None
    if answer.size != cp.size:
        problems.append(
            Problem(ProblemKind.INCLUSION, f"the broker says size {answer.size}, its checkpoint {cp.size}")
        )
    proven: dict[int, LeafRecord] = {}
    pending = 0
    for entry in answer.entries:
        what = f"leaf {entry.index} ({entry.kind})"
        if entry.proof is None:
            if entry.index < cp.size:
                problems.append(Problem(ProblemKind.INCLUSION, f"{what}: no inclusion proof", entry.index))
            pending += 1
            continue
        try:
            verify_inclusion(leaf_hash(entry.leaf), entry.index, cp.size, entry.proof, cp.root_hash)
            record = parse_leaf(entry.index, entry.leaf)
        except (VerificationError, MalformedInput) as e:
            problems.append(Problem(ProblemKind.INCLUSION, f"{what}: {e.reason}", entry.index))
            continue
        if record.envelope_id != envelope_id:
            problems.append(
                Problem(ProblemKind.INCLUSION, f"{what} does not name this envelope", entry.index)
            )
            continue
        proven[entry.index] = record
    streamed = range(verification.start, verification.start + verification.checked)
    for index in sorted(set(seen) - set(proven)):
        problems.append(
            Problem(
                ProblemKind.INCLUSION,
                f"leaf {index} ({seen[index].kind}) names the envelope but the broker did not list it",
                index,
            )
        )
    for index in sorted(i for i in set(proven) - set(seen) if i in streamed):
        problems.append(
            Problem(
                ProblemKind.INCLUSION, f"the broker listed leaf {index}, which the log does not hold", index
            )
        )
    return proven, pending


def _describe(record: LeafRecord, registry: CertificateRegistry) -> str:
    f = record.leaf.fields

    def named(agency: str) -> str:
        name = registry.name(agency)
        return f"{agency} ({name})" if name else agency

    if isinstance(f, auditlog.EnvelopeAccepted):
        to = ", ".join(named(r) for r in f.recipients)
        return (
            f"accepted from {named(f.sender_id)} to {to}; {len(f.part_lengths)} part(s), "
            f"{f.header_length + sum(f.part_lengths)} bytes; expires {when(f.expires_at)}"
        )
    if isinstance(f, auditlog.ReceiptRecorded):
        receipt = f.parsed()
        reason = f" ({receipt.reason})" if receipt.reason is not None else ""
        return f"{receipt.kind}{reason} for {named(f.recipient_id)}, signed by {named(receipt.signer_id)}"
    if isinstance(f, auditlog.EnvelopePurged):
        return f"purged: {f.bytes_purged} bytes of ciphertext deleted"
    return str(record.kind)


def _check_receipt(
    record: LeafRecord, accepted: LeafRecord | None, registry: CertificateRegistry
) -> Problem | None:
    receipt = record.receipt()
    assert receipt is not None
    what = f"leaf {record.index} ({receipt.kind} receipt for {receipt.subject.recipient_id})"
    f = accepted.leaf.fields if accepted is not None else None
    if accepted is None or not isinstance(f, auditlog.EnvelopeAccepted):
        return Problem(
            ProblemKind.RECEIPT, f"{what}: no envelope_accepted leaf for it in the log", record.index
        )
    if receipt.subject.recipient_id not in f.recipients:
        return Problem(ProblemKind.RECEIPT, f"{what}: not a recipient of the envelope", record.index)
    if receipt.kind is ReceiptKind.ACCEPTED and receipt.log_index != accepted.index:
        return Problem(
            ProblemKind.RECEIPT,
            f"{what}: names log index {receipt.log_index}, the acceptance is leaf {accepted.index}",
            record.index,
        )
    subject = ReceiptSubject(f.envelope_hash, f.envelope_id, f.sender_id, receipt.subject.recipient_id)
    try:
        verify_receipt(receipt, signer=registry.signer_of(receipt), subject=subject)
    except CaseBridgeError as e:
        return Problem(ProblemKind.RECEIPT, f"{what}: {e.reason}", record.index)
    return None


def _steps(
    records: Sequence[LeafRecord],
    proofs: dict[int, str],
    registry: CertificateRegistry,
    problems: list[Problem],
) -> list[TraceStep]:
    accepted = next((r for r in records if r.kind is auditlog.LeafKind.ENVELOPE_ACCEPTED), None)
    if accepted is not None:
        f = accepted.leaf.fields
        assert isinstance(f, auditlog.EnvelopeAccepted)
        try:
            registry.certified(f.sender_id, f.sender_key_id, accepted.time)
        except CaseBridgeError as e:
            problems.append(
                Problem(ProblemKind.RECEIPT, f"leaf {accepted.index}: sender {e.reason}", accepted.index)
            )
    steps = []
    for record in records:
        proof = proofs[record.index]
        if record.receipt() is not None:
            problem = _check_receipt(record, accepted, registry)
            if problem is not None:
                problems.append(problem)
                proof += "; receipt DOES NOT verify"
            else:
                proof += "; receipt signature verified"
        steps.append(TraceStep(record, _describe(record, registry), proof))
    return steps


async def trace_envelope(
    source: LogSource,
    policy: LogPolicy,
    roots: Sequence[RootCertificate],
    envelope_id: bytes,
    *,
    trusted: TrustedState | None,
    now: int,
    resume: bool = False,
    broker_certificate: bytes | None = None,
    registry: CertificateRegistry | None = None,
    observers: Sequence[Observer] = (),
    progress: Progress | None = None,
) -> Trace:
    """Trace `envelope_id` through `source` (a live broker or an export)."""
    registry = registry or CertificateRegistry(roots)
    if broker_certificate is not None:
        registry.add_certificate(broker_certificate)
    collector = EnvelopeLeaves(envelope_id)
    live = isinstance(source, BrokerAuditLog)
    answer = await source.envelope(envelope_id) if isinstance(source, BrokerAuditLog) else None
    resume = resume and trusted is not None
    if resume and trusted is not None:
        registry.add_leaves(trusted.trust_leaves)
    verification = await verify_log(
        source,
        policy,
        trusted=trusted,
        now=now,
        resume=resume,
        checkpoint_note=None if answer is None else answer.checkpoint,
        observers=(registry.observe, collector.observe, *observers),
        progress=progress,
    )
    problems: list[Problem] = []
    if verification.checkpoint is None:
        return Trace(envelope_id, verification, (), (), 0)
    found, pending = dict(collector.records), 0
    proofs = {index: "in the recomputed tree" for index in found}
    if answer is not None:
        proven, pending = _check_listing(envelope_id, answer, verification, collector.records, problems)
        for index, record in proven.items():
            found.setdefault(index, record)
            proofs[index] = f"inclusion proof verified to checkpoint size {verification.checkpoint.size}" + (
                " and in the recomputed tree" if index in proofs else ""
            )
    if not found:
        where = "the log" if live else "the export"
        problems.append(
            Problem(ProblemKind.INCLUSION, f"no leaf in {where} names envelope {envelope_id.hex()}")
        )
    records = [found[i] for i in sorted(found)]
    steps = _steps(records, proofs, registry, problems)
    return Trace(envelope_id, verification, tuple(steps), tuple(problems), pending)


def check_tlog_proof(data: bytes, trace: Trace, policy: LogPolicy) -> Problem | None:
    """Check the broker's c2sp.org/tlog-proof for the envelope's acceptance (to hand to others):
    the checkpoint under the policy, and the acceptance leaf at the proof's index under it."""
    accepted = next(
        (s.record for s in trace.steps if s.record.kind is auditlog.LeafKind.ENVELOPE_ACCEPTED), None
    )
    if accepted is None:
        return Problem(ProblemKind.INCLUSION, "no envelope_accepted leaf to check the tlog-proof against")
    try:
        proof = TlogProof.parse(data)
        if proof.index != accepted.index:
            raise VerificationError(
                reason=f"it is for leaf {proof.index}, the acceptance is leaf {accepted.index}"
            )
        signed = verify_tlog_proof(
            proof,
            accepted.leaf_hash,
            origin=policy.origin,
            log_key=policy.log_key,
            cosigners=policy.witness_keys,
        )
    except (MalformedInput, VerificationError) as e:
        return Problem(
            ProblemKind.INCLUSION, f"the broker's tlog-proof does not verify: {e.reason}", accepted.index
        )
    return policy.cosignature_problem(signed)
