"""Our named uses of libsodium stay byte-identical to libsodium's own constructions.

The sealed box and the secretstream state are rebuilt from a caller-chosen ephemeral key or
header (so vectors can be regenerated); these tests hold them to what libsodium itself does.
The KDF is checked against an independent BLAKE2b (the standard library's).
"""

from __future__ import annotations

import hashlib
import struct

import nacl.bindings as sodium
import nacl.public
import nacl.signing
import pytest

from protocol import certificate, envelope, primitives, receipt, stream
from protocol.errors import DecryptionFailed, VerificationError
from tests.protocol_fixtures import refused, seed

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
