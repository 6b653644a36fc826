"""Envelope v1: one referral, sealed for one or more agencies. Sans-I/O.

Layout (byte-exact in docs/protocol.md): the header file is `[bin pre, bin post, bin sig]`,
followed out of band by one ciphertext stream per part. Part 0 is the manifest (the referral
body and the attachments' names and lengths); parts 1.. are the attachments.

The header's fields, structures and parsing are in `protocol.envelope_header`, the manifest's
in `protocol.envelope_manifest`; this module seals and opens, and names all three's public parts.

Invariants: the broker can validate a header with no key (`validate_for_broker`); a recipient
opens only after the checks in ARCHITECTURE.md's order (`EnvelopeOpener`); every check raises.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import nacl.signing

from protocol import codec
from protocol.certificate import AgencyCertificate, EncryptionKey, Role, TrustStore
from protocol.envelope_header import (
    CLOCK_SKEW_SECONDS,
    CTX_ENVELOPE,
    HEADER_LIMITS,
    ID_BYTES,
    MAGIC,
    MAX_ATTACHMENTS,
    MAX_MANIFEST_BYTES,
    MAX_RECIPIENTS,
    MAX_TTL_SECONDS,
    PAYLOAD_KEY_BYTES,
    SUITE,
    VERSION,
    WRAP_BYTES,
    EnvelopeHeader,
    PartInfo,
    RecipientEntry,
    envelope_hash,
    header_from_items,
    signed_digest,
)
from protocol.envelope_manifest import MANIFEST_LIMITS, MEDIA_TYPE, AttachmentInfo, Manifest, check_filename
from protocol.errors import (
    DecryptionFailed,
    EnvelopeExpired,
    Forbidden,
    InvalidField,
    MalformedInput,
    NotARecipient,
    Replayed,
    TooLarge,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import (
    Random,
    blake2b,
    derive_subkey,
    equal,
    open_box,
    seal_box,
    sign,
    system_random,
)
from protocol.stream import MAX_PADDED, STREAM_HEADER_BYTES, PartDecryptor, PartEncryptor, padded_length


def _pre_digest(pre: bytes) -> bytes:
    return blake2b(pre, label=b"cb-env-pre-v1")


def _ad(pre: bytes, part_no: int) -> bytes:
    return _pre_digest(pre) + part_no.to_bytes(4, "big")


def _part_key(payload_key: bytes, part_no: int) -> bytes:
    return derive_subkey(payload_key, part_no, label=b"cb-part-key-v1")


def _key_commitment(payload_key: bytes, envelope_id: bytes) -> bytes:
    return blake2b(envelope_id, label=b"cb-key-commit-v1", key=payload_key)


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
        signature = sign(self._signing_key, CTX_ENVELOPE, signed_digest(self._pre, post))
        raw = codec.encode([self._pre, post, signature])
        # What was just encoded decodes to these same items when they have the common shape and
        # the header is within its size limit, so they need not be parsed back from the bytes;
        # anything else (a caller's odd `now` or random source, say) is parsed as before.
        header = None
        if len(raw) <= HEADER_LIMITS.max_bytes:
            header = header_from_items(raw, self._pre, post, signature, self._pre_items, post_items)
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


__all__ = [
    "CLOCK_SKEW_SECONDS",
    "CTX_ENVELOPE",
    "HEADER_LIMITS",
    "ID_BYTES",
    "MAGIC",
    "MANIFEST_LIMITS",
    "MAX_ATTACHMENTS",
    "MAX_MANIFEST_BYTES",
    "MAX_RECIPIENTS",
    "MAX_TTL_SECONDS",
    "MEDIA_TYPE",
    "PAYLOAD_KEY_BYTES",
    "SUITE",
    "VERSION",
    "WRAP_BYTES",
    "AttachmentInfo",
    "EnvelopeHeader",
    "EnvelopeOpener",
    "EnvelopeSealer",
    "Manifest",
    "PartInfo",
    "RecipientEntry",
    "RecipientKey",
    "Sealed",
    "check_filename",
    "envelope_hash",
    "validate_for_broker",
]
