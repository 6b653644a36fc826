"""Seal plus open of a 2 KiB referral body for one recipient, on one core.

Baseline, in the same run: bare Ed25519 sign + verify of a 2 KiB message (PyNaCl). The sender's
certificate chain is verified once, outside the loop, as the recipient's client caches the
certificates it verified (`VerifiedOnce` stands in for that cache); the figure with the chain
verified for every envelope is printed too.

What bounds the ratio is shown two ways: each component timed on its own (sign, verify, sealed
box seal and open, secretstream, BLAKE2b, msgpack), and a profile of the real loop grouped by
component (profiling inflates the Python share). One-shot BLAKE2b runs through `hashlib` (see
`protocol.primitives`); the part digests of `protocol.stream` still go through PyNaCl.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
from collections.abc import Callable
from functools import partial

import nacl.signing

from bench import NOW, BenchWorld, Rate, bench_world, rate
from protocol import codec
from protocol.certificate import AgencyCertificate, TrustStore
from protocol.envelope import CTX_ENVELOPE, EnvelopeOpener, EnvelopeSealer
from protocol.primitives import blake2b, open_box, seal_box, sign, system_random, verify
from protocol.stream import PartDecryptor, PartEncryptor, padded_length

BODY_BYTES = 2048
PROFILE_ENVELOPES = 2000
SODIUM_GROUPS = (
    ("crypto_sign_open", "libsodium: Ed25519 verify"),
    ("crypto_sign", "libsodium: Ed25519 sign"),
    ("scalarmult", "libsodium: X25519 sealed box"),
    ("crypto_box", "libsodium: X25519 sealed box"),
    ("secretstream", "libsodium: secretstream"),
    ("generichash", "libsodium: BLAKE2b (part digests)"),
    ("", "libsodium: other (random bytes, ...)"),
)


class VerifiedOnce(TrustStore):
    """Pinned roots plus the recipient's cache: a certificate verified for a time is not
    verified again for that same time."""

    def __init__(self, trust: TrustStore) -> None:
        super().__init__(trust.roots.values())
        self._verified: dict[tuple[bytes, int], AgencyCertificate] = {}

    def verify_agency(self, data: bytes | AgencyCertificate, at: int) -> AgencyCertificate:
        key = (data.raw if isinstance(data, AgencyCertificate) else bytes(data), at)
        if key not in self._verified:
            self._verified[key] = super().verify_agency(data, at)
        return self._verified[key]


def referral_body() -> bytes:
    text = {"victim": "สมชาย ใจดี", "focal_point": "ນາງ ສົມພອນ ແກ້ວມະນີ", "notes": ""}
    body = json.dumps(text, ensure_ascii=False).encode()
    text["notes"] = "x" * (BODY_BYTES - len(body))
    body = json.dumps(text, ensure_ascii=False).encode()
    assert len(body) == BODY_BYTES
    return body


def seal_and_open(world: BenchWorld, trust: TrustStore, body: bytes) -> None:
    sealer = EnvelopeSealer(
        sender=world.sender,
        signing_key=world.sender_key,
        recipients=world.recipients,
        content_type="application/json",
        body=body,
        now=NOW,
    )
    manifest_ct = sealer.manifest_ciphertext()
    sealed = sealer.finish()
    opener = EnvelopeOpener(
        sealed.raw,
        trust=trust,
        sender_certificate=world.sender,
        recipient_id=world.opener_id,
        keys=world.opener_keys,
        now=NOW + 60,
    )
    opener.open_manifest(manifest_ct)
    opener.finish()


def components(world: BenchWorld, body: bytes, seconds: float, cap: int) -> dict[str, Rate]:
    key = nacl.signing.SigningKey(bytes(32))
    verify_key = bytes(key.verify_key)
    signed = key.sign(body)
    digest = os.urandom(64)
    envelope_sig = sign(key, CTX_ENVELOPE, digest)
    recipient = world.recipients[0]
    secret = next(iter(world.opener_keys.values()))
    wrap = seal_box(recipient.public_key, bytes(48), system_random)
    header = bytes(420)
    stream_key, stream_header, ad = os.urandom(32), os.urandom(24), os.urandom(36)
    manifest = bytes(BODY_BYTES + 150)
    enc = PartEncryptor(stream_key, stream_header, ad, len(manifest))
    manifest_ct = b"".join([*enc.update(manifest), *enc.finalize()])
    assert enc.digest is not None
    manifest_digest = enc.digest
    structure = [bytes(16), "TH-FOCAL", [["LA-FOCAL-1", bytes(16), bytes(96)]], 1, 2, [[0, bytes(24), 2560]]]
    encoded = codec.encode(structure)

    def encrypt() -> None:
        e = PartEncryptor(stream_key, stream_header, ad, len(manifest))
        b"".join([*e.update(manifest), *e.finalize()])

    def decrypt() -> None:
        d = PartDecryptor(stream_key, stream_header, ad, padded_length(len(manifest)), manifest_digest, None)
        d.update(manifest_ct)
        d.finalize()

    def sign_and_verify() -> None:
        nacl.signing.VerifyKey(verify_key).verify(key.sign(body))

    operations: dict[str, Callable[[], object]] = {
        "baseline: Ed25519 sign + verify, 2 KiB": sign_and_verify,
        "Ed25519 sign, 2 KiB": partial(key.sign, body),
        "Ed25519 verify, 2 KiB": partial(nacl.signing.VerifyKey(verify_key).verify, signed),
        "envelope signature (sign)": partial(sign, key, CTX_ENVELOPE, digest),
        "envelope signature (verify)": partial(
            verify, verify_key, CTX_ENVELOPE, digest, envelope_sig, what="x"
        ),
        "sealed box seal (X25519 keygen + 1 scalar mult)": partial(
            seal_box, recipient.public_key, bytes(48), system_random
        ),
        "sealed box open (1 scalar mult)": partial(open_box, secret.public_key, secret.secret_key, wrap),
        "certificate chain verify": partial(world.trust.verify_agency, world.sender.raw, NOW),
        "secretstream encrypt, 2 KiB manifest": encrypt,
        "secretstream decrypt, 2 KiB manifest": decrypt,
        "BLAKE2b-256 of a 420-byte header": partial(blake2b, header, label=b"cb-envelope-v1"),
        "msgpack canonical encode, header-sized": partial(codec.encode, structure),
        "msgpack canonical decode, header-sized": partial(codec.decode, encoded),
    }
    return {name: rate(op, seconds=seconds, max_iterations=cap) for name, op in operations.items()}


def profile_group(filename: str, function: str) -> str:
    """The component a profiled function's own time is charged to."""
    sodium_prefix = "<built-in method _sodium."
    if function.startswith(sodium_prefix):
        return next(group for needle, group in SODIUM_GROUPS if needle in function)
    if "_blake2" in function:
        return "hashlib: BLAKE2b (one-shot hashes)"
    if "msgpack" in filename or "msgpack" in function:
        return "msgpack"
    if "/nacl/" in filename:
        return "PyNaCl wrappers (Python)"
    if filename.endswith("protocol/codec.py"):
        return "protocol.codec canonical checks (Python)"
    if filename.endswith("protocol/stream.py"):
        return "protocol.stream part objects (Python)"
    if "/protocol/" in filename:
        return "protocol, other (Python)"
    return "interpreter built-ins and the loop"


def profile_groups(world: BenchWorld, trust: TrustStore, body: bytes) -> tuple[float, dict[str, float]]:
    """Seconds of `PROFILE_ENVELOPES` seal+open under cProfile, and each component's share of
    the functions' own time."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(PROFILE_ENVELOPES):
        seal_and_open(world, trust, body)
    profiler.disable()
    shares: dict[str, float] = {}
    for (filename, _line, function), row in pstats.Stats(profiler).stats.items():  # type: ignore[attr-defined]
        group = profile_group(filename, function)
        shares[group] = shares.get(group, 0.0) + row[2]
    total = sum(shares.values())
    ordered = sorted(shares.items(), key=lambda item: -item[1])
    return total, {group: seconds / total for group, seconds in ordered}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.small_envelopes", description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.2, help="per timed round (5 rounds each)")
    parser.add_argument("--max-iterations", type=int, default=20000, help="per timed round")
    args = parser.parse_args(argv)
    seconds = min(max(args.seconds, 0.05), 10.0)
    cap = min(max(args.max_iterations, 10), 1_000_000)
    world = bench_world(1)
    body = referral_body()
    cached = VerifiedOnce(world.trust)
    cached.verify_agency(world.sender.raw, NOW + 60)
    envelopes = rate(partial(seal_and_open, world, cached, body), seconds=seconds, max_iterations=cap)
    uncached = rate(partial(seal_and_open, world, world.trust, body), seconds=seconds, max_iterations=cap)
    parts = components(world, body, seconds, cap)
    baseline = parts["baseline: Ed25519 sign + verify, 2 KiB"]
    print(f"2 KiB referral body, 1 recipient, one core (median of 5 rounds of up to {seconds} s)")
    for label, measured in (
        ("seal + open, chain verified once", envelopes),
        ("seal + open, chain every envelope", uncached),
        ("baseline Ed25519 sign + verify", baseline),
    ):
        print(f"  {label:34} {measured.per_second:7.0f} /s  {measured.microseconds:6.0f} us")
    print(
        f"  ratio {envelopes.per_second / baseline.per_second:.2f} (target 0.5);"
        f" chain every envelope {uncached.per_second / baseline.per_second:.2f}"
    )
    floor = sum(
        parts[name].microseconds
        for name in (
            "envelope signature (sign)",
            "envelope signature (verify)",
            "sealed box seal (X25519 keygen + 1 scalar mult)",
            "sealed box open (1 scalar mult)",
        )
    )
    print(
        f"  public-key operations alone (sign, verify, sealed box seal and open): {floor:.0f} us,"
        f" so the ratio cannot exceed {baseline.microseconds / floor:.2f}"
    )
    print("components, each on its own:")
    for name, measured in parts.items():
        print(f"  {name:48} {measured.microseconds:8.1f} us")
    total, shares = profile_groups(world, cached, body)
    print(f"profile of {PROFILE_ENVELOPES} seal + open under cProfile ({total:.2f} s), share of time:")
    for group, share in shares.items():
        print(f"  {group:42} {100 * share:5.1f} %")


if __name__ == "__main__":
    main()
