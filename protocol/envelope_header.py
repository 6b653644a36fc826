"""Envelope v1 header: its constants, its structures and its parsing. Sans-I/O.

The header file is `[bin pre, bin post, bin sig]` (byte-exact in docs/protocol.md):
- `pre` lists magic, version, suite, envelope id, sender and its signing key id, created and
  expiry times, the sorted recipients each with its encryption key id and sealed-box wrap of
  `envelope_id || K`, a key commitment to K, and each part's stream header and padded length.
- `post` lists each part's ciphertext length and BLAKE2b-256 digest.
- `sig` is the sender's Ed25519 signature over `CTX_ENVELOPE || BLAKE2b-512(pre || post)`.
- The envelope hash, which receipts and the audit log name, is BLAKE2b-256 of the header file.

Invariants: `EnvelopeHeader.parse` checks structure only (signatures separately) and raises
`MalformedInput` (or a subclass) naming the first problem. A fast reading of the common shape
(`well_formed_header`) returns exactly what the checked reading returns, or None so that the
checked reading names the problem (a test holds the two together).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol import codec
from protocol.certificate import AGENCY_ID, AgencyCertificate
from protocol.errors import MalformedInput, TooLarge, UnsupportedVersion, VerificationError
from protocol.primitives import (
    HASH_BYTES,
    KEY_ID_BYTES,
    SEALED_BOX_OVERHEAD,
    SIGNATURE_BYTES,
    blake2b,
    equal,
    verify,
)
from protocol.stream import MAX_PADDED, STREAM_HEADER_BYTES, PartVerifier, ciphertext_length, padded_length

MAGIC = "CB-ENV"
VERSION = 1
SUITE = 1  # X25519 sealed box, XChaCha20-Poly1305 secretstream, Ed25519, BLAKE2b
CTX_ENVELOPE = b"casebridge/envelope-v1\x00"
ID_BYTES = 16
PAYLOAD_KEY_BYTES = 32
WRAP_BYTES = ID_BYTES + PAYLOAD_KEY_BYTES + SEALED_BOX_OVERHEAD
MAX_RECIPIENTS = 64
MAX_ATTACHMENTS = 32
MAX_MANIFEST_BYTES = 16 << 20
MAX_TTL_SECONDS = 90 * 86400
CLOCK_SKEW_SECONDS = 300
HEADER_LIMITS = codec.Limits(max_bytes=64 << 10)
_MAX_MANIFEST_PADDED = padded_length(MAX_MANIFEST_BYTES)
_INT_MAX = 2**63 - 1


def envelope_hash(header: bytes) -> bytes:
    return blake2b(header, label=b"cb-envelope-v1")


# --- structures -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientEntry:
    agency_id: str
    key_id: bytes
    wrap: bytes


@dataclass(frozen=True, slots=True)
class PartInfo:
    part_no: int
    stream_header: bytes
    padded_length: int
    ciphertext_length: int
    digest: bytes


@dataclass(frozen=True, slots=True)
class EnvelopeHeader:
    """A parsed header. Parsing checks structure only; signatures are checked separately."""

    envelope_id: bytes
    sender_id: str
    sender_key_id: bytes
    created_at: int
    expires_at: int
    recipients: tuple[RecipientEntry, ...]
    key_commitment: bytes
    parts: tuple[PartInfo, ...]
    raw: bytes = field(repr=False)
    pre: bytes = field(repr=False)
    post: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    envelope_hash: bytes = field(repr=False)

    @property
    def recipient_ids(self) -> tuple[str, ...]:
        return tuple(r.agency_id for r in self.recipients)

    @property
    def total_ciphertext_length(self) -> int:
        return sum(p.ciphertext_length for p in self.parts)

    @classmethod
    def parse(cls, data: bytes) -> EnvelopeHeader:
        """Parse a header file; raises `MalformedInput` (or a subclass) naming the first problem."""
        header = well_formed_header(data)
        return header if header is not None else cls._parse_checked(data)

    @classmethod
    def _parse_checked(cls, data: bytes) -> EnvelopeHeader:
        outer = codec.array(codec.decode(data, limits=HEADER_LIMITS), "envelope", 3)
        pre = codec.bin_(outer[0], "envelope.pre")
        post = codec.bin_(outer[1], "envelope.post")
        signature = codec.bin_(outer[2], "envelope.signature", SIGNATURE_BYTES)
        p = codec.array(codec.decode(pre, limits=HEADER_LIMITS), "envelope.pre", 11)
        codec.literal(p[0], "magic", MAGIC)
        if codec.int_(p[1], "version") != VERSION or codec.int_(p[2], "suite") != SUITE:
            raise UnsupportedVersion(reason=f"envelope version {p[1]} suite {p[2]}")
        recipients = []
        for i, raw in enumerate(codec.array(p[8], "recipients", max_len=MAX_RECIPIENTS)):
            r = codec.array(raw, f"recipients[{i}]", 3)
            recipients.append(
                RecipientEntry(
                    agency_id=codec.str_(r[0], f"recipients[{i}].agency_id", pattern=AGENCY_ID),
                    key_id=codec.bin_(r[1], f"recipients[{i}].key_id", KEY_ID_BYTES),
                    wrap=codec.bin_(r[2], f"recipients[{i}].wrap", WRAP_BYTES),
                )
            )
        if not recipients:
            raise MalformedInput(reason="recipients: none")
        codec.sorted_unique([r.agency_id for r in recipients], "recipients")
        pre_parts = codec.array(p[10], "parts", max_len=MAX_ATTACHMENTS + 1)
        post_parts = codec.array(codec.decode(post, limits=HEADER_LIMITS), "envelope.post", len(pre_parts))
        if not pre_parts:
            raise MalformedInput(reason="parts: none")
        parts = []
        for i, (a_raw, b_raw) in enumerate(zip(pre_parts, post_parts, strict=True)):
            a = codec.array(a_raw, f"parts[{i}]", 3)
            b = codec.array(b_raw, f"post[{i}]", 3)
            if codec.int_(a[0], f"parts[{i}].part_no") != i or codec.int_(b[0], f"post[{i}].part_no") != i:
                raise MalformedInput(reason=f"parts[{i}]: part numbers must run 0, 1, 2, ...")
            padded = codec.int_(a[2], f"parts[{i}].padded_length", 1, MAX_PADDED)
            if padded_length(padded - 1) != padded:
                raise MalformedInput(reason=f"parts[{i}]: padded length is not a padding bucket")
            ct_len = codec.int_(b[1], f"post[{i}].ciphertext_length")
            if ct_len != ciphertext_length(padded):
                raise MalformedInput(reason=f"post[{i}]: ciphertext length inconsistent with padding")
            parts.append(
                PartInfo(
                    part_no=i,
                    stream_header=codec.bin_(a[1], f"parts[{i}].stream_header", STREAM_HEADER_BYTES),
                    padded_length=padded,
                    ciphertext_length=ct_len,
                    digest=codec.bin_(b[2], f"post[{i}].digest", HASH_BYTES),
                )
            )
        if parts[0].padded_length > padded_length(MAX_MANIFEST_BYTES):
            raise TooLarge(reason="manifest part too large")
        created_at = codec.int_(p[6], "created_at")
        expires_at = codec.int_(p[7], "expires_at")
        if not created_at < expires_at <= created_at + MAX_TTL_SECONDS:
            raise MalformedInput(reason="expires_at must be after created_at, within 90 days")
        return cls(
            envelope_id=codec.bin_(p[3], "envelope_id", ID_BYTES),
            sender_id=codec.str_(p[4], "sender_id", pattern=AGENCY_ID),
            sender_key_id=codec.bin_(p[5], "sender_key_id", KEY_ID_BYTES),
            created_at=created_at,
            expires_at=expires_at,
            recipients=tuple(recipients),
            key_commitment=codec.bin_(p[9], "key_commitment", HASH_BYTES),
            parts=tuple(parts),
            raw=bytes(data),
            pre=pre,
            post=post,
            signature=signature,
            envelope_hash=envelope_hash(bytes(data)),
        )

    def verify_signature(self, sender: AgencyCertificate) -> None:
        """Check the signature against the sender's (already verified) certificate."""
        if sender.agency_id != self.sender_id or not equal(sender.key_id, self.sender_key_id):
            raise VerificationError(reason="envelope sender does not match the certificate")
        verify(
            sender.signing_key,
            CTX_ENVELOPE,
            signed_digest(self.pre, self.post),
            self.signature,
            what="envelope",
        )

    def part_verifier(self, part_no: int) -> PartVerifier:
        part = self.parts[part_no]
        return PartVerifier(part.ciphertext_length, part.digest)


def signed_digest(pre: bytes, post: bytes) -> bytes:
    return blake2b(pre + post, label=b"cb-env-sig-v1", size=64)


# --- header parsing, common case ---------------------------------------------------------------
#
# `well_formed_header` reads a header of exactly the shape `EnvelopeHeader._parse_checked`
# accepts (exact types, lengths, ranges and order, checked inline rather than by one field
# helper per value) and returns None on any doubt, never raising: the checked parser then reads
# the input again and names the first problem. Whatever it returns, the checked parser returns
# too, field for field (a test holds the two together).


def _well_formed_recipients(value: object) -> list[RecipientEntry] | None:
    if type(value) is not list or not value or len(value) > MAX_RECIPIENTS:
        return None
    entries = []
    previous = ""
    for r in value:
        if not (
            type(r) is list
            and len(r) == 3
            and type(r[0]) is str
            and r[0] > previous
            and AGENCY_ID.fullmatch(r[0])
            and type(r[1]) is bytes
            and len(r[1]) == KEY_ID_BYTES
            and type(r[2]) is bytes
            and len(r[2]) == WRAP_BYTES
        ):
            return None
        previous = r[0]
        entries.append(RecipientEntry(r[0], r[1], r[2]))
    return entries


def _well_formed_parts(pre_parts: object, post_parts: object) -> list[PartInfo] | None:
    if (
        type(pre_parts) is not list
        or type(post_parts) is not list
        or not pre_parts
        or len(pre_parts) > MAX_ATTACHMENTS + 1
        or len(post_parts) != len(pre_parts)
    ):
        return None
    parts = []
    for i, (a, b) in enumerate(zip(pre_parts, post_parts, strict=True)):
        if not (
            type(a) is list
            and len(a) == 3
            and type(b) is list
            and len(b) == 3
            and type(a[0]) is int
            and a[0] == i
            and type(b[0]) is int
            and b[0] == i
            and type(a[1]) is bytes
            and len(a[1]) == STREAM_HEADER_BYTES
            and type(a[2]) is int
            and 1 <= a[2] <= MAX_PADDED
            and type(b[1]) is int
            and type(b[2]) is bytes
            and len(b[2]) == HASH_BYTES
        ):
            return None
        padded, ct_len = a[2], b[1]
        if padded_length(padded - 1) != padded or ct_len != ciphertext_length(padded):
            return None
        parts.append(PartInfo(i, a[1], padded, ct_len, b[2]))
    if parts[0].padded_length > _MAX_MANIFEST_PADDED:
        return None
    return parts


def header_from_items(
    raw: bytes, pre: bytes, post: bytes, signature: bytes, p: object, post_items: object
) -> EnvelopeHeader | None:
    """The header from its decoded `pre` and `post` arrays, if they have the common shape."""
    if not (type(p) is list and len(p) == 11):
        return None
    magic, version, suite, envelope_id, sender_id, sender_key_id, created, expires = p[:8]
    if not (
        type(magic) is str
        and magic == MAGIC
        and type(version) is int
        and version == VERSION
        and type(suite) is int
        and suite == SUITE
        and type(envelope_id) is bytes
        and len(envelope_id) == ID_BYTES
        and type(sender_id) is str
        and AGENCY_ID.fullmatch(sender_id)
        and type(sender_key_id) is bytes
        and len(sender_key_id) == KEY_ID_BYTES
        and type(created) is int
        and type(expires) is int
        and 0 <= created < expires <= created + MAX_TTL_SECONDS
        and expires <= _INT_MAX
        and type(p[9]) is bytes
        and len(p[9]) == HASH_BYTES
        and len(signature) == SIGNATURE_BYTES
    ):
        return None
    recipients = _well_formed_recipients(p[8])
    parts = _well_formed_parts(p[10], post_items)
    if recipients is None or parts is None:
        return None
    return EnvelopeHeader(
        envelope_id,
        sender_id,
        sender_key_id,
        created,
        expires,
        tuple(recipients),
        p[9],
        tuple(parts),
        raw,
        pre,
        post,
        signature,
        envelope_hash(raw),
    )


def well_formed_header(data: bytes) -> EnvelopeHeader | None:
    try:
        outer = codec.decode(data, limits=HEADER_LIMITS)
        if not (type(outer) is list and len(outer) == 3 and all(type(x) is bytes for x in outer)):
            return None
        pre, post, signature = outer
        p = codec.decode(pre, limits=HEADER_LIMITS)
        post_items = codec.decode(post, limits=HEADER_LIMITS)
    except MalformedInput:
        return None
    return header_from_items(bytes(data), pre, post, signature, p, post_items)
