"""Audit-log leaves (protocol.auditlog): every kind round-trips byte for byte, parsing is strict,
and the helpers that trace an envelope and name its agencies read the right fields."""

from __future__ import annotations

import dataclasses
import hashlib

import nacl.signing
import pytest

from protocol import auditlog, codec
from protocol.certificate import Revocation, RevocationList
from protocol.errors import InvalidField, MalformedInput, UnsupportedVersion
from protocol.note import SIG_COSIGNATURE_V1, NoteSigner
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, RejectReason
from tests.protocol_fixtures import BROKER, LA, LA_ATD, LA_MLSW, NOW, TH, TH_DSDW, seed

ENVELOPE_ID = bytes(range(16))
ENVELOPE_HASH = hashlib.sha256(b"header").digest()
CHECKPOINT_VKEY = NoteSigner("casebridge.th-broker/audit", nacl.signing.SigningKey(seed("log"))).vkey.encode()
WITNESS_VKEY = NoteSigner(
    "la.witness/ຜູ້ກວດສອບ", nacl.signing.SigningKey(seed("witness")), SIG_COSIGNATURE_V1
).vkey.encode()


def crl(entries: int) -> RevocationList:
    revoked = [Revocation(i.to_bytes(16, "big"), NOW, "ກະແຈຖືກເປີດເຜີຍ " * 4) for i in range(entries)]
    return RevocationList.issue(LA.root_key, LA.root, number=3, issued_at=NOW, entries=revoked)


def receipt(kind: ReceiptKind) -> Receipt:
    subject = ReceiptSubject(ENVELOPE_HASH, ENVELOPE_ID, TH_DSDW.id, LA_MLSW.id)
    if kind.signed_by_broker:
        log_index = 7 if kind is ReceiptKind.ACCEPTED else None
        return Receipt.issue(
            kind,
            signing_key=BROKER.signing_key,
            signer=BROKER.cert,
            subject=subject,
            time=NOW,
            log_index=log_index,
        )
    reason = RejectReason.POLICY if kind is ReceiptKind.REJECTED else None
    return Receipt.issue(
        kind, signing_key=LA_MLSW.signing_key, signer=LA_MLSW.cert, subject=subject, time=NOW, reason=reason
    )


ACCEPTED = auditlog.EnvelopeAccepted(
    envelope_id=ENVELOPE_ID,
    envelope_hash=ENVELOPE_HASH,
    sender_id=TH_DSDW.id,
    sender_key_id=TH_DSDW.cert.key_id,
    recipients=(LA_ATD.id, LA_MLSW.id),
    header_length=1234,
    part_lengths=(4096, 70_000),
    expires_at=NOW + 14 * 86_400,
    sender_signature=b"\x5a" * 64,
)

EVERY_KIND: list[auditlog.LeafFields] = [
    auditlog.BrokerStarted(
        BROKER.id, BROKER.cert.key_id, CHECKPOINT_VKEY, (WITNESS_VKEY,), "casebridge/0.1.0"
    ),
    auditlog.BrokerStopped(BROKER.id),
    auditlog.RootConfigured("TH", TH.root.key_id, TH.root.raw),
    auditlog.CertificateRegistered(TH_DSDW.id, TH_DSDW.cert.key_id, TH_DSDW.cert.raw, "TH-OPERATOR"),
    auditlog.CertificateRegistered(LA_MLSW.id, LA_MLSW.cert.key_id, LA_MLSW.cert.raw, auditlog.OFFLINE),
    auditlog.EncryptionKeyRegistered(LA_MLSW.id, LA_MLSW.encryption.key_id, LA_MLSW.encryption.raw),
    auditlog.RevocationListRegistered.of(crl(2).raw, country="LA", number=3, by="TH-OPERATOR"),
    ACCEPTED,
    *(auditlog.ReceiptRecorded(kind, ENVELOPE_ID, LA_MLSW.id, receipt(kind).raw) for kind in ReceiptKind),
    auditlog.EnvelopePurged(ENVELOPE_ID, ENVELOPE_HASH, 74_330),
    auditlog.OperatorAction("TH-OPERATOR", "witness_added", ("LA-AUDITOR", "0a1b2c3d")),
]


@pytest.mark.parametrize("fields", EVERY_KIND, ids=lambda f: f.KIND)
def test_every_leaf_kind_round_trips_byte_for_byte(fields: auditlog.LeafFields) -> None:
    raw = auditlog.encode_leaf(NOW, fields)
    leaf = auditlog.parse_leaf(raw)
    assert (leaf.time, leaf.fields, leaf.raw, leaf.kind) == (NOW, fields, raw, fields.KIND)
    assert auditlog.encode_leaf(leaf.time, leaf.fields) == raw
    assert auditlog.leaf_kind(raw) is fields.KIND
    assert codec.decode(raw)[:3] == [1, str(fields.KIND), NOW]


def test_every_kind_is_covered_by_the_round_trip() -> None:
    assert {f.KIND for f in EVERY_KIND} == set(auditlog.LeafKind)


def test_the_envelope_accepted_layout_is_fixed() -> None:
    items = codec.decode(auditlog.encode_leaf(NOW, ACCEPTED))
    assert items == [
        1,
        "envelope_accepted",
        NOW,
        ENVELOPE_ID,
        ENVELOPE_HASH,
        "TH-DSDW",
        TH_DSDW.cert.key_id,
        ["LA-ATD", "LA-MLSW"],
        1234,
        [4096, 70_000],
        NOW + 14 * 86_400,
        b"\x5a" * 64,
    ]


def test_a_large_revocation_list_is_recorded_by_its_hash_only() -> None:
    large = crl(400)
    assert len(large.raw) > auditlog.MAX_RECORD_BYTES
    fields = auditlog.RevocationListRegistered.of(large.raw, country="LA", number=3, by=auditlog.OFFLINE)
    raw = auditlog.encode_leaf(NOW, fields)
    assert len(raw) < 200
    parsed = auditlog.parse_leaf(raw).fields
    assert isinstance(parsed, auditlog.RevocationListRegistered)
    assert parsed.revocation_list is None
    assert parsed.list_sha256 == hashlib.sha256(large.raw).digest()


def _tampered(fields: auditlog.LeafFields, position: int, value: object) -> bytes:
    items = codec.decode(auditlog.encode_leaf(NOW, fields))
    items[position] = value
    return codec.encode(items)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_tampered(ACCEPTED, 0, 2), UnsupportedVersion),
        (_tampered(ACCEPTED, 1, "envelope_forged"), MalformedInput),
        (_tampered(ACCEPTED, 7, ["LA-MLSW", "LA-ATD"]), MalformedInput),
        (_tampered(ACCEPTED, 7, []), MalformedInput),
        (_tampered(ACCEPTED, 3, b"short"), MalformedInput),
        (_tampered(ACCEPTED, 11, b"\x00" * 63), MalformedInput),
        (codec.encode([1, "envelope_accepted", NOW]), MalformedInput),
        (codec.encode([1, "broker_stopped", NOW, "TH-BROKER", "extra"]), MalformedInput),
        (codec.encode([1, "broker_stopped", -1, "TH-BROKER"]), MalformedInput),
        (codec.encode([1, "broker_stopped", NOW, "สมชาย ใจดี"]), MalformedInput),
        (_tampered(EVERY_KIND[3], 3, "TH-ATPD"), MalformedInput),
        (_tampered(EVERY_KIND[9], 4, bytes(16)), MalformedInput),
        (_tampered(EVERY_KIND[6], 5, b"\x00" * 32), MalformedInput),
        (b"\x94\x01\xa4", MalformedInput),
        (auditlog.encode_leaf(NOW, ACCEPTED) + b"\x00", MalformedInput),
        (b"\xdc" + b"\x00" * 70_000, MalformedInput),
    ],
    ids=[
        "version-2",
        "unknown-kind",
        "unsorted-recipients",
        "no-recipients",
        "short-envelope-id",
        "short-signature",
        "missing-fields",
        "extra-field",
        "negative-time",
        "a-name-where-an-agency-id-belongs",
        "certificate-of-another-agency",
        "receipt-of-another-envelope",
        "revocation-list-hash-mismatch",
        "truncated",
        "trailing-bytes",
        "over-65535-bytes",
    ],
)
def test_a_leaf_that_is_not_exactly_right_is_refused(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        auditlog.parse_leaf(data)


def test_encoding_refuses_what_a_verifier_would_refuse() -> None:
    with pytest.raises(InvalidField):
        auditlog.encode_leaf(NOW, auditlog.OperatorAction("TH-OPERATOR", "rename", ("นางสาว สมหญิง",)))
    unsorted = dataclasses.replace(ACCEPTED, recipients=("LA-MLSW", "LA-ATD"))
    with pytest.raises(InvalidField):
        auditlog.encode_leaf(NOW, unsorted)


def test_tracing_finds_the_envelope_in_acceptance_receipt_and_purge_entries_only() -> None:
    traced = {
        fields.KIND: auditlog.envelope_ids(auditlog.parse_leaf(auditlog.encode_leaf(NOW, fields)))
        for fields in EVERY_KIND
    }
    named = {
        auditlog.LeafKind.ENVELOPE_ACCEPTED,
        auditlog.LeafKind.RECEIPT,
        auditlog.LeafKind.ENVELOPE_PURGED,
    }
    for kind, ids in traced.items():
        assert ids == ((ENVELOPE_ID,) if kind in named else ()), kind


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (ACCEPTED, ("LA-ATD", "LA-MLSW", "TH-DSDW")),
        (EVERY_KIND[8], ("LA-MLSW", "TH-BROKER", "TH-DSDW")),
        (EVERY_KIND[9], ("LA-MLSW", "TH-DSDW")),
        (EVERY_KIND[3], ("TH-DSDW", "TH-OPERATOR")),
        (EVERY_KIND[4], ("LA-MLSW",)),
        (EVERY_KIND[2], ()),
        (EVERY_KIND[-2], ()),
        (EVERY_KIND[-1], ("LA-AUDITOR", "TH-OPERATOR")),
    ],
    ids=lambda v: v.KIND if hasattr(v, "KIND") else "",
)
def test_agencies_names_every_party_a_leaf_concerns(
    fields: auditlog.LeafFields, expected: tuple[str, ...]
) -> None:
    assert auditlog.agencies(auditlog.parse_leaf(auditlog.encode_leaf(NOW, fields))) == expected


@pytest.mark.parametrize("fields", EVERY_KIND, ids=lambda f: f.KIND)
def test_the_indexing_shortcut_names_the_same_envelope_as_strict_parsing(fields: auditlog.LeafFields) -> None:
    raw = auditlog.encode_leaf(NOW, fields)
    strict = auditlog.envelope_ids(auditlog.parse_leaf(raw))
    assert auditlog.unsafe_envelope_id(raw) == (strict[0] if strict else None)


@pytest.mark.parametrize(
    "data", [b"", b"\xc1", b"leaf-1", codec.encode([1, "receipt", NOW, "accepted", b"short"])]
)
def test_the_indexing_shortcut_names_no_envelope_for_what_is_not_a_leaf(data: bytes) -> None:
    assert auditlog.unsafe_envelope_id(data) is None
