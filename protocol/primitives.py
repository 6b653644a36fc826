"""Named uses of libsodium (through PyNaCl) and nothing else.

Every signature in CaseBridge is Ed25519 over `context || message`, where the context is a
NUL-terminated ASCII string naming the structure and its version, so a signature made for one
kind of object can never be accepted as another. Every hash is BLAKE2b with a 16-byte
personalisation naming its use. Verification raises; secrets are compared in constant time.

The sealed box is libsodium's `crypto_box_seal` construction (ephemeral X25519 key, nonce =
BLAKE2b-192(epk || pk), `crypto_box`) with the ephemeral key drawn from the caller's random
source, so known-answer vectors can be regenerated. Its output opens with libsodium's own
`crypto_box_seal_open`; a test holds the two byte-identical.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import nacl.bindings as sodium
import nacl.exceptions
import nacl.signing
import nacl.utils

from protocol.errors import DecryptionFailed, VerificationError

Random = Callable[[int], bytes]
"""A source of random bytes. Production passes `system_random`; vectors pass a seeded one."""

KEY_ID_BYTES = 16
HASH_BYTES = 32
SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32
SEALED_BOX_OVERHEAD = sodium.crypto_box_SEALBYTES


def system_random(n: int) -> bytes:
    """libsodium's randombytes (the operating system's CSPRNG)."""
    drawn: bytes = nacl.utils.random(n)
    return drawn


def seeded_random(seed: bytes) -> Random:
    """A deterministic random source for known-answer vectors only (never for real keys)."""
    counter = 0

    def draw(n: int) -> bytes:
        nonlocal counter
        counter += 1
        material = sodium.crypto_generichash_blake2b_salt_personal(
            counter.to_bytes(8, "big"), digest_size=32, key=seed, person=b"cb-vector-rng"
        )
        return sodium.randombytes_buf_deterministic(n, material)

    return draw


def person(label: bytes) -> bytes:
    if len(label) > 16:
        raise ValueError("personalisation is at most 16 bytes")
    return label


def blake2b(data: bytes, *, label: bytes, size: int = HASH_BYTES, key: bytes = b"") -> bytes:
    """BLAKE2b personalised with `label` (at most 16 bytes), optionally keyed."""
    digest: bytes = sodium.crypto_generichash_blake2b_salt_personal(
        data, digest_size=size, key=key, person=person(label)
    )
    return digest


def derive_subkey(key: bytes, index: int, *, label: bytes) -> bytes:
    """libsodium's crypto_kdf_derive_from_key (BLAKE2b with the index as salt), byte-identical."""
    derived: bytes = sodium.crypto_generichash_blake2b_salt_personal(
        b"", digest_size=32, key=key, salt=index.to_bytes(8, "little"), person=person(label)
    )
    return derived


def key_id(public_key: bytes) -> bytes:
    """The 16-byte id of a public key (signing or encryption)."""
    return blake2b(public_key, label=b"cb-key-id-v1", size=KEY_ID_BYTES)


def equal(a: bytes, b: bytes) -> bool:
    """Constant-time comparison of two byte strings (of possibly different lengths)."""
    return hmac.compare_digest(a, b)


def sign(signing_key: nacl.signing.SigningKey, context: bytes, message: bytes) -> bytes:
    if not context.endswith(b"\x00"):
        raise ValueError("a signing context ends with NUL")
    signature: bytes = signing_key.sign(context + message).signature
    return signature


def verify(public_key: bytes, context: bytes, message: bytes, signature: bytes, *, what: str) -> None:
    """Verify an Ed25519 signature under `context`; raise `VerificationError` if it fails."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise VerificationError(reason=f"{what}: wrong key or signature length")
    try:
        nacl.signing.VerifyKey(public_key).verify(context + message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError) as e:
        raise VerificationError(reason=f"{what}: bad signature") from e


def seal_box(recipient_pk: bytes, message: bytes, rng: Random) -> bytes:
    """libsodium's sealed box for `recipient_pk`, with the ephemeral key from `rng`."""
    ephemeral_sk = rng(sodium.crypto_box_SECRETKEYBYTES)
    ephemeral_pk = sodium.crypto_scalarmult_base(ephemeral_sk)
    nonce = sodium.crypto_generichash_blake2b_salt_personal(
        ephemeral_pk + recipient_pk, digest_size=sodium.crypto_box_NONCEBYTES
    )
    boxed: bytes = sodium.crypto_box(message, nonce, recipient_pk, ephemeral_sk)
    return ephemeral_pk + boxed


def open_box(recipient_pk: bytes, recipient_sk: bytes, sealed: bytes) -> bytes:
    """libsodium's `crypto_box_seal_open`; every failure is `DecryptionFailed`."""
    try:
        opened: bytes = sodium.crypto_box_seal_open(sealed, recipient_pk, recipient_sk)
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise DecryptionFailed(reason="sealed box did not open") from e
    return opened


def x25519_public(secret_key: bytes) -> bytes:
    public: bytes = sodium.crypto_scalarmult_base(secret_key)
    return public
