"""Audit logs for the officers' tools tests, built with the real leaf format and real signatures.

`LogBuilder` appends leaves made with `protocol.auditlog.encode_leaf`, keeps the RFC 6962 tree
(`protocol.merkle.MemoryTree`), signs checkpoints with `protocol.note` (log key and witness
cosignatures) and writes export directories in the `casebridge audit export --raw` format, so a
test can then damage exactly one thing. `Parties` is a small real PKI (two national roots,
agencies with Thai and Lao names, a broker) from fixed seeds; `referral_life` logs one referral's
whole life with receipts signed by the real keys. Nothing here stands in for a CaseBridge
component.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import nacl.signing

from keys import lifecycle
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from protocol import auditlog
from protocol.certificate import AgencyCertificate, Role, RootCertificate, join_signed
from protocol.merkle import MemoryTree, leaf_hash
from protocol.note import (
    SIG_COSIGNATURE_V1,
    Checkpoint,
    NoteSigner,
    add_signatures,
    cosign_checkpoint,
    sign_checkpoint,
)
from protocol.primitives import seeded_random
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z
ORIGIN = "casebridge.th-casebridge/audit"
THAI_NAME = "กองบังคับการปราบปรามการกระทำความผิดเกี่ยวกับการค้ามนุษย์"
LAO_NAME = "ກະຊວງແຮງງານ ແລະ ສະຫວັດດີການສັງຄົມ"


def seed_key(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(f"casebridge audit tests {label}".encode()).digest())


LOG = NoteSigner(ORIGIN, seed_key("log"))
WITNESS_LA = NoteSigner("witness.la-auditor.example", seed_key("witness-la"), SIG_COSIGNATURE_V1)
WITNESS_TH = NoteSigner("witness.th-auditor.example", seed_key("witness-th"), SIG_COSIGNATURE_V1)


def operator_action(time: int, n: int) -> bytes:
    return auditlog.encode_leaf(
        time, auditlog.OperatorAction("TH-OPERATOR", "rotate_keys", (f"TH-AGENCY{n}",))
    )


@dataclass
class LogBuilder:
    """Leaves in order, their tree, and signed checkpoints over any prefix."""

    leaves: list[bytes] = field(default_factory=list)
    tree: MemoryTree = field(default_factory=MemoryTree)
    time: int = T0

    def add(self, fields: auditlog.LeafFields, *, at: int | None = None) -> int:
        self.time = at if at is not None else self.time + 1
        return self.add_raw(auditlog.encode_leaf(self.time, fields))

    def add_raw(self, leaf: bytes) -> int:
        self.leaves.append(leaf)
        return self.tree.append_entry(leaf)

    def fill(self, count: int) -> None:
        for n in range(count):
            self.time += 1
            self.add_raw(operator_action(self.time, n))

    def checkpoint(
        self, size: int | None = None, *, signer: NoteSigner = LOG, cosigners: tuple[NoteSigner, ...] = ()
    ) -> bytes:
        size = len(self.leaves) if size is None else size
        note = sign_checkpoint(Checkpoint(signer.vkey.name, size, self.tree.root(size)), signer)
        lines = [cosign_checkpoint(note, w, T0 + 10**6) for w in cosigners]
        return add_signatures(note, lines) if lines else note

    def export(
        self,
        directory: Path,
        *,
        note: bytes | None = None,
        leaves: list[bytes] | None = None,
        hashes: bool = True,
    ) -> Path:
        """Write an export directory (`checkpoint`, `entries`, and `hashes` unless told not to)."""
        directory.mkdir(parents=True, exist_ok=True)
        written = self.leaves if leaves is None else leaves
        (directory / "checkpoint").write_bytes(note if note is not None else self.checkpoint())
        (directory / "entries").write_bytes(b"".join(len(x).to_bytes(2, "big") + x for x in written))
        if hashes:
            (directory / "hashes").write_bytes(b"".join(leaf_hash(x) for x in self.leaves))
        return directory


@dataclass
class Parties:
    """National roots TH and LA, agencies TH-ATPD (Thai name) and LA-MOLSW (Lao name), a broker."""

    roots: dict[str, RootIdentity]
    agencies: dict[str, AgencyIdentity]
    broker: BrokerIdentity

    @classmethod
    def create(cls, now: int = T0) -> Parties:
        rng = seeded_random(b"casebridge audit tests")
        roots = {
            "TH": lifecycle.create_root("TH", "ศูนย์ต่อต้านการค้ามนุษย์", now, rng=rng),
            "LA": lifecycle.create_root("LA", "ຄະນະກຳມະການແຫ່ງຊາດ", now, rng=rng),
        }
        agencies = {}
        for agency_id, name in (("TH-ATPD", THAI_NAME), ("LA-MOLSW", LAO_NAME)):
            agency = lifecycle.create_agency(agency_id, name, now, rng=rng)
            roots[agency_id[:2]], cert = lifecycle.certify(
                roots[agency_id[:2]], lifecycle.agency_request(agency), (Role.AGENCY,), now
            )
            agencies[agency_id] = lifecycle.import_certificate(
                agency, cert.raw, roots[agency_id[:2]].certificate, now
            )
        broker = lifecycle.create_broker("TH-CASEBRIDGE", "CaseBridge broker", rng=rng)
        roots["TH"], cert = lifecycle.certify(
            roots["TH"], lifecycle.broker_request(broker), (Role.BROKER,), now
        )
        broker = lifecycle.import_broker_certificate(broker, cert.raw, roots["TH"].certificate, now)
        return cls(roots, agencies, broker)

    @property
    def root_certificates(self) -> list[RootCertificate]:
        return [r.certificate for r in self.roots.values()]


def register_parties(log: LogBuilder, parties: Parties) -> None:
    """The leaves a broker writes at start and enrolment: roots and agency certificates."""
    for root in parties.roots.values():
        cert = root.certificate
        log.add(auditlog.RootConfigured(cert.country, cert.key_id, cert.raw))
    for agency in parties.agencies.values():
        assert agency.certificate is not None
        c = agency.certificate
        log.add(auditlog.CertificateRegistered(c.agency_id, c.key_id, c.raw, auditlog.OFFLINE))


def referral_life(
    log: LogBuilder, parties: Parties, *, envelope_id: bytes = b"\x42" * 16, forge_delivery: bool = False
) -> bytes:
    """An envelope TH-ATPD -> LA-MOLSW: accepted, accepted receipt, delivered, verified, purged.
    With `forge_delivery`, the delivered receipt is signed by a key that is not LA-MOLSW's."""
    sender, recipient, broker = parties.agencies["TH-ATPD"], parties.agencies["LA-MOLSW"], parties.broker
    assert sender.certificate is not None
    assert recipient.certificate is not None
    assert broker.certificate is not None
    envelope_hash = hashlib.sha256(envelope_id).digest()
    accepted = log.add(
        auditlog.EnvelopeAccepted(
            envelope_id,
            envelope_hash,
            "TH-ATPD",
            sender.key_id,
            ("LA-MOLSW",),
            900,
            (4096, 1 << 20),
            log.time + 14 * 86400,
            bytes(64),
        )
    )
    subject = ReceiptSubject(envelope_hash, envelope_id, "TH-ATPD", "LA-MOLSW")

    def receipt(
        kind: ReceiptKind, key: nacl.signing.SigningKey, cert: AgencyCertificate, index: int | None
    ) -> None:
        made = Receipt.issue(
            kind, signing_key=key, signer=cert, subject=subject, time=log.time + 1, log_index=index
        )
        raw = made.raw
        if forge_delivery and kind is ReceiptKind.DELIVERED:
            raw = join_signed(made.body, seed_key("impostor").sign(kind.context + made.body).signature)
        log.add(auditlog.ReceiptRecorded(kind, envelope_id, "LA-MOLSW", raw))

    receipt(ReceiptKind.ACCEPTED, broker.receipt_key, broker.certificate, accepted)
    receipt(ReceiptKind.DELIVERED, recipient.signing_key, recipient.certificate, None)
    receipt(ReceiptKind.VERIFIED, recipient.signing_key, recipient.certificate, None)
    log.add(auditlog.EnvelopePurged(envelope_id, envelope_hash, 4096 + (1 << 20)))
    return envelope_id
