"""A real PKI for broker tests, made with `keys.lifecycle` as national authorities would.

Two national roots (TH, LA); agencies with Thai and Lao names; an operator; the broker's own
identity certified with the broker role; revocation through the root. Everything is valid from
the `now` the PKI is made at, so it works with a test clock and with the real one.
Also: sealing real envelopes (`seal`) and framing them as the envelope route expects (`frame`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from keys import lifecycle
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from protocol.certificate import RevocationList, Role, RootCertificate
from protocol.envelope import AttachmentInfo, EnvelopeHeader, EnvelopeSealer
from protocol.primitives import Random, system_random
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, RejectReason

TH_ROOT_NAME = "ศูนย์ปฏิบัติการต่อต้านการค้ามนุษย์แห่งชาติ"
LA_ROOT_NAME = "ຄະນະກຳມະການແຫ່ງຊາດ ຕ້ານການຄ້າມະນຸດ"
REFERRAL = '{"subject": "ส่งต่อกรณี นางสาว สมหญิง ใจดี", "ຜູ້ເຄາະຮ້າຍ": "ນາງ ສົມພອນ ແກ້ວມະນີ"}'.encode()

# The agencies every broker test can use, by id: (name, roles).
AGENCIES: dict[str, tuple[str, tuple[Role, ...]]] = {
    "TH-ATPD": ("กองบังคับการปราบปรามการกระทำความผิดเกี่ยวกับการค้ามนุษย์", (Role.AGENCY,)),
    "TH-DSDW": ("กรมพัฒนาสังคมและสวัสดิการ", (Role.AGENCY,)),
    "LA-MOLSW": ("ກະຊວງແຮງງານ ແລະ ສະຫວັດດີການສັງຄົມ", (Role.AGENCY,)),
    "LA-LWU": ("ສູນກາງສະຫະພັນແມ່ຍິງລາວ", (Role.AGENCY,)),
    "TH-OPERATOR": ("ผู้ดูแลระบบ CaseBridge", (Role.OPERATOR,)),
    "LA-AUDITOR": ("ຜູ້ກວດສອບ", (Role.AUDITOR,)),
}
BROKER_ID = "TH-CASEBRIDGE"


@dataclass
class Pki:
    """Roots, agencies and a broker, all certified at `now`."""

    now: int
    roots: dict[str, RootIdentity] = field(default_factory=dict)
    agencies: dict[str, AgencyIdentity] = field(default_factory=dict)
    broker: BrokerIdentity | None = None

    @classmethod
    def create(cls, now: int) -> Pki:
        pki = cls(now)
        pki.roots["TH"] = lifecycle.create_root("TH", TH_ROOT_NAME, now)
        pki.roots["LA"] = lifecycle.create_root("LA", LA_ROOT_NAME, now)
        for agency_id, (name, roles) in AGENCIES.items():
            pki.agencies[agency_id] = pki.new_agency(agency_id, name, roles)
        broker = lifecycle.create_broker(BROKER_ID, "CaseBridge broker")
        cert = pki.certify(lifecycle.broker_request(broker), (Role.BROKER,), "TH")
        pki.broker = lifecycle.import_broker_certificate(broker, cert, pki.root_cert("TH"), now)
        return pki

    def root_cert(self, country: str) -> RootCertificate:
        return self.roots[country].certificate

    def certify(self, request: bytes, roles: Sequence[Role], country: str, *, valid_days: int = 365) -> bytes:
        root, cert = lifecycle.certify(self.roots[country], request, roles, self.now, valid_days)
        self.roots[country] = root
        return cert.raw

    def new_agency(self, agency_id: str, name: str, roles: Sequence[Role] = (Role.AGENCY,)) -> AgencyIdentity:
        agency = lifecycle.create_agency(agency_id, name, self.now)
        cert = self.certify(lifecycle.agency_request(agency), roles, agency_id[:2])
        return lifecycle.import_certificate(agency, cert, self.root_cert(agency_id[:2]), self.now)

    def __getitem__(self, agency_id: str) -> AgencyIdentity:
        return self.agencies[agency_id]

    def broker_identity(self) -> BrokerIdentity:
        if self.broker is None:
            raise AssertionError("the PKI was made without a broker")
        return self.broker

    def revoke(self, agency_id: str, revoked_at: int, reason: str = "key compromised") -> RevocationList:
        """Revoke an agency's signing key; returns the root's new revocation list."""
        country = agency_id[:2]
        root, crl = lifecycle.revoke(
            self.roots[country], self[agency_id].key_id, revoked_at, reason, self.now
        )
        self.roots[country] = root
        return crl

    def write_roots(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = []
        for country, root in sorted(self.roots.items()):
            path = directory / f"{country.lower()}-root.cert"
            path.write_bytes(root.certificate.raw)
            paths.append(path)
        return paths


@dataclass(frozen=True, slots=True)
class Sealed:
    """An envelope as a sender uploads it."""

    header: bytes
    parts: tuple[bytes, ...]

    @property
    def parsed(self) -> EnvelopeHeader:
        return EnvelopeHeader.parse(self.header)

    @property
    def envelope_id(self) -> bytes:
        return self.parsed.envelope_id

    @property
    def body(self) -> bytes:
        return frame(self.header, self.parts)


def frame(header: bytes, parts: Sequence[bytes]) -> bytes:
    """`u32be(len(header)) || header || parts...`: the envelope route's body."""
    return len(header).to_bytes(4, "big") + header + b"".join(parts)


def seal(
    sender: AgencyIdentity,
    recipients: Sequence[AgencyIdentity],
    now: int,
    *,
    body: bytes = REFERRAL,
    attachments: Sequence[tuple[str, bytes]] = (),
    ttl_seconds: int = 14 * 86400,
    rng: Random = system_random,
) -> Sealed:
    """Seal a referral with the real sealer; attachments are (file name, bytes)."""
    if sender.certificate is None:
        raise AssertionError("the sender is not certified")
    sealer = EnvelopeSealer(
        sender=sender.certificate,
        signing_key=sender.signing_key,
        recipients=[r.current_encryption_key(now).statement for r in recipients],
        content_type="application/json",
        body=body,
        attachments=[AttachmentInfo(name, "application/pdf", len(data)) for name, data in attachments],
        now=now,
        ttl_seconds=ttl_seconds,
        rng=rng,
    )
    parts = [sealer.manifest_ciphertext()]
    for i, (_, data) in enumerate(attachments):
        encryptor = sealer.attachment(i)
        parts.append(b"".join([*encryptor.update(data), *encryptor.finalize()]))
    return Sealed(sealer.finish().raw, tuple(parts))


def recipient_receipt(
    recipient: AgencyIdentity,
    sealed: Sealed,
    kind: ReceiptKind,
    now: int,
    *,
    reason: RejectReason | None = None,
) -> bytes:
    """A delivered, verified or rejected receipt signed by `recipient`, as its client makes it."""
    if recipient.certificate is None:
        raise AssertionError("the recipient is not certified")
    header = sealed.parsed
    subject = ReceiptSubject(header.envelope_hash, header.envelope_id, header.sender_id, recipient.agency_id)
    receipt = Receipt.issue(
        kind,
        signing_key=recipient.signing_key,
        signer=recipient.certificate,
        subject=subject,
        time=now,
        reason=reason,
    )
    return receipt.raw
