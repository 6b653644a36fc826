"""Fingerprints of public keys that two people can compare by reading them aloud on the phone.

`fingerprint(public_key)` is BLAKE2b-320 (personalised `cb-fpr-v1`) of the 32-byte public key,
cut into eight 5-byte big-endian chunks, each shown as its value mod 100000 in five decimal
digits: "12345 67890 ..." (forty digits, about 132 bits, like Signal's safety numbers). Digits
read the same in Thai, Lao and English. The same function serves root, agency signing,
encryption, broker receipt and checkpoint keys: the key's role is said next to it, not mixed in.

`key_id_hex` is the 32-hex-digit form of `protocol.primitives.key_id`, the id that
certificates, envelopes and revocation lists name a key by.
"""

from __future__ import annotations

from protocol.primitives import PUBLIC_KEY_BYTES, blake2b, key_id

GROUPS = 8
GROUP_BYTES = 5
FINGERPRINT_LABEL = b"cb-fpr-v1"


def fingerprint(public_key: bytes) -> str:
    """Forty digits in eight groups of five, to read aloud."""
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError("a public key is 32 bytes")
    digest = blake2b(public_key, label=FINGERPRINT_LABEL, size=GROUPS * GROUP_BYTES)
    chunks = (digest[i : i + GROUP_BYTES] for i in range(0, len(digest), GROUP_BYTES))
    return " ".join(f"{int.from_bytes(chunk, 'big') % 100000:05d}" for chunk in chunks)


def key_id_hex(public_key: bytes) -> str:
    """The key id in hex, as `casebridge keys revoke --key-id` takes it."""
    return key_id(public_key).hex()
