"""Signed delivery receipts. Sans-I/O.

A receipt is a small signed record bound to one envelope (its hash and id), its sender and one
recipient. Each kind has its own signing context, so no signature can be replayed as another
kind (or as an envelope or certificate signature). Who may sign is fixed by the kind:

- accepted, expired: the broker (a certificate with the `broker` role);
- delivered, verified, rejected: the recipient agency itself.

Acknowledging, accepting or declining a case is a person's act and travels as an encrypted
referral message, never as a receipt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import nacl.signing

from protocol import codec
from protocol.certificate import (
    AGENCY_ID,
    SIGNED_LIMITS,
    AgencyCertificate,
    Role,
    join_signed,
    split_signed,
)
from protocol.errors import MalformedInput, UnsupportedVersion, VerificationError
from protocol.primitives import HASH_BYTES, KEY_ID_BYTES, equal, sign, verify

VERSION = 1
MAGIC = "CB-RCPT"
REASON_MAX = 64
_INT_MAX = 2**63 - 1


class ReceiptKind(StrEnum):
    ACCEPTED = "accepted"
    DELIVERED = "delivered"
    VERIFIED = "verified"
    REJECTED = "rejected"
    EXPIRED = "expired"

    @property
    def context(self) -> bytes:
        return f"casebridge/receipt-{self.value}-v1".encode() + b"\x00"

    @property
    def signed_by_broker(self) -> bool:
        return self in (ReceiptKind.ACCEPTED, ReceiptKind.EXPIRED)


class RejectReason(StrEnum):
    """Why a recipient refused an envelope (carried by `rejected` receipts)."""

    UNTRUSTED_SENDER = "untrusted_sender"
    BAD_SIGNATURE = "bad_signature"
    NOT_A_RECIPIENT = "not_a_recipient"
    DECRYPTION_FAILED = "decryption_failed"
    EXPIRED = "expired"
    REPLAYED = "replayed"
    MALFORMED = "malformed"
    POLICY = "policy"


@dataclass(frozen=True, slots=True)
class ReceiptSubject:
    """What a receipt is about: one envelope, its sender, one recipient."""

    envelope_hash: bytes
    envelope_id: bytes
    sender_id: str
    recipient_id: str


@dataclass(frozen=True, slots=True)
class Receipt:
    kind: ReceiptKind
    subject: ReceiptSubject
    signer_id: str
    signer_key_id: bytes
    time: int
    reason: RejectReason | None
    log_index: int | None
    raw: bytes = field(repr=False)
    body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @classmethod
    def issue(
        cls,
        kind: ReceiptKind,
        *,
        signing_key: nacl.signing.SigningKey,
        signer: AgencyCertificate,
        subject: ReceiptSubject,
        time: int,
        reason: RejectReason | None = None,
        log_index: int | None = None,
    ) -> Receipt:
        if bytes(signing_key.verify_key) != signer.signing_key:
            raise ValueError("signing key does not match the signer certificate")
        body = codec.encode(
            [
                MAGIC,
                VERSION,
                str(kind),
                subject.envelope_hash,
                subject.envelope_id,
                subject.sender_id,
                subject.recipient_id,
                signer.agency_id,
                signer.key_id,
                time,
                None if reason is None else str(reason),
                log_index,
            ]
        )
        signature = sign(signing_key, kind.context, body)
        raw = join_signed(body, signature)
        # Fields of the common shape (exact types, in range, consistent) decode from `raw` to
        # themselves, so the receipt is made from them; anything else is parsed back as before.
        receipt = _well_formed(kind, subject, signer, time, reason, log_index, raw, body, signature)
        if receipt is None:
            receipt = cls.parse(raw)
        _check_signer_rules(receipt, signer)
        return receipt

    @classmethod
    def parse(cls, data: bytes) -> Receipt:
        """Parse only; `verify_receipt` checks the signature and the binding."""
        body, signature = split_signed(data, "receipt")
        items = codec.array(codec.decode(body), "receipt", 12)
        codec.literal(items[0], "receipt.magic", MAGIC)
        if codec.int_(items[1], "receipt.version") != VERSION:
            raise UnsupportedVersion(reason=f"receipt version {items[1]}")
        try:
            kind = ReceiptKind(codec.str_(items[2], "receipt.kind"))
            reason_raw = codec.optional_str(items[10], "receipt.reason", max_len=REASON_MAX)
            reason = None if reason_raw is None else RejectReason(reason_raw)
        except ValueError as e:
            raise MalformedInput(reason=f"receipt: unknown kind or reason ({e})") from e
        log_index = codec.optional_int(items[11], "receipt.log_index")
        if (kind is ReceiptKind.REJECTED) != (reason is not None):
            raise MalformedInput(reason="receipt: a reason goes with rejected receipts only")
        if (kind is ReceiptKind.ACCEPTED) != (log_index is not None):
            raise MalformedInput(reason="receipt: a log index goes with accepted receipts only")
        return cls(
            kind=kind,
            subject=ReceiptSubject(
                envelope_hash=codec.bin_(items[3], "receipt.envelope_hash", HASH_BYTES),
                envelope_id=codec.bin_(items[4], "receipt.envelope_id", 16),
                sender_id=codec.str_(items[5], "receipt.sender_id", pattern=AGENCY_ID),
                recipient_id=codec.str_(items[6], "receipt.recipient_id", pattern=AGENCY_ID),
            ),
            signer_id=codec.str_(items[7], "receipt.signer_id", pattern=AGENCY_ID),
            signer_key_id=codec.bin_(items[8], "receipt.signer_key_id", KEY_ID_BYTES),
            time=codec.int_(items[9], "receipt.time"),
            reason=reason,
            log_index=log_index,
            raw=bytes(data),
            body=body,
            signature=signature,
        )


def _well_formed(
    kind: ReceiptKind,
    subject: ReceiptSubject,
    signer: AgencyCertificate,
    time: int,
    reason: RejectReason | None,
    log_index: int | None,
    raw: bytes,
    body: bytes,
    signature: bytes,
) -> Receipt | None:
    """The receipt `Receipt.parse(raw)` gives, built from the fields just encoded into `raw`, if
    they are of the shape it accepts; None on any doubt."""
    if not (
        type(kind) is ReceiptKind
        and (reason is None or type(reason) is RejectReason)
        and (log_index is None or (type(log_index) is int and 0 <= log_index <= _INT_MAX))
        and (kind is ReceiptKind.REJECTED) == (reason is not None)
        and (kind is ReceiptKind.ACCEPTED) == (log_index is not None)
        and type(subject.envelope_hash) is bytes
        and len(subject.envelope_hash) == HASH_BYTES
        and type(subject.envelope_id) is bytes
        and len(subject.envelope_id) == 16
        and type(subject.sender_id) is str
        and AGENCY_ID.fullmatch(subject.sender_id)
        and type(subject.recipient_id) is str
        and AGENCY_ID.fullmatch(subject.recipient_id)
        and type(signer.agency_id) is str
        and AGENCY_ID.fullmatch(signer.agency_id)
        and type(signer.key_id) is bytes
        and len(signer.key_id) == KEY_ID_BYTES
        and type(time) is int
        and 0 <= time <= _INT_MAX
        and len(raw) <= SIGNED_LIMITS.max_bytes
    ):
        return None
    return Receipt(
        kind=kind,
        subject=ReceiptSubject(
            subject.envelope_hash, subject.envelope_id, subject.sender_id, subject.recipient_id
        ),
        signer_id=signer.agency_id,
        signer_key_id=signer.key_id,
        time=time,
        reason=reason,
        log_index=log_index,
        raw=raw,
        body=body,
        signature=signature,
    )


def _check_signer_rules(receipt: Receipt, signer: AgencyCertificate) -> None:
    if receipt.signer_id != signer.agency_id or not equal(receipt.signer_key_id, signer.key_id):
        raise VerificationError(reason="receipt signer does not match the certificate")
    if receipt.kind.signed_by_broker:
        if not signer.has_role(Role.BROKER):
            raise VerificationError(reason=f"{receipt.kind} receipt not signed by a broker")
    elif receipt.signer_id != receipt.subject.recipient_id or not signer.has_role(Role.AGENCY):
        raise VerificationError(reason=f"{receipt.kind} receipt not signed by the recipient")


def verify_receipt(
    data: bytes | Receipt,
    *,
    signer: AgencyCertificate,
    subject: ReceiptSubject | None = None,
    kind: ReceiptKind | None = None,
) -> Receipt:
    """Verify a receipt signed by `signer` (a certificate the caller verified through
    `TrustStore`) and, when given, that it is about `subject` and of `kind`."""
    receipt = data if isinstance(data, Receipt) else Receipt.parse(data)
    if kind is not None and receipt.kind is not kind:
        raise VerificationError(reason=f"expected a {kind} receipt, got {receipt.kind}")
    _check_signer_rules(receipt, signer)
    verify(signer.signing_key, receipt.kind.context, receipt.body, receipt.signature, what="receipt")
    if subject is not None:
        s = receipt.subject
        if (
            not equal(s.envelope_hash, subject.envelope_hash)
            or not equal(s.envelope_id, subject.envelope_id)
            or s.sender_id != subject.sender_id
            or s.recipient_id != subject.recipient_id
        ):
            raise VerificationError(reason="receipt is about another envelope or recipient")
    return receipt
