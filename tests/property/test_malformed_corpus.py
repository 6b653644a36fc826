"""Malformed input never escapes as anything but a CaseBridge error.

Valid encodings of every wire structure (root certificate, agency certificate, encryption key,
revocation list, envelope header, receipt, manifest) are truncated, mutated byte by byte, given
fields of every wrong type, and replaced by random bytes, then fed to every parser and verifier.
Each must either accept or raise one of the expected CaseBridge errors: an `IndexError`,
`TypeError` or `KeyError` from untrusted bytes would be a bug (a broker 500, or worse).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.certificate import (
    AgencyCertificate,
    EncryptionKey,
    Revocation,
    RevocationList,
    RootCertificate,
    join_signed,
    split_signed,
)
from protocol.envelope import (
    HEADER_LIMITS,
    MANIFEST_LIMITS,
    EnvelopeHeader,
    EnvelopeOpener,
    Manifest,
    validate_for_broker,
)
from protocol.errors import (
    Forbidden,
    InvalidField,
    MalformedInput,
    TooLarge,
    UnsupportedVersion,
    VerificationError,
)
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, RejectReason, verify_receipt
from tests.protocol_fixtures import (
    LA,
    LA_ATD,
    LA_MLSW,
    NOW,
    REGISTERED,
    SENDER,
    Attachment,
    manifest_bytes,
    seal,
    trust_store,
)

EXPECTED = (MalformedInput, TooLarge, InvalidField, Forbidden, UnsupportedVersion, VerificationError)

ENVELOPE = seal(SENDER, [LA_MLSW, LA_ATD], attachments=[Attachment("ไฟล์.pdf", "application/pdf", b"%PDF")])
HEADER = ENVELOPE.parsed
RECEIPT = Receipt.issue(
    ReceiptKind.REJECTED,
    signing_key=LA_MLSW.signing_key,
    signer=LA_MLSW.cert,
    subject=ReceiptSubject(HEADER.envelope_hash, HEADER.envelope_id, SENDER.id, LA_MLSW.id),
    time=NOW,
    reason=RejectReason.DECRYPTION_FAILED,
)
CRL = RevocationList.issue(
    LA.root_key,
    LA.root,
    number=3,
    issued_at=NOW,
    entries=[Revocation(LA_ATD.cert.key_id, NOW, "ກະແຈຮົ່ວໄຫຼ"), Revocation(bytes(16), NOW - 1, "x")],
)
MANIFEST = manifest_bytes(
    HEADER.envelope_id,
    SENDER.id,
    HEADER.recipient_ids,
    [Attachment("ເອກະສານ.pdf", "application/pdf", b"abc"), Attachment("b.txt", "text/plain", b"")],
)

VALID: dict[str, bytes] = {
    "root certificate": LA.root.raw,
    "agency certificate": LA_MLSW.cert.raw,
    "encryption key": LA_MLSW.encryption.raw,
    "revocation list": CRL.raw,
    "envelope header": ENVELOPE.header,
    "receipt": RECEIPT.raw,
    "manifest": MANIFEST,
}


def _open(data: bytes) -> None:
    EnvelopeOpener(
        data,
        trust=trust_store(),
        sender_certificate=SENDER.cert,
        recipient_id=LA_MLSW.id,
        keys=LA_MLSW.keys,
        now=NOW,
    )


PARSERS: dict[str, Callable[[bytes], object]] = {
    "decode": codec.decode,
    "root certificate": RootCertificate.parse,
    "agency certificate": AgencyCertificate.parse,
    "encryption key": EncryptionKey.parse,
    "revocation list": RevocationList.parse,
    "envelope header": EnvelopeHeader.parse,
    "receipt": Receipt.parse,
    "manifest": Manifest.parse,
    "verify agency": lambda data: trust_store().verify_agency(data, NOW),
    "accept revocation list": lambda data: trust_store().accept_revocation_list(data),
    "verify encryption key": lambda data: trust_store().verify_encryption_key(data, LA_MLSW.cert, NOW),
    "verify receipt": lambda data: verify_receipt(data, signer=LA_MLSW.cert),
    "broker validation": lambda data: validate_for_broker(
        data, sender=SENDER.cert, authenticated_agency=SENDER.id, recipient_exists=REGISTERED, now=NOW
    ),
    "open envelope": _open,
}


def feed(parser: Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(*EXPECTED):
        parser(data)


def feed_all(data: bytes) -> None:
    for parser in PARSERS.values():
        feed(parser, data)


def test_every_valid_structure_parses() -> None:
    for name, data in VALID.items():
        PARSERS[name](data)


# --- exhaustive small mutations -------------------------------------------------------------


def mutations(data: bytes) -> Iterator[bytes]:
    for cut in range(len(data)):
        yield data[:cut]
    for i in range(len(data)):
        for value in (data[i] ^ 0x01, data[i] ^ 0x80, 0x00, 0xFF, 0xC1):
            if value != data[i]:
                yield data[:i] + bytes([value]) + data[i + 1 :]
    yield data + b"\x00"


# Every parser and verifier that takes the structure in production.
CONSUMERS: dict[str, tuple[str, ...]] = {
    "root certificate": ("root certificate",),
    "agency certificate": ("agency certificate", "verify agency"),
    "encryption key": ("encryption key", "verify encryption key"),
    "revocation list": ("revocation list", "accept revocation list"),
    "envelope header": ("envelope header", "broker validation", "open envelope"),
    "receipt": ("receipt", "verify receipt"),
    "manifest": ("manifest",),
}


@pytest.mark.parametrize("name", list(VALID))
def test_truncations_and_byte_mutations_raise_only_casebridge_errors(name: str) -> None:
    for data in mutations(VALID[name]):
        for consumer in CONSUMERS[name]:
            feed(PARSERS[consumer], data)


# --- every field replaced by a value of every type ------------------------------------------

ODD_VALUES: list[Any] = [None, True, -1, 0, 2**64 - 1, "", "x" * 300, "ไทย", b"", bytes(16), [], [1, "a"], {}]


def replacements(tree: Any) -> Iterator[Any]:
    """Copies of `tree` with exactly one node (at any depth) replaced by an odd value."""
    yield from ODD_VALUES
    if isinstance(tree, list):
        for i, item in enumerate(tree):
            for changed in replacements(item):
                yield [*tree[:i], changed, *tree[i + 1 :]]
        yield tree[:-1]
        yield [*tree, None]


def structural_variants(name: str) -> Iterator[bytes]:
    data = VALID[name]
    if name == "manifest":
        for tree in replacements(codec.decode(data, limits=MANIFEST_LIMITS)):
            yield codec.encode(tree, limits=MANIFEST_LIMITS)
    elif name == "envelope header":
        pre, post, signature = codec.decode(data)
        for tree in replacements(codec.decode(pre, limits=HEADER_LIMITS)):
            yield codec.encode([codec.encode(tree), post, signature])
        for tree in replacements(codec.decode(post, limits=HEADER_LIMITS)):
            yield codec.encode([pre, codec.encode(tree), signature])
        for tree in replacements([pre, post, signature]):
            yield codec.encode(tree)
    else:
        body, signature = split_signed(data, name)
        for tree in replacements(codec.decode(body, limits=codec.Limits(max_bytes=1 << 18))):
            yield join_signed(codec.encode(tree), signature)
        for tree in replacements([body, signature]):
            yield codec.encode(tree)


@pytest.mark.parametrize("name", list(VALID))
def test_fields_of_the_wrong_type_raise_only_casebridge_errors(name: str) -> None:
    count = 0
    for data in structural_variants(name):
        count += 1
        feed_all(data)
    assert count > 50


# --- random input ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_casebridge_errors(data: bytes) -> None:
    feed_all(data)


@settings(max_examples=300, deadline=None)
@given(
    name=st.sampled_from(sorted(VALID)),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.none() | st.integers(min_value=0),
)
def test_randomly_damaged_structures_raise_only_casebridge_errors(
    name: str, edits: list[tuple[int, int]], cut: int | None
) -> None:
    data = bytearray(VALID[name])
    for position, value in edits:
        data[position % len(data)] = value
    if cut is not None:
        del data[cut % len(data) :]
    feed_all(bytes(data))
