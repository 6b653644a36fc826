"""The ten negative classes of ARCHITECTURE.md "Envelope v1", one group of tests per class.

Each test plays an attacker (the broker, a co-recipient, a malicious sender, a lying directory)
and checks the exact error and that no plaintext is released: an opener that refuses raises
from its constructor, and a refused part makes `finalize` (or `update`) and then `finish()`
raise, so the quarantined pieces are never handed out. The attacker-built envelopes come from
the sealer's own building blocks (`forge`, `rebuild_header` in tests/protocol_fixtures.py).
Class 9 (forged receipt) lives with the receipts, in test_receipts.py.
"""

from __future__ import annotations

from typing import Any

import nacl.bindings as sodium
import pytest

from protocol import codec
from protocol.certificate import (
    CTX_AGENCY,
    AgencyCertificate,
    EncryptionKey,
    Revocation,
    RevocationList,
    Role,
)
from protocol.envelope import (
    CTX_ENVELOPE,
    HEADER_LIMITS,
    EnvelopeHeader,
    EnvelopeOpener,
    _ad,
    _part_key,
    validate_for_broker,
)
from protocol.envelope_header import signed_digest
from protocol.errors import (
    CertificateExpired,
    DecryptionFailed,
    EnvelopeExpired,
    Forbidden,
    InvalidField,
    KeyRevoked,
    MalformedInput,
    NotARecipient,
    Replayed,
    TooLarge,
    UnsupportedVersion,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import open_box, sign, system_random
from protocol.stream import (
    ABYTES,
    CHUNK_BYTES,
    TAG_FINAL,
    TAG_MESSAGE,
    PartDecryptor,
    PartEncryptor,
    ciphertext_length,
    padded_length,
    part_digest,
)
from protocol.stream import _state as stream_state
from tests.protocol_fixtures import (
    CHUNK,
    DAY,
    LA,
    NOW,
    OUTSIDER,
    PRE_COMMITMENT,
    PRE_CREATED,
    PRE_EXPIRES,
    PRE_ID,
    PRE_PARTS,
    PRE_RECIPIENTS,
    PRE_SENDER,
    PRE_SUITE,
    PRE_VERSION,
    RECIPIENT_B,
    RECIPIENT_C,
    REGISTERED,
    SENDER,
    TH,
    Agency,
    Attachment,
    SealedEnvelope,
    agency_certificate_items,
    decrypt_part,
    forge,
    make_agency,
    manifest_bytes,
    open_envelope,
    opener_for,
    rebuild_header,
    refused,
    seal,
    seed,
    signed,
    trust_store,
    wrap_for,
)

B, C = RECIPIENT_B, RECIPIENT_C
STEP = CHUNK_BYTES + ABYTES  # one full ciphertext chunk
BIG = 3 * CHUNK + 5  # four chunks: three full ones and a short final one
ENV = seal(
    SENDER,
    [B, C],
    attachments=[
        Attachment("หลักฐาน.pdf", "application/pdf", bytes([1]) * BIG),
        Attachment("ຫຼັກຖານ.pdf", "application/pdf", bytes([2]) * BIG),
    ],
)
SMALL = seal(SENDER, [B, C], attachments=[Attachment("บันทึก.txt", "text/plain", "ສະບາຍດີ".encode())])


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def chunks(ciphertext: bytes) -> list[bytes]:
    return [ciphertext[i : i + STEP] for i in range(0, len(ciphertext), STEP)]


def payload_key_as(recipient: Agency, env: SealedEnvelope) -> bytes:
    """What a co-recipient learns from its own wrap: the envelope's payload key."""
    entry = next(r for r in env.parsed.recipients if r.agency_id == recipient.id)
    return open_box(recipient.encryption.public_key, recipient.encryption_secret, entry.wrap)[16:]


def manifest_opened(env: SealedEnvelope, recipient: Agency = B) -> EnvelopeOpener:
    opener = opener_for(env, recipient)
    opener.open_manifest(env.manifest)
    return opener


def refuse_attachment(env: SealedEnvelope, index: int, *, others_intact: bool = True) -> None:
    """Attachment `index` is refused, and with it the whole envelope: even when every other
    part decrypts, nothing is released."""
    opener = manifest_opened(env)
    for i, ciphertext in enumerate(env.attachments):
        if i != index and others_intact:
            decrypt_part(opener, i, ciphertext)
    with refused(DecryptionFailed):
        decrypt_part(opener, index, env.attachments[index])
    with refused(DecryptionFailed):
        opener.finish()


def broker_check(header: bytes, **overrides: Any) -> EnvelopeHeader:
    kwargs: dict[str, Any] = {
        "sender": SENDER.cert,
        "authenticated_agency": SENDER.id,
        "recipient_exists": REGISTERED,
        "now": NOW,
    }
    kwargs.update(overrides)
    return validate_for_broker(header, **kwargs)


def test_untouched_envelopes_open_for_both_recipients() -> None:
    for recipient in (B, C):
        assert open_envelope(ENV, recipient).attachments == (bytes([1]) * BIG, bytes([2]) * BIG)
        assert open_envelope(SMALL, recipient).attachments == ("ສະບາຍດີ".encode(),)


# --- 1. tampered chunk -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "offset",
    [100, STEP + 5000, 3 * STEP + 10, 0, STEP - 1, len(ENV.attachments[0]) - 1],
    ids=["chunk0-body", "chunk1-body", "final-body", "chunk0-tag-byte", "chunk0-mac", "final-mac"],
)
def test_tampered_chunk_is_refused(offset: int) -> None:
    refuse_attachment(ENV.with_attachment(0, flip(ENV.attachments[0], offset)), 0)


def test_tampered_manifest_chunk_is_refused() -> None:
    opener = opener_for(SMALL, B)
    with refused(DecryptionFailed):
        opener.open_manifest(flip(SMALL.manifest, 40))
    with refused(DecryptionFailed):
        opener.finish()


def test_tampered_stream_header_in_the_signed_header_fails_the_signature() -> None:
    def edit(pre: list[Any]) -> None:
        pre[PRE_PARTS][1][1] = flip(pre[PRE_PARTS][1][1], 0)

    header = rebuild_header(SMALL.header, pre=edit)
    with refused(VerificationError):
        opener_for(SealedEnvelope(header, SMALL.manifest), B)
    with refused(VerificationError):
        broker_check(header)


def test_chunks_forged_by_a_co_recipient_fail_the_signed_digest() -> None:
    # B holds K and re-encrypts other plaintext with the right key, stream header and AD: each
    # chunk authenticates, but the ciphertext digest the sender signed does not match.
    header = ENV.parsed
    enc = PartEncryptor(
        _part_key(payload_key_as(B, ENV), 1), header.parts[1].stream_header, _ad(header.pre, 1), BIG
    )
    forged = b"".join([*enc.update(bytes([9]) * BIG), *enc.finalize()])
    assert len(forged) == len(ENV.attachments[0])
    opener = manifest_opened(ENV, C)
    dec = opener.attachment(0)
    assert dec.update(forged)  # every chunk authenticates: the pieces stay in quarantine
    with refused(DecryptionFailed):
        dec.finalize()
    with refused(DecryptionFailed):
        opener.finish()
    verifier = header.part_verifier(1)
    verifier.update(forged)
    with refused(MalformedInput):
        verifier.finish()


# --- 2. truncated stream ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cut",
    [0, STEP, 2 * STEP, 3 * STEP, 1, STEP + 1000, 3 * STEP + 5, len(ENV.attachments[0]) - 1],
    ids=["empty", "1-chunk", "2-chunks", "no-final", "1-byte", "mid-chunk1", "mid-final", "final-less-1"],
)
def test_truncated_stream_fails_at_finalize(cut: int) -> None:
    # Cut at a chunk boundary (what older libsodium file examples accepted) or mid-chunk.
    opener = manifest_opened(ENV)
    dec = opener.attachment(0)
    dec.update(ENV.attachments[0][:cut])
    with refused(DecryptionFailed):
        dec.finalize()
    with refused(DecryptionFailed):
        opener.finish()


def test_truncated_manifest_is_refused() -> None:
    opener = opener_for(SMALL, B)
    for cut in (0, 10, len(SMALL.manifest) - 1):
        with refused(DecryptionFailed):
            opener.open_manifest(SMALL.manifest[:cut])
    with refused(DecryptionFailed):
        opener.finish()


# --- 3. reordered or extra chunks ------------------------------------------------------------


def test_swapped_chunks_are_refused() -> None:
    c = chunks(ENV.attachments[0])
    refuse_attachment(ENV.with_attachment(0, b"".join([c[1], c[0], *c[2:]])), 0)


def test_duplicated_chunk_is_refused() -> None:
    c = chunks(ENV.attachments[0])
    refuse_attachment(ENV.with_attachment(0, b"".join([c[0], c[0], c[1], c[2], c[3]])), 0)


@pytest.mark.parametrize("extra", [b"\x00", b"x" * (ABYTES + 1), "last-chunk-again"])
def test_data_after_the_final_chunk_is_refused(extra: bytes | str) -> None:
    ciphertext = ENV.attachments[0]
    tail = chunks(ciphertext)[-1] if extra == "last-chunk-again" else extra
    assert isinstance(tail, bytes)
    refuse_attachment(ENV.with_attachment(0, ciphertext + tail), 0)


def test_nothing_more_is_accepted_after_finalize() -> None:
    dec = manifest_opened(SMALL).attachment(0)
    dec.update(SMALL.attachments[0])
    dec.finalize()
    with refused(DecryptionFailed):
        dec.update(b"\x00")


def test_part_stream_moved_to_another_part_index_is_refused() -> None:
    swapped = SealedEnvelope(ENV.header, ENV.manifest, (ENV.attachments[1], ENV.attachments[0]))
    refuse_attachment(swapped, 0, others_intact=False)
    refuse_attachment(swapped, 1, others_intact=False)
    with refused(MalformedInput):
        verifier = ENV.parsed.part_verifier(1)
        verifier.update(ENV.attachments[1])
        verifier.finish()


def test_attachment_stream_given_as_the_manifest_is_refused() -> None:
    opener = opener_for(SMALL, B)
    with refused(DecryptionFailed):
        opener.open_manifest(SMALL.attachments[0])


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        ((TAG_MESSAGE, TAG_FINAL), None),
        ((TAG_FINAL, TAG_MESSAGE), DecryptionFailed),
        ((TAG_FINAL, TAG_FINAL), DecryptionFailed),
        ((TAG_MESSAGE, TAG_MESSAGE), DecryptionFailed),
    ],
    ids=["honest", "final-mid-stream", "final-twice", "no-final"],
)
def test_final_tag_only_on_the_last_chunk(tags: tuple[int, int], error: type[Exception] | None) -> None:
    # A malicious sender signs the digest of a stream with misplaced TAG_FINALs.
    key, header, ad = seed("crafted part key"), seed("crafted part header")[:24], b"ad"
    padded = padded_length(CHUNK)
    plain = bytes(CHUNK) + b"\x80" + bytes(padded - CHUNK - 1)
    state = stream_state(key, header)
    ciphertext = b"".join(
        sodium.crypto_secretstream_xchacha20poly1305_push(state, piece, ad, tag)
        for piece, tag in zip((plain[:CHUNK], plain[CHUNK:]), tags, strict=True)
    )
    digest = part_digest()
    digest.update(ciphertext)
    dec = PartDecryptor(key, header, ad, padded, digest.digest(), CHUNK)
    if error is None:
        assert b"".join(dec.update(ciphertext)) == bytes(CHUNK)
        assert dec.finalize() == b""
        return
    with refused(error):
        dec.update(ciphertext)
    with refused(error):
        dec.finalize()


# --- 4. altered recipient list ---------------------------------------------------------------


def entries(pre: list[Any]) -> list[list[Any]]:
    recipients: list[list[Any]] = pre[PRE_RECIPIENTS]
    return recipients


def add_outsider(pre: list[Any]) -> None:
    entries(pre).append(wrap_for(OUTSIDER, pre[PRE_ID], system_random(32)))


def drop_c(pre: list[Any]) -> None:
    del entries(pre)[0]  # LA-ATD sorts first


def swap_key_ids(pre: list[Any]) -> None:
    e = entries(pre)
    e[0][1], e[1][1] = e[1][1], e[0][1]


def swap_wraps(pre: list[Any]) -> None:
    e = entries(pre)
    e[0][2], e[1][2] = e[1][2], e[0][2]


def replace_b_wrap(pre: list[Any]) -> None:
    entries(pre)[1][2] = wrap_for(B, pre[PRE_ID], system_random(32))[2]


@pytest.mark.parametrize("edit", [add_outsider, drop_c, swap_key_ids, swap_wraps, replace_b_wrap])
def test_altered_recipient_list_fails_the_signature(edit: Any) -> None:
    header = rebuild_header(SMALL.header, pre=edit)
    with refused(VerificationError):
        opener_for(SealedEnvelope(header, SMALL.manifest), B)
    with refused(VerificationError):
        broker_check(header)


def test_reordered_recipient_list_is_malformed() -> None:
    header = rebuild_header(SMALL.header, pre=lambda pre: entries(pre).reverse())
    with refused(MalformedInput):
        opener_for(SealedEnvelope(header, SMALL.manifest), B)


def test_agency_not_on_the_list_is_not_a_recipient() -> None:
    with refused(NotARecipient):
        opener_for(SMALL, OUTSIDER)
    with refused(NotARecipient):
        opener_for(SMALL, SENDER)


def test_recipient_without_the_listed_key_is_not_a_recipient() -> None:
    with refused(NotARecipient):
        EnvelopeOpener(
            SMALL.header,
            trust=trust_store(),
            sender_certificate=SENDER.cert.raw,
            recipient_id=B.id,
            keys=C.keys,  # B's current key is not among these
            now=NOW,
        )


# --- 5. surreptitious forwarding -------------------------------------------------------------


def forward_to_c(pre: list[Any]) -> None:
    pre[PRE_RECIPIENTS] = [wrap_for(C, pre[PRE_ID], FORWARD_KEY)]


FORWARD_SOURCE = seal(SENDER, [B])
FORWARD_KEY = payload_key_as(B, FORWARD_SOURCE)


def test_forwarding_with_the_senders_signature_kept_fails_the_signature() -> None:
    header = rebuild_header(FORWARD_SOURCE.header, pre=forward_to_c)
    with refused(VerificationError):
        opener_for(SealedEnvelope(header, FORWARD_SOURCE.manifest), C)


def test_forwarding_re_signed_by_the_forwarder_while_claiming_the_sender_is_refused() -> None:
    header = rebuild_header(FORWARD_SOURCE.header, pre=forward_to_c, signer=B)
    forwarded = SealedEnvelope(header, FORWARD_SOURCE.manifest)
    with refused(VerificationError):  # checked against the claimed sender's certificate
        opener_for(forwarded, C, sender=SENDER)
    with refused(VerificationError):  # the signer's certificate does not match the claim
        opener_for(forwarded, C, sender=B)


@pytest.mark.parametrize("manifest_recipients", [("LA-MLSW",), ("LA-ATD",)])
def test_forwarding_re_signed_as_the_forwarder_with_the_senders_manifest_is_refused(
    manifest_recipients: tuple[str, ...],
) -> None:
    # B opens A's referral and re-seals A's manifest (sender A) as its own envelope to C.
    original = open_envelope(FORWARD_SOURCE, B).manifest
    envelope_id = FORWARD_SOURCE.parsed.envelope_id
    manifest = manifest_bytes(envelope_id, original.sender_id, manifest_recipients, body=original.body)
    forwarded = forge(
        B,
        envelope_id=envelope_id,
        payload_key=FORWARD_KEY,
        wraps=[wrap_for(C, envelope_id, FORWARD_KEY)],
        manifest=manifest,
    )
    opener = opener_for(forwarded, C, sender=B)  # chain, signature, wrap, commitment all pass
    with refused(DecryptionFailed) as info:
        opener.open_manifest(forwarded.manifest)
    assert info.value.reason == "manifest does not match the signed header"  # type: ignore[attr-defined]
    with refused(DecryptionFailed):
        opener.finish()


# --- 6. cross-envelope splice ----------------------------------------------------------------

SPLICE_TWIN = seal(SENDER, [B, C], attachments=[Attachment("บันทึก.txt", "text/plain", "ສະບາຍດີ".encode())])


def test_wrap_from_another_envelope_fails_the_signature() -> None:
    other_wrap = SPLICE_TWIN.parsed.recipients[1].wrap
    header = rebuild_header(SMALL.header, pre=lambda pre: entries(pre)[1].__setitem__(2, other_wrap))
    with refused(VerificationError):
        opener_for(SealedEnvelope(header, SMALL.manifest), B)


def test_wrap_from_another_envelope_signed_into_a_new_one_fails_the_envelope_id() -> None:
    envelope_id, key = system_random(16), system_random(32)
    old_entry = SMALL.parsed.recipients[1]
    assert old_entry.agency_id == B.id
    spliced = forge(
        SENDER,
        envelope_id=envelope_id,
        payload_key=key,
        wraps=[[B.id, old_entry.key_id, old_entry.wrap]],
        manifest=manifest_bytes(envelope_id, SENDER.id, [B.id]),
    )
    with refused(DecryptionFailed) as info:
        opener_for(spliced, B)
    assert info.value.reason == "wrapped key is for another envelope"  # type: ignore[attr-defined]


def test_part_from_another_envelope_is_refused_by_broker_and_recipient() -> None:
    assert len(SPLICE_TWIN.attachments[0]) == len(SMALL.attachments[0])
    verifier = SMALL.parsed.part_verifier(1)
    verifier.update(SPLICE_TWIN.attachments[0])
    with refused(MalformedInput):
        verifier.finish()
    refuse_attachment(SMALL.with_attachment(0, SPLICE_TWIN.attachments[0]), 0)
    with refused(DecryptionFailed):
        opener_for(SMALL, B).open_manifest(SPLICE_TWIN.manifest)


# --- 7. key partitioning ---------------------------------------------------------------------


@pytest.mark.parametrize("committed_to", ["B", "C", "neither"])
def test_key_partitioning_fails_the_key_commitment(committed_to: str) -> None:
    # A malicious sender gives B and C different payload keys in one properly signed envelope.
    envelope_id = system_random(16)
    key_b, key_c = system_random(32), system_random(32)
    key = {"B": key_b, "C": key_c, "neither": system_random(32)}[committed_to]
    env = forge(
        SENDER,
        envelope_id=envelope_id,
        payload_key=key,
        wraps=[wrap_for(C, envelope_id, key_c), wrap_for(B, envelope_id, key_b)],
        manifest=manifest_bytes(envelope_id, SENDER.id, [C.id, B.id]),
    )
    broker_check(env.header)  # nothing the broker can see is wrong
    for name, recipient in (("B", B), ("C", C)):
        if name == committed_to:
            assert open_envelope(env, recipient).manifest.recipients == (C.id, B.id)
            continue
        with refused(DecryptionFailed) as info:
            opener_for(env, recipient)
        assert info.value.reason == "key commitment mismatch"  # type: ignore[attr-defined]


# --- 8. replay and downgrade -----------------------------------------------------------------


def test_replayed_envelope_is_refused() -> None:
    with refused(Replayed):
        opener_for(SMALL, B, processed=frozenset({SMALL.parsed.envelope_id}))
    opener_for(SMALL, B, processed=frozenset({SPLICE_TWIN.parsed.envelope_id}))


def test_expired_envelope_is_refused() -> None:
    expires = SMALL.parsed.expires_at
    opener_for(SMALL, B, now=expires - 1)
    with refused(EnvelopeExpired):
        opener_for(SMALL, B, now=expires)


def test_envelope_from_the_future_is_refused() -> None:
    opener_for(seal(SENDER, [B], now=NOW + 300), B)
    with refused(VerificationError):
        opener_for(seal(SENDER, [B], now=NOW + 301), B)


@pytest.mark.parametrize(("field", "value"), [(PRE_VERSION, 2), (PRE_VERSION, 0), (PRE_SUITE, 2)])
def test_unknown_version_or_suite_is_unsupported(field: int, value: int) -> None:
    header = rebuild_header(SMALL.header, pre=lambda pre: pre.__setitem__(field, value), signer=SENDER)
    with refused(UnsupportedVersion):
        opener_for(SealedEnvelope(header, SMALL.manifest), B)
    with refused(UnsupportedVersion):
        broker_check(header)


def test_non_canonical_header_encoding_is_malformed() -> None:
    outer = SMALL.header
    assert outer[0] == 0x93
    variants = [
        b"\xdc\x00\x03" + outer[1:],  # array16 where fixarray fits
        outer + b"\x00",  # trailing byte
    ]
    # A signed `pre` whose own encoding is not canonical (array16 for its 11 fields).
    pre, post, signature = codec.decode(outer)
    assert pre[0] == 0x9B
    loose = b"\xdc\x00\x0b" + pre[1:]
    signature = sign(SENDER.signing_key, CTX_ENVELOPE, signed_digest(loose, post))
    variants.append(codec.encode([loose, post, signature]))
    for header in variants:
        with refused(MalformedInput):
            opener_for(SealedEnvelope(header, SMALL.manifest), B)


def too_many_recipients(pre: list[Any]) -> None:
    entries(pre).extend([f"TH-X{i:03}", bytes(16), bytes(96)] for i in range(64))


def huge_manifest(pre: list[Any]) -> None:
    pre[PRE_PARTS][0][2] = 1 << 30


def huge_manifest_post(post: list[Any]) -> None:
    post[0][1] = ciphertext_length(1 << 30)  # consistent, so only the size itself is wrong


@pytest.mark.parametrize(
    ("edit", "edit_post", "error"),
    [
        (too_many_recipients, None, MalformedInput),
        (lambda pre: pre.__setitem__(PRE_RECIPIENTS, []), None, MalformedInput),
        (lambda pre: pre.__setitem__(PRE_ID, bytes(17)), None, MalformedInput),
        (lambda pre: pre.__setitem__(PRE_SENDER, "TH-" + "X" * 70), None, MalformedInput),
        (lambda pre: pre.__setitem__(PRE_EXPIRES, pre[PRE_CREATED] + 90 * DAY + 1), None, MalformedInput),
        (lambda pre: pre.__setitem__(PRE_EXPIRES, pre[PRE_CREATED]), None, MalformedInput),
        (lambda pre: pre.__setitem__(PRE_COMMITMENT, bytes(33)), None, MalformedInput),
        (lambda pre: pre[PRE_PARTS].extend([i, bytes(24), 256] for i in range(2, 40)), None, MalformedInput),
        (lambda pre: pre[PRE_PARTS][1].__setitem__(2, 300), None, MalformedInput),
        (huge_manifest, huge_manifest_post, TooLarge),
    ],
    ids=["recipients", "none", "id", "sender", "ttl", "window", "commitment", "parts", "bucket", "manifest"],
)
def test_oversized_or_out_of_range_fields_are_refused(
    edit: Any, edit_post: Any, error: type[Exception]
) -> None:
    header = rebuild_header(SMALL.header, pre=edit, post=edit_post, signer=SENDER)
    with refused(error):
        opener_for(SealedEnvelope(header, SMALL.manifest), B)


def test_oversized_header_is_refused_before_decoding() -> None:
    header = codec.encode(
        [bytes(HEADER_LIMITS.max_bytes), b"", bytes(64)], limits=codec.Limits(max_bytes=1 << 20)
    )
    with refused(MalformedInput) as info:
        EnvelopeHeader.parse(header)
    assert "exceeds the limit" in info.value.reason  # type: ignore[attr-defined]


# --- 10. bad key directory -------------------------------------------------------------------


def test_sender_under_an_unknown_root_is_untrusted() -> None:
    with refused(UntrustedCertificate):
        opener_for(SMALL, B, trust=trust_store(LA))


def test_sender_certified_by_a_foreign_root_is_untrusted() -> None:
    # The LA root certifies an impostor "TH-DSDW", who then seals a referral.
    impostor = make_agency(LA, "LA-TMP", "x", label="impostor")
    items = agency_certificate_items(LA.root, "TH-DSDW", "TH", impostor.cert.signing_key)
    raw = signed(LA.root_key, CTX_AGENCY, items)
    cert = AgencyCertificate.parse(raw)
    fake = Agency(cert, impostor.signing_key, impostor.encryption, impostor.encryption_secret)
    env = seal(fake, [B])
    with refused(UntrustedCertificate):
        opener_for(env, B, sender=raw)


def test_sender_certificate_expired_at_acceptance_is_refused() -> None:
    sender = make_agency(TH, "TH-DSDW", "กรม", not_after=NOW + DAY, label="short-lived")
    env = seal(sender, [B])
    later = NOW + 2 * DAY
    with refused(CertificateExpired):
        opener_for(env, B, sender=sender, now=later)
    assert open_envelope(env, B, sender=sender, now=later, at=NOW).manifest.sender_id == "TH-DSDW"


def test_sender_key_revoked_at_acceptance_is_refused() -> None:
    trust = trust_store()
    crl = RevocationList.issue(
        TH.root_key,
        TH.root,
        number=1,
        issued_at=NOW,
        entries=[Revocation(SENDER.cert.key_id, NOW + 10, "compromise")],
    )
    trust.accept_revocation_list(crl.raw)
    opener_for(SMALL, B, trust=trust, now=NOW + 20, at=NOW + 9)  # accepted before the revocation
    with refused(KeyRevoked):
        opener_for(SMALL, B, trust=trust, now=NOW + 20, at=NOW + 10)
    with refused(KeyRevoked):
        opener_for(SMALL, B, trust=trust, now=NOW + 20)


@pytest.mark.parametrize("role", [Role.BROKER, Role.AUDITOR, Role.OPERATOR])
def test_certified_key_without_the_agency_role_cannot_send(role: Role) -> None:
    # A broker (or auditor, or operator) key is certified by its root, but for something else:
    # a compromised broker must not be able to forge referrals with its own key.
    insider = make_agency(TH, f"TH-{role.upper()}", "CaseBridge", roles=(role,))
    env = seal(insider, [B])
    with refused(UntrustedCertificate):
        opener_for(env, B, sender=insider)
    with refused(Forbidden):
        broker_check(env.header, sender=insider.cert, authenticated_agency=insider.id)


def test_another_agencys_certificate_for_the_sender_is_refused() -> None:
    with refused(VerificationError):
        opener_for(SMALL, B, sender=C)


def test_encryption_key_not_signed_by_the_agency_is_refused_before_sealing() -> None:
    # The directory offers B's agency id with an encryption key C signed.
    forged = EncryptionKey.issue(
        C.signing_key,
        agency_id=B.id,
        public_key=C.encryption.public_key,
        not_before=NOW - DAY,
        not_after=NOW + DAY,
    )
    trust = trust_store()
    with refused(UntrustedCertificate):
        trust.verify_encryption_key(forged.raw, trust.verify_agency(B.cert.raw, NOW), NOW)


# --- the broker's keyless checks -------------------------------------------------------------


def test_broker_refuses_a_sender_that_is_not_the_authenticated_agency() -> None:
    with refused(Forbidden):
        broker_check(SMALL.header, authenticated_agency=C.id)


def test_broker_refuses_a_signature_by_another_certificate() -> None:
    with refused(VerificationError):
        broker_check(SMALL.header, sender=C.cert, authenticated_agency=SENDER.id)


def test_broker_refuses_unknown_recipients() -> None:
    with refused(InvalidField):
        broker_check(SMALL.header, recipient_exists={SENDER.id, B.id})


def test_broker_refuses_a_bad_signature() -> None:
    pre, post, signature = codec.decode(SMALL.header)
    with refused(VerificationError):
        broker_check(codec.encode([pre, post, flip(signature, 10)]))


def test_broker_refuses_expired_and_future_dated_envelopes() -> None:
    with refused(EnvelopeExpired):
        broker_check(SMALL.header, now=SMALL.parsed.expires_at)
    with refused(VerificationError):
        broker_check(SMALL.header, now=NOW - 301)
    broker_check(SMALL.header, now=NOW - 300)
