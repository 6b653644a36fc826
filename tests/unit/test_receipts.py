"""Signed receipts: each kind issues and verifies, and negative class 9 (forged receipt).

A receipt is bound to one envelope (hash and id), its sender and one recipient, and signed
under a context of its own kind by the party the kind names: the broker for accepted and
expired, the recipient for delivered, verified and rejected.
"""

from __future__ import annotations

from typing import Any

import pytest

from protocol import codec
from protocol.certificate import join_signed, split_signed
from protocol.errors import MalformedInput, UnsupportedVersion, VerificationError
from protocol.primitives import sign
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, RejectReason, verify_receipt
from tests.protocol_fixtures import (
    BROKER,
    NOW,
    RECIPIENT_B,
    RECIPIENT_C,
    SENDER,
    Agency,
    SealedEnvelope,
    opener_for,
    refused,
    seal,
)

B, C = RECIPIENT_B, RECIPIENT_C
ENV = seal(SENDER, [B, C]).parsed
OTHER = seal(SENDER, [B, C]).parsed
SUBJECT_B = ReceiptSubject(ENV.envelope_hash, ENV.envelope_id, SENDER.id, B.id)
SUBJECT_C = ReceiptSubject(ENV.envelope_hash, ENV.envelope_id, SENDER.id, C.id)

# kind -> (signer, extra arguments it needs)
ISSUERS: dict[ReceiptKind, tuple[Agency, dict[str, Any]]] = {
    ReceiptKind.ACCEPTED: (BROKER, {"log_index": 41}),
    ReceiptKind.DELIVERED: (B, {}),
    ReceiptKind.VERIFIED: (B, {}),
    ReceiptKind.REJECTED: (B, {"reason": RejectReason.DECRYPTION_FAILED}),
    ReceiptKind.EXPIRED: (BROKER, {}),
}


def issue(kind: ReceiptKind, subject: ReceiptSubject = SUBJECT_B, **extra: Any) -> Receipt:
    signer, needed = ISSUERS[kind]
    return Receipt.issue(
        kind,
        signing_key=signer.signing_key,
        signer=signer.cert,
        subject=subject,
        time=NOW,
        **(needed | extra),
    )


def body_items(kind: ReceiptKind, subject: ReceiptSubject, signer: Agency, **fields: Any) -> list[Any]:
    items = [
        "CB-RCPT",
        1,
        str(kind),
        subject.envelope_hash,
        subject.envelope_id,
        subject.sender_id,
        subject.recipient_id,
        signer.id,
        signer.cert.key_id,
        NOW,
        fields.get("reason"),
        fields.get("log_index"),
    ]
    return items


def hand_signed(items: list[Any], key_of: Agency, context: bytes) -> bytes:
    body = codec.encode(items)
    return join_signed(body, sign(key_of.signing_key, context, body))


@pytest.mark.parametrize("kind", list(ReceiptKind))
def test_each_kind_issues_and_verifies(kind: ReceiptKind) -> None:
    signer, _ = ISSUERS[kind]
    receipt = issue(kind)
    assert receipt.kind is kind
    assert receipt.subject == SUBJECT_B
    assert receipt.signer_id == signer.id
    assert receipt.signer_key_id == signer.cert.key_id
    assert Receipt.parse(receipt.raw) == receipt
    assert verify_receipt(receipt.raw, signer=signer.cert, subject=SUBJECT_B, kind=kind) == receipt
    assert verify_receipt(receipt, signer=signer.cert) == receipt


def test_accepted_receipt_carries_its_log_index_and_rejected_its_reason() -> None:
    assert issue(ReceiptKind.ACCEPTED).log_index == 41
    assert issue(ReceiptKind.ACCEPTED).reason is None
    rejected = issue(ReceiptKind.REJECTED, reason=RejectReason.REPLAYED)
    assert rejected.reason is RejectReason.REPLAYED
    assert rejected.log_index is None


@pytest.mark.parametrize(
    ("kind", "extra"),
    [
        (ReceiptKind.REJECTED, {"reason": None}),
        (ReceiptKind.VERIFIED, {"reason": RejectReason.POLICY}),
        (ReceiptKind.ACCEPTED, {"log_index": None}),
        (ReceiptKind.EXPIRED, {"log_index": 3}),
        (ReceiptKind.DELIVERED, {"log_index": 3}),
    ],
    ids=[
        "rejected-without-reason",
        "reason-on-verified",
        "accepted-without-index",
        "index-on-expired",
        "index-on-delivered",
    ],
)
def test_reason_and_log_index_go_with_their_kinds_only(kind: ReceiptKind, extra: dict[str, Any]) -> None:
    with refused(MalformedInput):
        issue(kind, **extra)


def test_issue_refuses_a_key_that_is_not_the_signers() -> None:
    with pytest.raises(ValueError, match="does not match"):
        Receipt.issue(
            ReceiptKind.VERIFIED, signing_key=C.signing_key, signer=B.cert, subject=SUBJECT_B, time=NOW
        )


@pytest.mark.parametrize(
    ("index", "value", "error"),
    [
        (0, "CB-RCPT2", MalformedInput),
        (1, 2, UnsupportedVersion),
        (1, "1", MalformedInput),
        (2, "received", MalformedInput),
        (3, bytes(31), MalformedInput),
        (4, bytes(17), MalformedInput),
        (5, "th-dsdw", MalformedInput),
        (6, "", MalformedInput),
        (8, bytes(15), MalformedInput),
        (9, -1, MalformedInput),
        (10, "because", MalformedInput),
        (11, -5, MalformedInput),
    ],
)
def test_parse_refuses_malformed_fields(index: int, value: Any, error: type[Exception]) -> None:
    # Reason and log index are checked on the kinds that carry them.
    kind = {10: ReceiptKind.REJECTED, 11: ReceiptKind.ACCEPTED}.get(index, ReceiptKind.VERIFIED)
    items = body_items(kind, SUBJECT_B, B)
    items[10] = "policy" if kind is ReceiptKind.REJECTED else None
    items[11] = 1 if kind is ReceiptKind.ACCEPTED else None
    items[index] = value
    with refused(error):
        Receipt.parse(hand_signed(items, B, kind.context))


def test_parse_refuses_wrong_shapes() -> None:
    items = body_items(ReceiptKind.VERIFIED, SUBJECT_B, B)
    for bad in (items[:11], [*items, None]):
        with refused(MalformedInput):
            Receipt.parse(hand_signed(bad, B, ReceiptKind.VERIFIED.context))
    body, signature = split_signed(issue(ReceiptKind.VERIFIED).raw, "receipt")
    with refused(MalformedInput):
        Receipt.parse(join_signed(body, signature[:63]))
    with refused(MalformedInput):
        Receipt.parse(issue(ReceiptKind.VERIFIED).raw + b"\x00")


# --- negative class 9: forged receipt --------------------------------------------------------


def test_forged_receipt_signed_with_the_wrong_key_is_refused() -> None:
    raw = hand_signed(body_items(ReceiptKind.VERIFIED, SUBJECT_B, B), C, ReceiptKind.VERIFIED.context)
    with refused(VerificationError):
        verify_receipt(raw, signer=B.cert, subject=SUBJECT_B)


def test_forged_verified_receipt_signed_by_the_broker_is_refused() -> None:
    with refused(VerificationError):
        Receipt.issue(
            ReceiptKind.VERIFIED,
            signing_key=BROKER.signing_key,
            signer=BROKER.cert,
            subject=SUBJECT_B,
            time=NOW,
        )
    raw = hand_signed(
        body_items(ReceiptKind.VERIFIED, SUBJECT_B, BROKER), BROKER, ReceiptKind.VERIFIED.context
    )
    with refused(VerificationError):
        verify_receipt(raw, signer=BROKER.cert, subject=SUBJECT_B)


@pytest.mark.parametrize("kind", [ReceiptKind.ACCEPTED, ReceiptKind.EXPIRED])
def test_forged_broker_receipt_signed_by_an_agency_is_refused(kind: ReceiptKind) -> None:
    log_index = 7 if kind is ReceiptKind.ACCEPTED else None
    raw = hand_signed(body_items(kind, SUBJECT_B, B, log_index=log_index), B, kind.context)
    with refused(VerificationError):
        verify_receipt(raw, signer=B.cert, subject=SUBJECT_B)
    with refused(VerificationError):
        Receipt.issue(
            kind, signing_key=B.signing_key, signer=B.cert, subject=SUBJECT_B, time=NOW, log_index=log_index
        )


def test_receipt_for_another_envelope_is_refused() -> None:
    receipt = issue(ReceiptKind.VERIFIED)
    for subject in (
        ReceiptSubject(OTHER.envelope_hash, ENV.envelope_id, SENDER.id, B.id),
        ReceiptSubject(ENV.envelope_hash, OTHER.envelope_id, SENDER.id, B.id),
        ReceiptSubject(ENV.envelope_hash, ENV.envelope_id, C.id, B.id),
    ):
        with refused(VerificationError):
            verify_receipt(receipt.raw, signer=B.cert, subject=subject)


def test_one_recipients_receipt_presented_as_anothers_is_refused() -> None:
    receipt = issue(ReceiptKind.VERIFIED)
    with refused(VerificationError):
        verify_receipt(receipt.raw, signer=C.cert, subject=SUBJECT_C)
    with refused(VerificationError):
        verify_receipt(receipt.raw, signer=B.cert, subject=SUBJECT_C)
    # B signing a receipt in C's name is refused when made and when checked.
    with refused(VerificationError):
        Receipt.issue(
            ReceiptKind.VERIFIED, signing_key=B.signing_key, signer=B.cert, subject=SUBJECT_C, time=NOW
        )
    raw = hand_signed(body_items(ReceiptKind.VERIFIED, SUBJECT_C, B), B, ReceiptKind.VERIFIED.context)
    with refused(VerificationError):
        verify_receipt(raw, signer=B.cert)


def test_envelope_signature_replayed_as_a_receipt_signature_is_refused() -> None:
    receipt = issue(ReceiptKind.VERIFIED)
    with refused(VerificationError):
        verify_receipt(join_signed(receipt.body, ENV.signature), signer=SENDER.cert)
    with refused(VerificationError):
        verify_receipt(join_signed(receipt.body, ENV.signature), signer=B.cert)
    # And the other way: a receipt signature in place of the envelope's.
    pre, post, _ = codec.decode(ENV.raw)
    header = codec.encode([pre, post, receipt.signature])
    with refused(VerificationError):
        opener_for(SealedEnvelope(header, b""), B)


def test_receipt_of_another_kind_is_refused() -> None:
    delivered = issue(ReceiptKind.DELIVERED)
    with refused(VerificationError):
        verify_receipt(delivered.raw, signer=B.cert, subject=SUBJECT_B, kind=ReceiptKind.VERIFIED)
    # The kind is bound by its own signing context: a delivered signature on a body relabelled
    # "verified" does not verify.
    body = codec.encode(body_items(ReceiptKind.VERIFIED, SUBJECT_B, B))
    with refused(VerificationError):
        verify_receipt(
            join_signed(body, sign(B.signing_key, ReceiptKind.DELIVERED.context, body)), signer=B.cert
        )


def test_receipt_signer_fields_must_match_the_certificate() -> None:
    items = body_items(ReceiptKind.VERIFIED, SUBJECT_B, B)
    items[8] = C.cert.key_id
    with refused(VerificationError):
        verify_receipt(hand_signed(items, B, ReceiptKind.VERIFIED.context), signer=B.cert)
