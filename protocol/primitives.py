"""Named uses of libsodium (through PyNaCl) and nothing else.

Every signature in CaseBridge is Ed25519 over `context || message`, where the context is a
NUL-terminated ASCII string naming the structure and its version, so a signature made for one
kind of object can never be accepted as another. Every hash is BLAKE2b with a 16-byte
personalisation naming its use. Verification raises; secrets are compared in constant time.

One-shot BLAKE2b (`blake2b`, `derive_subkey`, `key_id`, the sealed box's nonce) runs through
CPython's `hashlib.blake2b`: the same function as libsodium's
`crypto_generichash_blake2b_salt_personal` (keyed mode is the standard BLAKE2b MAC, salt and
personalisation zero-padded to 16 bytes in both), byte for byte, as tests/unit/test_primitives.py
proves for keyed and unkeyed, salted and personalised hashes of every output size we use. It costs
about 0.4 µs a call where PyNaCl's argument checks and buffer allocations cost 5 to 6 µs, and an
envelope's seal and open make 14 such calls. Everything else (sealed box, secretstream, Ed25519,
AEAD, random bytes) stays libsodium.

The sealed box is libsodium's `crypto_box_seal` construction (ephemeral X25519 key, nonce =
BLAKE2b-192(epk || pk), `crypto_box`) with the ephemeral key drawn from the caller's random
source, so known-answer vectors can be regenerated. Its output opens with libsodium's own
`crypto_box_seal_open`; a test holds the two byte-identical.
"""

from __future__ import annotations

import hashlib
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
    if len(label) > 16:
        raise ValueError("personalisation is at most 16 bytes")
    # libsodium's binding took `bytes` only: anything else is still a TypeError.
    if not isinstance(data, bytes) or not isinstance(key, bytes):
        raise TypeError("BLAKE2b input and key must be bytes")
    return hashlib.blake2b(data, digest_size=size, key=key, person=label).digest()


def derive_subkey(key: bytes, index: int, *, label: bytes) -> bytes:
    """libsodium's crypto_kdf_derive_from_key (BLAKE2b with the index as salt), byte-identical."""
    if len(label) > 16:
        raise ValueError("personalisation is at most 16 bytes")
    if not isinstance(key, bytes):
        raise TypeError("BLAKE2b key must be bytes")
    salt = index.to_bytes(8, "little")
    return hashlib.blake2b(b"", digest_size=32, key=key, salt=salt, person=label).digest()


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
        # What `nacl.signing.VerifyKey(public_key).verify(context + message, signature)` runs, in
        # its order and with its refusals, without building its wrapper objects.
        if not isinstance(public_key, bytes):
            raise nacl.exceptions.TypeError("the verifying key must be bytes")
        signed = context + message
        if not isinstance(signature, bytes):
            raise nacl.exceptions.TypeError("the signature must be bytes")
        sodium.crypto_sign_open(signature + signed, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError) as e:
        raise VerificationError(reason=f"{what}: bad signature") from e


def seal_box(recipient_pk: bytes, message: bytes, rng: Random) -> bytes:
    """libsodium's sealed box for `recipient_pk`, with the ephemeral key from `rng`."""
    ephemeral_sk = rng(sodium.crypto_box_SECRETKEYBYTES)
    ephemeral_pk = sodium.crypto_scalarmult_base(ephemeral_sk)
    nonce = hashlib.blake2b(ephemeral_pk + recipient_pk, digest_size=sodium.crypto_box_NONCEBYTES).digest()
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
