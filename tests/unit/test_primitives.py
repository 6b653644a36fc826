"""Our named uses of libsodium stay byte-identical to libsodium's own constructions, and every
fast path stays equal to what it replaced.

The sealed box and the secretstream state are rebuilt from a caller-chosen ephemeral key or
header (so vectors can be regenerated); these tests hold them to what libsodium itself does.
BLAKE2b runs through `hashlib`: it is held to libsodium's generichash for every parameter we use.
The codec's checks, the envelope header and receipt readers and the structured-field parser
have fast paths for the common case; they are held to the plain algorithms they replaced.
"""

from __future__ import annotations

import copy
import hashlib
import struct
import unicodedata
from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.public
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import (
    certificate,
    codec,
    envelope,
    envelope_header,
    envelope_manifest,
    primitives,
    receipt,
    stream,
    structured_fields,
)
from protocol.errors import CaseBridgeError, DecryptionFailed, MalformedInput, VerificationError
from tests.protocol_fixtures import (
    BROKER,
    NOW,
    RECIPIENT_B,
    RECIPIENT_C,
    SENDER,
    Attachment,
    refused,
    seal,
    seed,
)

RECIPIENT = nacl.public.PrivateKey(seed("primitives recipient"))
RECIPIENT_PK = bytes(RECIPIENT.public_key)
MESSAGE = "ส่งต่อกรณี ນາງ ສົມພອນ".encode() + bytes(range(48))


def fixed(value: bytes) -> primitives.Random:
    """A random source that always returns `value` (truncated to the request)."""
    return lambda n: value[:n]


def test_seal_box_opens_with_libsodium_seal_open() -> None:
    sealed = primitives.seal_box(RECIPIENT_PK, MESSAGE, primitives.system_random)
    assert len(sealed) == len(MESSAGE) + primitives.SEALED_BOX_OVERHEAD
    assert sodium.crypto_box_seal_open(sealed, RECIPIENT_PK, bytes(RECIPIENT)) == MESSAGE


def test_seal_box_opens_with_pynacl_sealed_box() -> None:
    sealed = primitives.seal_box(RECIPIENT_PK, MESSAGE, primitives.system_random)
    assert nacl.public.SealedBox(RECIPIENT).decrypt(sealed) == MESSAGE


def test_seal_box_of_empty_message_opens() -> None:
    sealed = primitives.seal_box(RECIPIENT_PK, b"", primitives.system_random)
    assert sodium.crypto_box_seal_open(sealed, RECIPIENT_PK, bytes(RECIPIENT)) == b""


def test_seal_box_is_deterministic_for_a_given_ephemeral_key() -> None:
    ephemeral = seed("ephemeral")
    first = primitives.seal_box(RECIPIENT_PK, MESSAGE, fixed(ephemeral))
    second = primitives.seal_box(RECIPIENT_PK, MESSAGE, fixed(ephemeral))
    other = primitives.seal_box(RECIPIENT_PK, MESSAGE, fixed(seed("other ephemeral")))
    assert first == second
    assert first != other
    assert first[:32] == sodium.crypto_scalarmult_base(ephemeral)


def test_seal_box_matches_libsodium_construction_with_the_same_ephemeral_key() -> None:
    # crypto_box_seal: epk || crypto_box_easy(m, nonce=BLAKE2b-192(epk || pk), pk, esk).
    ephemeral = seed("ephemeral")
    epk = sodium.crypto_scalarmult_base(ephemeral)
    nonce = hashlib.blake2b(epk + RECIPIENT_PK, digest_size=24).digest()
    expected = (
        epk
        + nacl.public.Box(nacl.public.PrivateKey(ephemeral), RECIPIENT.public_key)
        .encrypt(MESSAGE, nonce)
        .ciphertext
    )
    assert primitives.seal_box(RECIPIENT_PK, MESSAGE, fixed(ephemeral)) == expected


def test_open_box_refuses_other_key_and_tampering() -> None:
    sealed = primitives.seal_box(RECIPIENT_PK, MESSAGE, primitives.system_random)
    other = nacl.public.PrivateKey(seed("someone else"))
    with refused(DecryptionFailed):
        primitives.open_box(bytes(other.public_key), bytes(other), sealed)
    flipped = bytearray(sealed)
    flipped[40] ^= 0x01
    with refused(DecryptionFailed):
        primitives.open_box(RECIPIENT_PK, bytes(RECIPIENT), bytes(flipped))
    with refused(DecryptionFailed):
        primitives.open_box(RECIPIENT_PK, bytes(RECIPIENT), sealed[:20])


@pytest.mark.parametrize("index", [0, 1, 2, 255, 2**32 + 7, 2**64 - 1])
@pytest.mark.parametrize("label", [b"cb-part-key-v1", b"refv1-pt", b"x"])
def test_derive_subkey_is_libsodium_kdf_construction(index: int, label: bytes) -> None:
    # crypto_kdf_blake2b_derive_from_key: keyed BLAKE2b-256 of the empty message, salt =
    # LE64(id) zero-padded to 16 bytes, personalisation = context zero-padded to 16 bytes.
    key = seed("master key")
    expected = hashlib.blake2b(
        b"", digest_size=32, key=key, salt=struct.pack("<Q", index), person=label
    ).digest()
    explicit = hashlib.blake2b(
        b"",
        digest_size=32,
        key=key,
        salt=struct.pack("<Q", index) + bytes(8),
        person=label.ljust(16, b"\x00"),
    ).digest()
    assert expected == explicit
    assert primitives.derive_subkey(key, index, label=label) == expected


def test_derive_subkey_separates_indexes_labels_and_keys() -> None:
    key = seed("master key")
    derived = {
        primitives.derive_subkey(key, 0, label=b"a"),
        primitives.derive_subkey(key, 1, label=b"a"),
        primitives.derive_subkey(key, 0, label=b"b"),
        primitives.derive_subkey(seed("other key"), 0, label=b"a"),
    }
    assert len(derived) == 4


def test_personalisation_longer_than_16_bytes_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 16 bytes"):
        primitives.blake2b(b"x", label=b"x" * 17)


def test_blake2b_matches_hashlib() -> None:
    data = MESSAGE * 3
    assert primitives.blake2b(data, label=b"cb-envelope-v1") == (
        hashlib.blake2b(data, digest_size=32, person=b"cb-envelope-v1").digest()
    )
    assert primitives.key_id(RECIPIENT_PK) == (
        hashlib.blake2b(RECIPIENT_PK, digest_size=16, person=b"cb-key-id-v1").digest()
    )


@pytest.mark.parametrize("sizes", [[0], [1, 2, 3], [4096, 0, 17, 100_000], [stream.CHUNK_BYTES, 5]])
def test_stream_state_from_init_pull_encrypts_as_init_push(sizes: list[int]) -> None:
    key = seed("stream key")
    push_state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header = sodium.crypto_secretstream_xchacha20poly1305_init_push(push_state, key)
    ours = stream._state(key, header)
    ad = b"associated data"
    for i, size in enumerate(sizes):
        message = bytes([i % 256]) * size
        tag = stream.TAG_FINAL if i == len(sizes) - 1 else stream.TAG_MESSAGE
        expected = sodium.crypto_secretstream_xchacha20poly1305_push(push_state, message, ad, tag)
        got = sodium.crypto_secretstream_xchacha20poly1305_push(ours, message, ad, tag)
        assert got == expected, f"chunk {i} differs"
    # And what we push, libsodium pulls.
    pull_state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(pull_state, header, key)
    replay = stream._state(key, header)
    ct = sodium.crypto_secretstream_xchacha20poly1305_push(replay, b"hello", None, stream.TAG_FINAL)
    assert sodium.crypto_secretstream_xchacha20poly1305_pull(pull_state, ct, None) == (
        b"hello",
        stream.TAG_FINAL,
    )


SIGNER = nacl.signing.SigningKey(seed("primitives signer"))
SIGNER_PK = bytes(SIGNER.verify_key)
CONTEXT = b"casebridge/test-v1\x00"


def test_sign_and_verify_round_trip() -> None:
    signature = primitives.sign(SIGNER, CONTEXT, MESSAGE)
    assert len(signature) == primitives.SIGNATURE_BYTES
    primitives.verify(SIGNER_PK, CONTEXT, MESSAGE, signature, what="test")
    # The signature is plain Ed25519 over context || message.
    SIGNER.verify_key.verify(CONTEXT + MESSAGE, signature)


def test_verify_refuses_another_context() -> None:
    signature = primitives.sign(SIGNER, CONTEXT, MESSAGE)
    with refused(VerificationError):
        primitives.verify(SIGNER_PK, b"casebridge/other-v1\x00", MESSAGE, signature, what="test")


def test_verify_refuses_another_key() -> None:
    signature = primitives.sign(SIGNER, CONTEXT, MESSAGE)
    other = bytes(nacl.signing.SigningKey(seed("other signer")).verify_key)
    with refused(VerificationError):
        primitives.verify(other, CONTEXT, MESSAGE, signature, what="test")


@pytest.mark.parametrize("where", ["message", "signature"])
@pytest.mark.parametrize("bit", [0, 7, 300])
def test_verify_refuses_a_flipped_bit(where: str, bit: int) -> None:
    signature = bytearray(primitives.sign(SIGNER, CONTEXT, MESSAGE))
    message = bytearray(MESSAGE)
    target = message if where == "message" else signature
    target[(bit // 8) % len(target)] ^= 1 << (bit % 8)
    with refused(VerificationError):
        primitives.verify(SIGNER_PK, CONTEXT, bytes(message), bytes(signature), what="test")


def test_verify_refuses_wrong_lengths() -> None:
    signature = primitives.sign(SIGNER, CONTEXT, MESSAGE)
    with refused(VerificationError):
        primitives.verify(SIGNER_PK[:31], CONTEXT, MESSAGE, signature, what="test")
    with refused(VerificationError):
        primitives.verify(SIGNER_PK, CONTEXT, MESSAGE, signature + b"\x00", what="test")


def test_signing_contexts_are_distinct_and_prefix_free() -> None:
    # Each context holds exactly one NUL, at its end, so no context || message can be read as
    # another context || message: a signature for one kind of object is never another's.
    contexts = [
        certificate.CTX_ROOT,
        certificate.CTX_AGENCY,
        certificate.CTX_ENCRYPTION_KEY,
        certificate.CTX_REVOCATION,
        envelope.CTX_ENVELOPE,
        *(kind.context for kind in receipt.ReceiptKind),
    ]
    assert len(set(contexts)) == len(contexts)
    for context in contexts:
        assert context.count(b"\x00") == 1
        assert context.endswith(b"\x00")
        assert context.startswith(b"casebridge/")


@pytest.mark.parametrize("context", [b"casebridge/test-v1", b"", b"a\x00b"])
def test_sign_refuses_a_context_not_ending_in_nul(context: bytes) -> None:
    with pytest.raises(ValueError, match="ends with NUL"):
        primitives.sign(SIGNER, context, MESSAGE)


def test_equal_compares_contents_and_lengths() -> None:
    assert primitives.equal(b"abc", b"abc")
    assert not primitives.equal(b"abc", b"abd")
    assert not primitives.equal(b"abc", b"abcd")


def test_seeded_random_is_reproducible_and_advances() -> None:
    first, second = primitives.seeded_random(b"s" * 32), primitives.seeded_random(b"s" * 32)
    a, b = first(32), first(32)
    assert a != b
    assert second(32) == a
    assert second(32) == b
    assert primitives.seeded_random(b"t" * 32)(32) != a


# --- equivalences the fast paths rely on ---------------------------------------------------------
#
# Each fast path is held to what it replaced: hashlib's BLAKE2b to libsodium's, the codec's
# canonical checks to a plain walk and re-encode, the header, receipt and structured-field
# readers to their checked (or character-by-character) counterparts.

BLAKE2B_SIZES = (16, 24, 32, 40, 64)
BLAKE2B_KEYS = (b"", bytes(range(16)), seed("blake2b key")[:32], bytes(range(64)))
BLAKE2B_SALTS = (b"", struct.pack("<Q", 7), bytes(range(16)))
BLAKE2B_PERSONS = (b"", b"x", b"cb-key-id-v1", b"cb-key-commit-v1")
BLAKE2B_DATA = (b"", b"abc", bytes(128), bytes(range(129)), "ส่งต่อกรณี ນາງ ສົມພອນ".encode() * 9)


@pytest.mark.parametrize("size", BLAKE2B_SIZES)
def test_hashlib_blake2b_is_libsodium_generichash_for_every_parameter(size: int) -> None:
    for key in BLAKE2B_KEYS:
        for salt in BLAKE2B_SALTS:
            for person in BLAKE2B_PERSONS:
                for data in BLAKE2B_DATA:
                    expected = sodium.crypto_generichash_blake2b_salt_personal(
                        data, digest_size=size, key=key, salt=salt, person=person
                    )
                    got = hashlib.blake2b(data, digest_size=size, key=key, salt=salt, person=person)
                    assert got.digest() == expected, (size, key, salt, person, data)


@pytest.mark.parametrize("size", BLAKE2B_SIZES)
def test_primitives_blake2b_and_subkeys_are_libsodium_byte_for_byte(size: int) -> None:
    for key in BLAKE2B_KEYS:
        for person in BLAKE2B_PERSONS:
            for data in BLAKE2B_DATA:
                assert primitives.blake2b(data, label=person, size=size, key=key) == (
                    sodium.crypto_generichash_blake2b_salt_personal(
                        data, digest_size=size, key=key, person=person
                    )
                )
            if key:
                for index in (0, 1, 2**40 + 3):
                    assert primitives.derive_subkey(key, index, label=person) == (
                        sodium.crypto_generichash_blake2b_salt_personal(
                            b"", digest_size=32, key=key, salt=struct.pack("<Q", index), person=person
                        )
                    )
    assert primitives.key_id(RECIPIENT_PK) == sodium.crypto_generichash_blake2b_salt_personal(
        RECIPIENT_PK, digest_size=16, person=b"cb-key-id-v1"
    )


@pytest.mark.parametrize("data", [bytearray(b"abc"), memoryview(b"abc"), "abc"])
def test_blake2b_still_takes_bytes_only(data: object) -> None:
    with pytest.raises(TypeError):
        primitives.blake2b(data, label=b"x")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        primitives.blake2b(b"abc", label=b"x", key=data)  # type: ignore[arg-type]


def test_verify_refuses_a_key_or_signature_that_is_not_bytes_as_before() -> None:
    signature = primitives.sign(SIGNER, CONTEXT, MESSAGE)
    with refused(VerificationError):
        primitives.verify(bytearray(SIGNER_PK), CONTEXT, MESSAGE, signature, what="test")  # type: ignore[arg-type]
    with refused(VerificationError):
        primitives.verify(SIGNER_PK, CONTEXT, MESSAGE, bytearray(signature), what="test")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        primitives.verify(SIGNER_PK, CONTEXT, "text", signature, what="test")  # type: ignore[arg-type]


def _reference_check(value: Any, depth: int, limits: codec.Limits) -> None:
    """The codec's original walk: depth of every value, allowed types, int range, NFC text."""
    if depth > limits.max_depth:
        raise MalformedInput(reason=f"nesting deeper than {limits.max_depth}")
    if value is None or isinstance(value, bool | bytes):
        return
    if isinstance(value, int):
        if not codec.INT_MIN <= value <= codec.INT_MAX:
            raise MalformedInput(reason="integer out of 64-bit range")
        return
    if isinstance(value, str):
        if not unicodedata.is_normalized("NFC", value):
            raise MalformedInput(reason="text is not in Unicode NFC")
        return
    if isinstance(value, list | tuple):
        for item in value:
            _reference_check(item, depth + 1, limits)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise MalformedInput(reason="map key is not a string")
            _reference_check(key, depth + 1, limits)
            _reference_check(item, depth + 1, limits)
        return
    raise MalformedInput(reason=f"type {type(value).__name__} is not allowed")


def _reference_encode(value: Any, limits: codec.Limits = codec.DEFAULT_LIMITS) -> bytes:
    _reference_check(value, 0, limits)
    try:
        return bytes(msgpack.packb(codec._sorted_maps(value), use_bin_type=True))
    except (ValueError, TypeError, OverflowError) as e:
        raise MalformedInput(reason=f"cannot encode: {e}") from e


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", call()
    except MalformedInput as e:
        return "refused", e.reason


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**65),
    st.binary(max_size=8),
    st.text(max_size=6),
    st.sampled_from(["e\u0301", "สมชาย", "ນາງ ສົມພອນ", "\u212b", 1.5]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(st.one_of(st.text(max_size=4), st.binary(max_size=2)), inner, max_size=3),
    ),
    max_leaves=12,
)
SHALLOW = codec.Limits(max_depth=2)


@given(VALUES)
@settings(max_examples=400, deadline=None)
def test_codec_encode_matches_the_plain_walk_and_sort(value: Any) -> None:
    for limits in (codec.DEFAULT_LIMITS, SHALLOW):
        assert _outcome(partial(codec.encode, value, limits=limits)) == _outcome(
            partial(_reference_encode, value, limits)
        )


def _reference_decode(data: bytes, limits: codec.Limits) -> Any:
    """The codec's original `decode`: strict msgpack, then re-encode with the walk and compare."""
    try:
        value = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            object_pairs_hook=codec._pairs,
            ext_hook=codec._no_ext,
            timestamp=0,
            max_str_len=limits.max_str_len,
            max_bin_len=limits.max_bin_len,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
    except MalformedInput:
        raise
    except msgpack.ExtraData as e:
        raise MalformedInput(reason="trailing bytes after the value") from e
    except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise MalformedInput(reason=f"undecodable msgpack ({type(e).__name__} {e})".replace(" )", ")")) from e
    except Exception as e:
        raise MalformedInput(reason=f"undecodable msgpack: {type(e).__name__}") from e
    if _reference_encode(value, limits) != data:
        raise MalformedInput(reason="not in canonical encoding")
    return value


PACKABLE = st.recursive(
    st.one_of(SCALARS.filter(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**64)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=4), st.binary(max_size=2)), inner, max_size=3),
    ),
    max_leaves=12,
)


@given(
    st.one_of(PACKABLE.map(lambda v: msgpack.packb(v, use_bin_type=True)), st.binary(min_size=1, max_size=24))
)
@settings(max_examples=500, deadline=None)
def test_codec_decode_refuses_and_accepts_as_re_encoding_did(data: bytes) -> None:
    # Maps in wire order (not sorted), floats, bytes keys and non-shortest forms come from packb
    # and from random bytes.
    for limits in (codec.DEFAULT_LIMITS, SHALLOW):
        assert _outcome(partial(codec.decode, data, limits=limits)) == _outcome(
            partial(_reference_decode, data, limits)
        )


def test_codec_decode_names_unsorted_maps_as_non_canonical() -> None:
    data = msgpack.packb({"b": 1, "a": 2})
    with refused(MalformedInput) as info:
        codec.decode(data)
    assert info.value.reason == "not in canonical encoding"  # type: ignore[attr-defined]
    assert codec.decode(msgpack.packb({"a": 2, "b": 1})) == {"a": 2, "b": 1}


def _header_outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", call()
    except CaseBridgeError as e:
        return type(e).__name__, e.reason


HEADERS = [
    seal(SENDER, [RECIPIENT_B]).header,
    seal(
        SENDER,
        [RECIPIENT_B, RECIPIENT_C],
        attachments=[Attachment("ເອກະສານ.pdf", "application/pdf", b"%PDF")],
    ).header,
]


@pytest.mark.parametrize("header", HEADERS)
def test_sealed_header_is_what_parsing_its_bytes_gives(header: bytes) -> None:
    parsed = envelope.EnvelopeHeader._parse_checked(header)
    assert envelope_header.well_formed_header(header) == parsed
    assert envelope.EnvelopeHeader.parse(header) == parsed


def _edited(value: list[Any], edits: list[tuple[int, int, Any]]) -> list[Any]:
    """`value` with each `(where, inner, replacement)` put at `value[where]`, or inside the list
    there (or inside that list's first list) when `inner` says so."""
    value = copy.deepcopy(value)
    for where, inner, shared in edits:
        replacement = copy.deepcopy(shared)
        where %= len(value)
        target = value[where]
        if isinstance(target, list) and target and inner:
            first = target[0]
            if isinstance(first, list) and first and inner > 1:
                first[inner % len(first)] = replacement
            else:
                target[inner % len(target)] = replacement
        else:
            value[where] = replacement
    return value


HEADER_EDITS = st.sampled_from(
    [
        None,
        True,
        -1,
        0,
        1,
        2,
        256,
        2**63,
        b"",
        bytes(16),
        bytes(24),
        bytes(32),
        bytes(96),
        "",
        "LA-X",
        "TH-A",
        [],
    ]
)


@given(
    st.sampled_from(HEADERS),
    st.lists(st.tuples(st.sampled_from(range(11)), st.sampled_from(range(4)), HEADER_EDITS), max_size=2),
    st.lists(st.tuples(st.sampled_from(range(3)), st.sampled_from(range(4)), HEADER_EDITS), max_size=1),
    st.booleans(),
)
@settings(max_examples=1000, deadline=None)
def test_header_fast_path_agrees_with_the_checked_parser(
    header: bytes, pre_edits: list[tuple[int, int, Any]], post_edits: list[tuple[int, int, Any]], swap: bool
) -> None:
    pre, post, signature = codec.decode(header, limits=envelope.HEADER_LIMITS)
    pre_items = _edited(codec.decode(pre), pre_edits)
    if swap and isinstance(pre_items[8], list):  # recipients out of order
        pre_items[8] = pre_items[8][::-1]
    post_items = _edited(codec.decode(post), post_edits)
    try:
        mutated = codec.encode([codec.encode(pre_items), codec.encode(post_items), signature])
    except MalformedInput:
        return
    fast = envelope_header.well_formed_header(mutated)
    checked = _header_outcome(lambda: envelope.EnvelopeHeader._parse_checked(mutated))
    if fast is not None:
        assert checked == ("value", fast)
    assert _header_outcome(lambda: envelope.EnvelopeHeader.parse(mutated)) == checked


@pytest.mark.parametrize("kind", list(receipt.ReceiptKind))
def test_issued_receipt_is_what_parsing_its_bytes_gives(kind: receipt.ReceiptKind) -> None:
    signer = BROKER if kind.signed_by_broker else RECIPIENT_B
    header = envelope.EnvelopeHeader.parse(HEADERS[0])
    issued = receipt.Receipt.issue(
        kind,
        signing_key=signer.signing_key,
        signer=signer.cert,
        subject=receipt.ReceiptSubject(header.envelope_hash, header.envelope_id, SENDER.id, RECIPIENT_B.id),
        time=NOW,
        reason=receipt.RejectReason.POLICY if kind is receipt.ReceiptKind.REJECTED else None,
        log_index=7 if kind is receipt.ReceiptKind.ACCEPTED else None,
    )
    assert issued == receipt.Receipt.parse(issued.raw)


def test_certificate_key_ids_are_computed_once_and_stay_out_of_equality_and_repr() -> None:
    cert = SENDER.cert
    assert cert.key_id == primitives.key_id(cert.signing_key)
    assert SENDER.encryption.key_id == primitives.key_id(SENDER.encryption.public_key)
    assert certificate.AgencyCertificate.parse(cert.raw) == cert
    assert "key_id" not in repr(cert).replace("issuer_key_id", "")


SF_PIECES = st.sampled_from(
    [
        *'sig1=()";:*?- ,@ab09+/.\\\tAZ~!#',
        *['"@method"', '"@path"', ";created=", "1750000000", "123456", ".5", ";nonce=", '"abc"'],
        *[":AAAA:", "?1", ", ", "tok/en", "sig1=(", "sig1=", "a=1", ";a", "=-0"],
    ]
)


@given(st.lists(SF_PIECES, max_size=12).map("".join))
@settings(max_examples=1000, deadline=None)
def test_structured_field_fast_reads_match_the_character_parser(text: str) -> None:
    def read(parser: type[structured_fields._Parser]) -> tuple[str, Any]:
        return _outcome(lambda: parser(text, "field").dictionary())

    assert read(structured_fields._FastParser) == read(structured_fields._Parser)


@pytest.mark.parametrize(
    "text",
    [
        'sig1=("@method" "@authority" "@path" "content-digest");created=1750000000;nonce="AAAA";'
        'keyid="00ff";alg="ed25519";tag="casebridge-v1"',
        'a=( "x"  "y" );b=?0, c=:AAAA:;d=tok/en;e="q\\"uote";f=-007, g',
        'a=("x";p=1 "y"), b="1234567890123456", c=1234567890123456, d=1.5, e=("x")z',
        "sig1=1750000000.5",
        "a=123456789012345;b=1234567890123456",
        "a;created=-0;b=tok:/x;c=?1;d=:AAAA:;e",
    ],
)
def test_structured_field_fast_reads_match_on_known_shapes(text: str) -> None:
    fast = _outcome(lambda: structured_fields._FastParser(text, "field").dictionary())
    assert fast == _outcome(lambda: structured_fields._Parser(text, "field").dictionary())


MANIFEST_VALUES = [
    codec.decode(
        envelope.Manifest(
            bytes(16),
            SENDER.id,
            (RECIPIENT_B.id, RECIPIENT_C.id),
            "application/json",
            "สมชาย ใจดี".encode(),
            (envelope.AttachmentInfo("ເອກະສານ.pdf", "application/pdf", 4),),
        ).encode(),
        limits=envelope.MANIFEST_LIMITS,
    )
]
MANIFEST_EDITS = st.sampled_from([None, True, -1, 0, 2, 300, b"", bytes(16), "", "LA-X", "x" * 301, [], [1]])


@given(st.lists(st.tuples(st.sampled_from(range(8)), st.sampled_from(range(4)), MANIFEST_EDITS), max_size=2))
@settings(max_examples=300, deadline=None)
def test_manifest_fast_path_agrees_with_the_checked_reader(edits: list[tuple[int, int, Any]]) -> None:
    value = _edited(MANIFEST_VALUES[0], edits)
    fast = envelope_manifest.well_formed_manifest(value)
    checked = _header_outcome(lambda: envelope.Manifest._from_checked(value))
    if fast is not None:
        assert checked == ("value", fast)
    elif not edits:
        raise AssertionError("the fast path refused a well-formed manifest")
