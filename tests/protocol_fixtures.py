"""Shared building blocks for the protocol tests: real keys, real certificates, real envelopes.

Two national roots (TH and LA), agencies with Thai and Lao names, their signing and encryption
keys and a fresh `TrustStore`; helpers that seal a referral with in-memory attachments and open
it again as a recipient would; and, for the attack tests, the envelope's own building blocks
put together by hand (`forge`, `rebuild_header`), so a test can play a malicious sender or a
co-recipient. Keys come from fixed seeds, so every run sees the same identities. Nothing here
stands in for a CaseBridge component: every helper calls the real protocol code.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import nacl.signing
import pytest

from protocol import codec
from protocol.certificate import (
    AgencyCertificate,
    EncryptionKey,
    Role,
    RootCertificate,
    TrustStore,
    join_signed,
)
from protocol.envelope import (
    CTX_ENVELOPE,
    HEADER_LIMITS,
    MAGIC,
    SUITE,
    VERSION,
    AttachmentInfo,
    EnvelopeHeader,
    EnvelopeOpener,
    EnvelopeSealer,
    Manifest,
    RecipientKey,
    _ad,
    _key_commitment,
    _part_key,
)
from protocol.envelope_header import signed_digest
from protocol.primitives import Random, seal_box, sign, system_random, x25519_public
from protocol.stream import CHUNK_BYTES, STREAM_HEADER_BYTES, PartEncryptor, padded_length

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
DAY = 86_400
YEAR = 365 * DAY
CHUNK = CHUNK_BYTES
TTL = 14 * DAY

# Positions of the fields in an envelope header's signed `pre` array.
PRE_MAGIC, PRE_VERSION, PRE_SUITE, PRE_ID, PRE_SENDER, PRE_SENDER_KEY = 0, 1, 2, 3, 4, 5
PRE_CREATED, PRE_EXPIRES, PRE_RECIPIENTS, PRE_COMMITMENT, PRE_PARTS = 6, 7, 8, 9, 10

# Piece sizes that cut plaintext and ciphertext at awkward places, including empty pieces.
IRREGULAR = (1, 7, 0, 65_537, 3, 1_000_003, 262_144)

REFERRAL_BODY = (
    '{"subject":"ส่งต่อกรณี: นางสาว สมหญิง ใจดี","ຜູ້ເຄາະຮ້າຍ":"ນາງ ສົມພອນ ແກ້ວມະນີ",'
    '"notes":"ขอความช่วยเหลือด่วน / ຂໍຄວາມຊ່ວຍເຫຼືອດ່ວນ"}'
).encode()


def seed(label: str) -> bytes:
    """32 fixed bytes per label: test identities are the same on every run."""
    return hashlib.blake2b(label.encode(), digest_size=32, person=b"cb-test-seed").digest()


@contextmanager
def refused(error: type[BaseException]) -> Iterator[pytest.ExceptionInfo[BaseException]]:
    """Like `pytest.raises`, but the error must be exactly `error`, not a subclass of it."""
    with pytest.raises(error) as info:
        yield info
    assert type(info.value) is error, f"expected exactly {error.__name__}, got {info.value!r}"


# --- identities -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Country:
    root: RootCertificate
    root_key: nacl.signing.SigningKey

    @property
    def code(self) -> str:
        return self.root.country


@dataclass(frozen=True, slots=True)
class Agency:
    cert: AgencyCertificate
    signing_key: nacl.signing.SigningKey
    encryption: EncryptionKey
    encryption_secret: bytes

    @property
    def id(self) -> str:
        return self.cert.agency_id

    @property
    def keys(self) -> dict[bytes, RecipientKey]:
        return {self.encryption.key_id: RecipientKey(self.encryption.public_key, self.encryption_secret)}


def make_country(
    code: str, name: str, *, not_before: int = NOW - YEAR, not_after: int = NOW + 10 * YEAR, label: str = ""
) -> Country:
    key = nacl.signing.SigningKey(seed(f"root {code} {label}"))
    root = RootCertificate.create(key, country=code, name=name, not_before=not_before, not_after=not_after)
    return Country(root, key)


def make_agency(
    country: Country,
    agency_id: str,
    name: str,
    *,
    roles: Sequence[Role] = (Role.AGENCY,),
    serial: int = 1,
    not_before: int = NOW - 30 * DAY,
    not_after: int = NOW + YEAR,
    key_not_before: int = NOW - 30 * DAY,
    key_not_after: int = NOW + 60 * DAY,
    label: str = "",
) -> Agency:
    signing_key = nacl.signing.SigningKey(seed(f"agency {agency_id} {label}"))
    cert = AgencyCertificate.issue(
        country.root_key,
        country.root,
        serial=serial,
        agency_id=agency_id,
        name=name,
        roles=roles,
        signing_key=bytes(signing_key.verify_key),
        not_before=not_before,
        not_after=not_after,
    )
    secret = seed(f"encryption {agency_id} {label}")
    encryption = EncryptionKey.issue(
        signing_key,
        agency_id=agency_id,
        public_key=x25519_public(secret),
        not_before=key_not_before,
        not_after=key_not_after,
    )
    return Agency(cert, signing_key, encryption, secret)


TH = make_country("TH", "ศูนย์ปฏิบัติการต่อต้านการค้ามนุษย์แห่งชาติ")
LA = make_country("LA", "ຄະນະກຳມະການແຫ່ງຊາດ ຕ້ານການຄ້າມະນຸດ")
TH_DSDW = make_agency(TH, "TH-DSDW", "กรมพัฒนาสังคมและสวัสดิการ")
TH_ATPD = make_agency(TH, "TH-ATPD", "กองบังคับการปราบปรามการกระทำความผิดเกี่ยวกับการค้ามนุษย์")
LA_MLSW = make_agency(LA, "LA-MLSW", "ກະຊວງແຮງງານ ແລະ ສະຫວັດດີການສັງຄົມ")
LA_ATD = make_agency(LA, "LA-ATD", "ກົມຕ້ານການຄ້າມະນຸດ")
BROKER = make_agency(TH, "TH-BROKER", "CaseBridge broker", roles=(Role.BROKER,))

SENDER = TH_DSDW
RECIPIENT_B = LA_MLSW
RECIPIENT_C = LA_ATD
OUTSIDER = TH_ATPD
REGISTERED = frozenset(a.id for a in (TH_DSDW, TH_ATPD, LA_MLSW, LA_ATD))


def trust_store(*countries: Country) -> TrustStore:
    """A fresh trust store pinning the given roots (TH and LA when none are given)."""
    return TrustStore([c.root for c in (countries or (TH, LA))])


def agency_certificate_items(
    issuer: RootCertificate, agency_id: str, country: str, signing_key: bytes
) -> list[Any]:
    """The body fields of an agency certificate, for hand-built certificates."""
    return [
        "CB-AGENCY",
        1,
        7,
        agency_id,
        country,
        "หน่วยงานปลอม",
        ["agency"],
        signing_key,
        issuer.key_id,
        NOW - DAY,
        NOW + YEAR,
    ]


def signed(key: nacl.signing.SigningKey, context: bytes, items: list[Any]) -> bytes:
    """A hand-built `[body, signature]` structure, for certificates no honest issuer would make."""
    body = codec.encode(items)
    return join_signed(body, sign(key, context, body))


# --- sealing and opening ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str
    media_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class SealedEnvelope:
    """An envelope as it travels: the header file and one ciphertext per part."""

    header: bytes
    manifest: bytes
    attachments: tuple[bytes, ...] = ()

    @property
    def parsed(self) -> EnvelopeHeader:
        return EnvelopeHeader.parse(self.header)

    @property
    def parts(self) -> tuple[bytes, ...]:
        return (self.manifest, *self.attachments)

    def with_attachment(self, index: int, ciphertext: bytes) -> SealedEnvelope:
        parts = list(self.attachments)
        parts[index] = ciphertext
        return replace(self, attachments=tuple(parts))


def pieces(data: bytes, sizes: Sequence[int] = IRREGULAR) -> Iterator[bytes]:
    """Cut `data` into pieces of the given sizes, cycling through them."""
    if not any(sizes):
        raise ValueError("at least one piece size must be positive")
    view, at = memoryview(data), 0
    for size in itertools.cycle(sizes):
        if at >= len(data):
            return
        yield bytes(view[at : at + size])
        at += size


def seal(
    sender: Agency,
    recipients: Sequence[Agency],
    *,
    body: bytes = REFERRAL_BODY,
    attachments: Sequence[Attachment] = (),
    content_type: str = "application/json",
    now: int = NOW,
    ttl_seconds: int = TTL,
    rng: Random = system_random,
    piece_sizes: Sequence[int] = IRREGULAR,
) -> SealedEnvelope:
    """Seal with the real `EnvelopeSealer`, feeding attachments in irregular pieces."""
    sealer = EnvelopeSealer(
        sender=sender.cert,
        signing_key=sender.signing_key,
        recipients=[r.encryption for r in recipients],
        content_type=content_type,
        body=body,
        attachments=[AttachmentInfo(a.filename, a.media_type, len(a.data)) for a in attachments],
        now=now,
        ttl_seconds=ttl_seconds,
        rng=rng,
    )
    manifest = sealer.manifest_ciphertext()
    outputs = []
    for i, a in enumerate(attachments):
        enc = sealer.attachment(i)
        chunks = [c for piece in pieces(a.data, piece_sizes) for c in enc.update(piece)]
        outputs.append(b"".join([*chunks, *enc.finalize()]))
    return SealedEnvelope(sealer.finish().raw, manifest, tuple(outputs))


def opener_for(
    env: SealedEnvelope,
    recipient: Agency,
    *,
    sender: Agency | bytes = SENDER,
    trust: TrustStore | None = None,
    now: int = NOW,
    at: int | None = None,
    processed: frozenset[bytes] = frozenset(),
) -> EnvelopeOpener:
    return EnvelopeOpener(
        env.header,
        trust=trust if trust is not None else trust_store(),
        sender_certificate=sender.cert.raw if isinstance(sender, Agency) else sender,
        recipient_id=recipient.id,
        keys=recipient.keys,
        now=now,
        at=at,
        processed=processed,
    )


def decrypt_part(
    opener: EnvelopeOpener, index: int, ciphertext: bytes, piece_sizes: Sequence[int] = IRREGULAR
) -> bytes:
    """Decrypt attachment `index` into quarantine; raises if any check fails."""
    dec = opener.attachment(index)
    plain = [p for piece in pieces(ciphertext, piece_sizes) for p in dec.update(piece)]
    dec.finalize()
    return b"".join(plain)


@dataclass(frozen=True, slots=True)
class Opened:
    manifest: Manifest
    attachments: tuple[bytes, ...]


def open_envelope(
    env: SealedEnvelope, recipient: Agency, *, piece_sizes: Sequence[int] = IRREGULAR, **kwargs: Any
) -> Opened:
    """Open as a recipient does; plaintext is returned only after `finish()` passed."""
    opener = opener_for(env, recipient, **kwargs)
    opener.open_manifest(env.manifest)
    plain = tuple(decrypt_part(opener, i, ct, piece_sizes) for i, ct in enumerate(env.attachments))
    return Opened(opener.finish(), plain)


# --- building blocks for attacks --------------------------------------------------------------


def wrap_for(recipient: Agency, envelope_id: bytes, payload_key: bytes) -> list[Any]:
    """One recipient entry of a header's `pre`: `[agency_id, key_id, wrap]`."""
    wrap = seal_box(recipient.encryption.public_key, envelope_id + payload_key, system_random)
    return [recipient.id, recipient.encryption.key_id, wrap]


def manifest_bytes(
    envelope_id: bytes,
    sender_id: str,
    recipient_ids: Sequence[str],
    attachments: Sequence[Attachment] = (),
    *,
    body: bytes = REFERRAL_BODY,
) -> bytes:
    return Manifest(
        envelope_id=envelope_id,
        sender_id=sender_id,
        recipients=tuple(recipient_ids),
        content_type="application/json",
        body=body,
        attachments=tuple(AttachmentInfo(a.filename, a.media_type, len(a.data)) for a in attachments),
    ).encode()


def forge(
    signer: Agency,
    *,
    envelope_id: bytes,
    payload_key: bytes,
    wraps: Sequence[list[Any]],
    manifest: bytes,
    attachments: Sequence[bytes] = (),
    sender_id: str | None = None,
    commitment: bytes | None = None,
    created_at: int = NOW,
    expires_at: int = NOW + TTL,
) -> SealedEnvelope:
    """Build and sign an envelope by hand from the sealer's own building blocks.

    Whatever the arguments say goes into the header unchecked, so a test can play a malicious
    sender: wraps of different keys, someone else's sender id, a wrap from another envelope.
    """
    lengths = [len(manifest), *(len(a) for a in attachments)]
    headers = [system_random(STREAM_HEADER_BYTES) for _ in lengths]
    pre = codec.encode(
        [
            MAGIC,
            VERSION,
            SUITE,
            envelope_id,
            signer.id if sender_id is None else sender_id,
            signer.cert.key_id,
            created_at,
            expires_at,
            list(wraps),
            _key_commitment(payload_key, envelope_id) if commitment is None else commitment,
            [[i, h, padded_length(n)] for i, (h, n) in enumerate(zip(headers, lengths, strict=True))],
        ]
    )
    streams, post = [], []
    for i, (h, plain) in enumerate(zip(headers, [manifest, *attachments], strict=True)):
        enc = PartEncryptor(_part_key(payload_key, i), h, _ad(pre, i), len(plain))
        ct = b"".join([*enc.update(plain), *enc.finalize()])
        streams.append(ct)
        post.append([i, len(ct), enc.digest])
    post_bytes = codec.encode(post)
    signature = sign(signer.signing_key, CTX_ENVELOPE, signed_digest(pre, post_bytes))
    header = codec.encode([pre, post_bytes, signature])
    return SealedEnvelope(header, streams[0], tuple(streams[1:]))


Edit = Callable[[list[Any]], None]


def rebuild_header(
    header: bytes, *, pre: Edit | None = None, post: Edit | None = None, signer: Agency | None = None
) -> bytes:
    """Edit a header's `pre` or `post` fields in place and re-encode it canonically.

    The original signature is kept unless `signer` is given, in which case the edited header is
    signed again with that agency's key (as a malicious sender or co-recipient would).
    """
    outer = codec.decode(header, limits=HEADER_LIMITS)
    pre_items = codec.decode(outer[0], limits=HEADER_LIMITS)
    post_items = codec.decode(outer[1], limits=HEADER_LIMITS)
    if pre is not None:
        pre(pre_items)
    if post is not None:
        post(post_items)
    new_pre, new_post = codec.encode(pre_items), codec.encode(post_items)
    signature = outer[2]
    if signer is not None:
        signature = sign(signer.signing_key, CTX_ENVELOPE, signed_digest(new_pre, new_post))
    return bytes(codec.encode([new_pre, new_post, signature]))
