"""Envelope v1: one referral, sealed for one or more agencies. Sans-I/O.

Layout (byte-exact in docs/protocol.md): the header file is `[bin pre, bin post, bin sig]`,
followed out of band by one ciphertext stream per part. Part 0 is the manifest (the referral
body and the attachments' names and lengths); parts 1.. are the attachments.

- `pre` lists magic, version, suite, envelope id, sender and its signing key id, created and
  expiry times, the sorted recipients each with its encryption key id and sealed-box wrap of
  `envelope_id || K`, a key commitment to K, and each part's stream header and padded length.
- `post` lists each part's ciphertext length and BLAKE2b-256 digest.
- `sig` is the sender's Ed25519 signature over `CTX_ENVELOPE || BLAKE2b-512(pre || post)`.
- The envelope hash, which receipts and the audit log name, is BLAKE2b-256 of the header file.

Invariants: the broker can validate a header with no key (`validate_for_broker`); a recipient
opens only after the checks in ARCHITECTURE.md's order (`EnvelopeOpener`); every check raises.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

import nacl.signing

from protocol import codec
from protocol.certificate import AGENCY_ID, AgencyCertificate, EncryptionKey, Role, TrustStore
from protocol.errors import (
    DecryptionFailed,
    EnvelopeExpired,
    Forbidden,
    InvalidField,
    MalformedInput,
    NotARecipient,
    Replayed,
    TooLarge,
    UnsupportedVersion,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import (
    HASH_BYTES,
    KEY_ID_BYTES,
    SEALED_BOX_OVERHEAD,
    SIGNATURE_BYTES,
    Random,
    blake2b,
    derive_subkey,
    equal,
    open_box,
    seal_box,
    sign,
    system_random,
    verify,
)
from protocol.stream import (
    MAX_PADDED,
    STREAM_HEADER_BYTES,
    PartDecryptor,
    PartEncryptor,
    PartVerifier,
    ciphertext_length,
    padded_length,
)

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
MANIFEST_LIMITS = codec.Limits(max_bytes=MAX_MANIFEST_BYTES + 4096, max_bin_len=MAX_MANIFEST_BYTES)
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}(;[ -~]{1,200})?")
FILENAME_FORBIDDEN = frozenset("/\\\x00")
_MAX_MANIFEST_PADDED = padded_length(MAX_MANIFEST_BYTES)
_INT_MAX = 2**63 - 1


def envelope_hash(header: bytes) -> bytes:
    return blake2b(header, label=b"cb-envelope-v1")


def _pre_digest(pre: bytes) -> bytes:
    return blake2b(pre, label=b"cb-env-pre-v1")


def _ad(pre: bytes, part_no: int) -> bytes:
    return _pre_digest(pre) + part_no.to_bytes(4, "big")


def _part_key(payload_key: bytes, part_no: int) -> bytes:
    return derive_subkey(payload_key, part_no, label=b"cb-part-key-v1")


def _key_commitment(payload_key: bytes, envelope_id: bytes) -> bytes:
    return blake2b(envelope_id, label=b"cb-key-commit-v1", key=payload_key)


def check_filename(name: str) -> str:
    """A file name a recipient can safely write: NFC, no path, no control characters."""
    name = codec.nfc(name)
    if not name or len(name) > 255 or name in {".", ".."}:
        raise InvalidField("filename", "1 to 255 characters, not '.' or '..'")
    if any(c in FILENAME_FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidField("filename", "no '/', '\\' or control characters")
    return name


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
class AttachmentInfo:
    filename: str
    media_type: str
    length: int


@dataclass(frozen=True, slots=True)
class Manifest:
    envelope_id: bytes
    sender_id: str
    recipients: tuple[str, ...]
    content_type: str
    body: bytes
    attachments: tuple[AttachmentInfo, ...]

    def encode(self) -> bytes:
        return codec.encode(
            [
                "CB-MANIFEST",
                VERSION,
                self.envelope_id,
                self.sender_id,
                list(self.recipients),
                self.content_type,
                self.body,
                [[i + 1, a.filename, a.media_type, a.length] for i, a in enumerate(self.attachments)],
            ],
            limits=MANIFEST_LIMITS,
        )

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        value = codec.decode(data, limits=MANIFEST_LIMITS)
        manifest = _well_formed_manifest(value)
        return manifest if manifest is not None else cls._from_checked(value)

    @classmethod
    def _from_checked(cls, value: object) -> Manifest:
        items = codec.array(value, "manifest", 8)
        codec.literal(items[0], "manifest.magic", "CB-MANIFEST")
        codec.literal(items[1], "manifest.version", VERSION)
        recipients = tuple(
            codec.str_(r, "manifest.recipients", pattern=AGENCY_ID)
            for r in codec.array(items[4], "manifest.recipients", max_len=MAX_RECIPIENTS)
        )
        attachments = []
        for i, raw in enumerate(codec.array(items[7], "manifest.attachments", max_len=MAX_ATTACHMENTS)):
            a = codec.array(raw, f"manifest.attachments[{i}]", 4)
            if codec.int_(a[0], "part_no") != i + 1:
                raise MalformedInput(reason="manifest attachments out of order")
            attachments.append(
                AttachmentInfo(
                    filename=codec.str_(a[1], "filename", max_len=255),
                    media_type=codec.str_(a[2], "media_type", max_len=300, pattern=MEDIA_TYPE),
                    length=codec.int_(a[3], "length", 0, MAX_PADDED),
                )
            )
        return cls(
            envelope_id=codec.bin_(items[2], "manifest.envelope_id", ID_BYTES),
            sender_id=codec.str_(items[3], "manifest.sender_id", pattern=AGENCY_ID),
            recipients=recipients,
            content_type=codec.str_(items[5], "manifest.content_type", max_len=300, pattern=MEDIA_TYPE),
            body=codec.bin_(items[6], "manifest.body", max_len=MAX_MANIFEST_BYTES),
            attachments=tuple(attachments),
        )


def _well_formed_manifest(value: object) -> Manifest | None:
    """The manifest `Manifest.parse` reads from a decoded value of the common shape (exact types,
    lengths and ranges, checked inline); None on any doubt, for the checked reading to name."""
    if not (type(value) is list and len(value) == 8):
        return None
    magic, version, envelope_id, sender_id, recipients, content_type, body, attachments = value
    if not (
        type(magic) is str
        and magic == "CB-MANIFEST"
        and type(version) is int
        and version == VERSION
        and type(envelope_id) is bytes
        and len(envelope_id) == ID_BYTES
        and type(sender_id) is str
        and AGENCY_ID.fullmatch(sender_id)
        and type(recipients) is list
        and len(recipients) <= MAX_RECIPIENTS
        and all(type(r) is str and AGENCY_ID.fullmatch(r) for r in recipients)
        and type(content_type) is str
        and len(content_type) <= 300
        and MEDIA_TYPE.fullmatch(content_type)
        and type(body) is bytes
        and len(body) <= MAX_MANIFEST_BYTES
        and type(attachments) is list
        and len(attachments) <= MAX_ATTACHMENTS
    ):
        return None
    infos = []
    for i, a in enumerate(attachments):
        if not (
            type(a) is list
            and len(a) == 4
            and type(a[0]) is int
            and a[0] == i + 1
            and type(a[1]) is str
            and len(a[1]) <= 255
            and type(a[2]) is str
            and len(a[2]) <= 300
            and MEDIA_TYPE.fullmatch(a[2])
            and type(a[3]) is int
            and 0 <= a[3] <= MAX_PADDED
        ):
            return None
        infos.append(AttachmentInfo(a[1], a[2], a[3]))
    return Manifest(envelope_id, sender_id, tuple(recipients), content_type, body, tuple(infos))


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
        header = _well_formed_header(data)
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
            _signed_digest(self.pre, self.post),
            self.signature,
            what="envelope",
        )

    def part_verifier(self, part_no: int) -> PartVerifier:
        part = self.parts[part_no]
        return PartVerifier(part.ciphertext_length, part.digest)


def _signed_digest(pre: bytes, post: bytes) -> bytes:
    return blake2b(pre + post, label=b"cb-env-sig-v1", size=64)


# --- header parsing, common case ---------------------------------------------------------------
#
# `_well_formed_header` reads a header of exactly the shape `EnvelopeHeader._parse_checked`
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


def _well_formed_items(
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


def _well_formed_header(data: bytes) -> EnvelopeHeader | None:
    try:
        outer = codec.decode(data, limits=HEADER_LIMITS)
        if not (type(outer) is list and len(outer) == 3 and all(type(x) is bytes for x in outer)):
            return None
        pre, post, signature = outer
        p = codec.decode(pre, limits=HEADER_LIMITS)
        post_items = codec.decode(post, limits=HEADER_LIMITS)
    except MalformedInput:
        return None
    return _well_formed_items(bytes(data), pre, post, signature, p, post_items)


# --- sealing --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sealed:
    """A finished envelope's header; the parts' ciphertext went to the caller as it was made."""

    header: EnvelopeHeader

    @property
    def raw(self) -> bytes:
        return self.header.raw


class EnvelopeSealer:
    """Seals one envelope. Use: create; `manifest_ciphertext()`; for each attachment,
    `attachment(i)` and feed its plaintext; then `finish()` for the signed header.

    Recipients are encryption keys that the caller verified through `TrustStore`.
    """

    def __init__(
        self,
        *,
        sender: AgencyCertificate,
        signing_key: nacl.signing.SigningKey,
        recipients: Sequence[EncryptionKey],
        content_type: str,
        body: bytes,
        attachments: Sequence[AttachmentInfo] = (),
        now: int,
        ttl_seconds: int = 14 * 86400,
        rng: Random = system_random,
    ) -> None:
        if bytes(signing_key.verify_key) != sender.signing_key:
            raise ValueError("signing key does not match the sender certificate")
        if not 1 <= len(recipients) <= MAX_RECIPIENTS:
            raise InvalidField("recipients", f"1 to {MAX_RECIPIENTS} agencies")
        by_agency = {r.agency_id: r for r in recipients}
        if len(by_agency) != len(recipients):
            raise InvalidField("recipients", "one encryption key per agency")
        if sender.agency_id in by_agency:
            raise InvalidField("recipients", "agencies other than the sender")
        if len(attachments) > MAX_ATTACHMENTS:
            raise InvalidField("attachments", f"at most {MAX_ATTACHMENTS}")
        if not 0 < ttl_seconds <= MAX_TTL_SECONDS:
            raise InvalidField("ttl_seconds", f"1 to {MAX_TTL_SECONDS}")
        if not MEDIA_TYPE.fullmatch(content_type):
            raise InvalidField("content_type", "a media type such as 'application/json'")
        attachments = tuple(
            AttachmentInfo(check_filename(a.filename), a.media_type, a.length) for a in attachments
        )
        for a in attachments:
            if not MEDIA_TYPE.fullmatch(a.media_type):
                raise InvalidField("media_type", f"a media type for {a.filename!r}")
            if not 0 <= a.length < MAX_PADDED // 2:
                raise TooLarge(reason="attachment too large")
        self._signing_key = signing_key
        self._sender = sender
        self.envelope_id = rng(ID_BYTES)
        self._payload_key = rng(PAYLOAD_KEY_BYTES)
        ordered = sorted(recipients, key=lambda r: r.agency_id)
        manifest = Manifest(
            envelope_id=self.envelope_id,
            sender_id=sender.agency_id,
            recipients=tuple(r.agency_id for r in ordered),
            content_type=content_type,
            body=bytes(body),
            attachments=attachments,
        ).encode()
        if len(manifest) > MAX_MANIFEST_BYTES:
            raise TooLarge(reason="referral body too large")
        self._manifest = manifest
        lengths = [len(manifest), *(a.length for a in attachments)]
        stream_headers = [rng(STREAM_HEADER_BYTES) for _ in lengths]
        self._pre_items: list[object] = [
            MAGIC,
            VERSION,
            SUITE,
            self.envelope_id,
            sender.agency_id,
            sender.key_id,
            now,
            now + ttl_seconds,
            [
                [r.agency_id, r.key_id, seal_box(r.public_key, self.envelope_id + self._payload_key, rng)]
                for r in ordered
            ],
            _key_commitment(self._payload_key, self.envelope_id),
            [[i, h, padded_length(n)] for i, (h, n) in enumerate(zip(stream_headers, lengths, strict=True))],
        ]
        self._pre = codec.encode(self._pre_items)
        pre_digest = _pre_digest(self._pre)
        self._encryptors = [
            PartEncryptor(_part_key(self._payload_key, i), h, pre_digest + i.to_bytes(4, "big"), n)
            for i, (h, n) in enumerate(zip(stream_headers, lengths, strict=True))
        ]

    def manifest_ciphertext(self) -> bytes:
        enc = self._encryptors[0]
        return b"".join([*enc.update(self._manifest), *enc.finalize()])

    def attachment(self, index: int) -> PartEncryptor:
        return self._encryptors[index + 1]

    def finish(self) -> Sealed:
        post_items: list[object] = []
        for i, enc in enumerate(self._encryptors):
            if enc.digest is None:
                raise ValueError(f"part {i} was not finalized")
            post_items.append([i, enc.ciphertext_length, enc.digest])
        post = codec.encode(post_items)
        signature = sign(self._signing_key, CTX_ENVELOPE, _signed_digest(self._pre, post))
        raw = codec.encode([self._pre, post, signature])
        # What was just encoded decodes to these same items when they have the common shape and
        # the header is within its size limit, so they need not be parsed back from the bytes;
        # anything else (a caller's odd `now` or random source, say) is parsed as before.
        header = None
        if len(raw) <= HEADER_LIMITS.max_bytes:
            header = _well_formed_items(raw, self._pre, post, signature, self._pre_items, post_items)
        return Sealed(header if header is not None else EnvelopeHeader.parse(raw))


# --- the broker's keyless checks --------------------------------------------------------------


def validate_for_broker(
    header_bytes: bytes | EnvelopeHeader,
    *,
    sender: AgencyCertificate,
    authenticated_agency: str,
    recipient_exists: Container[str],
    now: int,
) -> EnvelopeHeader:
    """What the broker checks without any key: structure, signature by the authenticated
    sender's verified certificate, known recipients, time window. Part digests are checked as
    parts stream in (`EnvelopeHeader.part_verifier`); a new id is the store's to check.

    `header_bytes` may be a header the caller already parsed (`EnvelopeHeader.parse`), so a
    broker that reads a field first does not parse twice."""
    header = header_bytes if isinstance(header_bytes, EnvelopeHeader) else EnvelopeHeader.parse(header_bytes)
    if header.sender_id != authenticated_agency:
        raise Forbidden(reason="envelope sender is not the authenticated agency")
    if not sender.has_role(Role.AGENCY):
        raise Forbidden(reason=f"{sender.agency_id} is not certified to send referrals")
    header.verify_signature(sender)
    for r in header.recipients:
        if r.agency_id not in recipient_exists:
            raise InvalidField("recipients", f"registered agencies; {r.agency_id} is unknown")
    if header.created_at > now + CLOCK_SKEW_SECONDS:
        raise VerificationError(reason="envelope created in the future")
    if header.expires_at <= now:
        raise EnvelopeExpired(reason="envelope already expired")
    return header


# --- opening --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecipientKey:
    """One of the recipient's X25519 keypairs (current or kept for old envelopes)."""

    public_key: bytes
    secret_key: bytes


class EnvelopeOpener:
    """Opens an envelope for one recipient, with the checks in order:

    1. the sender's certificate chain (as of `at`, the broker's acceptance time if known),
    2. the header signature, 3. this agency among the recipients with a key it holds,
    4. the unwrapped envelope id, 5. the key commitment, 6. replay and expiry (as of `now`),
    then 7. the manifest (part 0) decrypted and matched against the header. Attachments are
    decrypted with `attachment(i)` into quarantine; `finish()` confirms all parts passed.

    `header_bytes` may be a header the caller already parsed (`EnvelopeHeader.parse`).
    """

    def __init__(
        self,
        header_bytes: bytes | EnvelopeHeader,
        *,
        trust: TrustStore,
        sender_certificate: bytes | AgencyCertificate,
        recipient_id: str,
        keys: Mapping[bytes, RecipientKey],
        now: int,
        at: int | None = None,
        processed: Container[bytes] = frozenset(),
    ) -> None:
        header = (
            header_bytes if isinstance(header_bytes, EnvelopeHeader) else EnvelopeHeader.parse(header_bytes)
        )
        sender = trust.verify_agency(sender_certificate, now if at is None else at)
        if not sender.has_role(Role.AGENCY):
            # Only agencies send referrals; a broker or auditor key must not be able to.
            raise UntrustedCertificate(reason=f"{sender.agency_id} is not certified to send referrals")
        header.verify_signature(sender)
        entry = next((r for r in header.recipients if r.agency_id == recipient_id), None)
        if entry is None:
            raise NotARecipient(reason=f"{recipient_id} is not among the recipients")
        key = keys.get(entry.key_id)
        if key is None:
            raise NotARecipient(reason=f"no private key for key id {entry.key_id.hex()}")
        unwrapped = open_box(key.public_key, key.secret_key, entry.wrap)
        if len(unwrapped) != ID_BYTES + PAYLOAD_KEY_BYTES or not equal(
            unwrapped[:ID_BYTES], header.envelope_id
        ):
            raise DecryptionFailed(reason="wrapped key is for another envelope")
        payload_key = unwrapped[ID_BYTES:]
        if not equal(_key_commitment(payload_key, header.envelope_id), header.key_commitment):
            raise DecryptionFailed(reason="key commitment mismatch")
        if header.envelope_id in processed:
            raise Replayed(reason=f"envelope {header.envelope_id.hex()} already processed")
        if now >= header.expires_at:
            raise EnvelopeExpired(reason="envelope expired before it was opened")
        if header.created_at > now + CLOCK_SKEW_SECONDS:
            raise VerificationError(reason="envelope created in the future")
        self.header = header
        self.sender = sender
        self._payload_key = payload_key
        self._pre_digest = _pre_digest(header.pre)
        self._manifest: Manifest | None = None
        self._finished: set[int] = set()

    def open_manifest(self, ciphertext: bytes) -> Manifest:
        dec = _TrackedDecryptor(self, 0, None)
        if dec.update(ciphertext):
            raise AssertionError("unreachable: manifest plaintext is held until finalize")
        try:
            manifest = Manifest.parse(dec.finalize())
        except MalformedInput as e:
            raise DecryptionFailed(reason=f"manifest malformed: {e.reason}") from e
        h = self.header
        if (
            manifest.envelope_id != h.envelope_id
            or manifest.sender_id != h.sender_id
            or manifest.recipients != h.recipient_ids
            or len(manifest.attachments) != len(h.parts) - 1
        ):
            raise DecryptionFailed(reason="manifest does not match the signed header")
        for a, part in zip(manifest.attachments, h.parts[1:], strict=True):
            if padded_length(a.length) != part.padded_length:
                raise DecryptionFailed(reason="attachment length does not match its padding")
            try:
                check_filename(a.filename)
            except InvalidField as e:
                raise DecryptionFailed(reason=f"manifest names an unsafe file: {e.detail}") from e
        self._manifest = manifest
        return manifest

    def attachment(self, index: int) -> PartDecryptor:
        if self._manifest is None:
            raise ValueError("open the manifest first")
        if not 0 <= index < len(self._manifest.attachments):
            raise IndexError(f"no attachment {index}")
        return _TrackedDecryptor(self, index + 1, self._manifest.attachments[index].length)

    def finish(self) -> Manifest:
        """Confirm every part was decrypted and checked; only then release plaintext."""
        if self._manifest is None or self._finished != set(range(len(self.header.parts))):
            raise DecryptionFailed(reason="not every part was decrypted and checked")
        return self._manifest


class _TrackedDecryptor(PartDecryptor):
    def __init__(self, opener: EnvelopeOpener, part_no: int, length: int | None) -> None:
        part = opener.header.parts[part_no]
        super().__init__(
            _part_key(opener._payload_key, part_no),
            part.stream_header,
            opener._pre_digest + part_no.to_bytes(4, "big"),
            part.padded_length,
            part.digest,
            length,
        )
        self._opener = opener
        self._part_no = part_no

    def finalize(self) -> bytes:
        result = super().finalize()
        self._opener._finished.add(self._part_no)
        return result
