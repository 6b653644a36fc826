"""Envelope v1 round trips: what a sender seals, every recipient opens, byte for byte.

Attachments are fed to the sealer and the opener in irregular pieces, with sizes around the
1 MiB chunk boundary. The attacks are in test_envelope_attacks.py.
"""

from __future__ import annotations

import pytest

from protocol import codec
from protocol.envelope import (
    MAX_RECIPIENTS,
    AttachmentInfo,
    EnvelopeHeader,
    EnvelopeSealer,
    check_filename,
    envelope_hash,
    validate_for_broker,
)
from protocol.errors import DecryptionFailed, InvalidField, MalformedInput
from protocol.primitives import seeded_random, system_random
from protocol.stream import CHUNK_BYTES, MIN_PADDED, ciphertext_length, padded_length
from tests.protocol_fixtures import (
    CHUNK,
    LA_ATD,
    LA_MLSW,
    NOW,
    REFERRAL_BODY,
    REGISTERED,
    SENDER,
    TH_ATPD,
    TTL,
    Agency,
    Attachment,
    SealedEnvelope,
    forge,
    manifest_bytes,
    open_envelope,
    opener_for,
    refused,
    seal,
    wrap_for,
)

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]


def payload(size: int, salt: int = 0) -> bytes:
    """Non-repeating-looking plaintext, so a misplaced chunk would show."""
    block = bytes((i * 31 + salt) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


def check_round_trip(env: SealedEnvelope, recipients: list[Agency], attachments: list[Attachment]) -> None:
    for recipient in recipients:
        opened = open_envelope(env, recipient)
        assert opened.manifest.body == REFERRAL_BODY
        assert opened.manifest.sender_id == SENDER.id
        assert opened.manifest.recipients == tuple(sorted(r.id for r in recipients))
        assert opened.attachments == tuple(a.data for a in attachments)
        assert [(a.filename, a.media_type, a.length) for a in opened.manifest.attachments] == [
            (a.filename, a.media_type, len(a.data)) for a in attachments
        ]


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s}B")
def test_single_attachment_round_trips_for_boundary_sizes(size: int) -> None:
    attachments = [Attachment("เอกสารประกอบ.pdf", "application/pdf", payload(size))]
    env = seal(SENDER, [LA_MLSW], attachments=attachments)
    part = env.parsed.parts[1]
    assert part.padded_length == padded_length(size)
    assert len(env.attachments[0]) == part.ciphertext_length == ciphertext_length(part.padded_length)
    check_round_trip(env, [LA_MLSW], attachments)


@pytest.mark.parametrize("recipients", [[LA_MLSW], [LA_MLSW, LA_ATD, TH_ATPD]], ids=["1", "3"])
@pytest.mark.parametrize("count", [0, 1, 3])
def test_round_trip_with_attachments_and_recipients(recipients: list[Agency], count: int) -> None:
    names = ["ເອກະສານ.pdf", "รูปถ่าย ผู้เสียหาย.jpg", "notes.txt"]
    types = ["application/pdf", "image/jpeg", "text/plain; charset=utf-8"]
    sizes = [CHUNK + 1, 0, 777]
    attachments = [Attachment(names[i], types[i], payload(sizes[i], i)) for i in range(count)]
    env = seal(SENDER, recipients, attachments=attachments)
    assert len(env.parsed.parts) == count + 1
    check_round_trip(env, recipients, attachments)


def test_round_trip_with_large_attachments_in_one_piece_and_in_chunk_sized_pieces() -> None:
    attachments = [Attachment("a.bin", "application/octet-stream", payload(3 * CHUNK + 5))]
    for sizes in ([3 * CHUNK + 5], [CHUNK], [CHUNK + 16 + 1]):
        env = seal(SENDER, [LA_ATD], attachments=attachments, piece_sizes=sizes)
        assert open_envelope(env, LA_ATD, piece_sizes=sizes).attachments == (attachments[0].data,)


def test_sealing_is_reproducible_from_a_seeded_random_source() -> None:
    attachments = [Attachment("a.txt", "text/plain", b"x" * 100)]
    first = seal(SENDER, [LA_MLSW], attachments=attachments, rng=seeded_random(b"s" * 32))
    second = seal(SENDER, [LA_MLSW], attachments=attachments, rng=seeded_random(b"s" * 32))
    other = seal(SENDER, [LA_MLSW], attachments=attachments, rng=seeded_random(b"t" * 32))
    assert first == second
    assert first.header != other.header


def test_thai_and_lao_body_filenames_and_media_types_round_trip() -> None:
    body = "ผู้เสียหาย: นางสาว สมหญิง ใจดี\nຜູ້ເຄາະຮ້າຍ: ນາງ ສົມພອນ ແກ້ວມະນີ".encode()
    attachments = [
        Attachment("ໃບຢັ້ງຢືນ ສົມພອນ.pdf", "application/pdf", b"%PDF-1.7"),
        Attachment("บันทึกการสัมภาษณ์.txt", 'text/plain; name="ບົດບັນທຶກ"', b"..."),
    ]
    # Media type parameters are ASCII only: the Lao one above must be refused at sealing.
    with refused(InvalidField):
        seal(SENDER, [LA_MLSW], body=body, attachments=attachments)
    attachments[1] = Attachment("บันทึกการสัมภาษณ์.txt", "text/plain; charset=utf-8", "สวัสดี".encode())
    env = seal(SENDER, [LA_MLSW, LA_ATD], body=body, attachments=attachments)
    for recipient in (LA_MLSW, LA_ATD):
        opened = open_envelope(env, recipient)
        assert opened.manifest.body == body
        assert [a.filename for a in opened.manifest.attachments] == [a.filename for a in attachments]
        assert opened.manifest.attachments[1].media_type == "text/plain; charset=utf-8"
        assert opened.attachments[1].decode() == "สวัสดี"


def test_filenames_are_normalised_to_nfc_when_sealing() -> None:
    env = seal(SENDER, [LA_MLSW], attachments=[Attachment("\u0e1b\u0e48\u0e39.pdf", "application/pdf", b"x")])
    name = open_envelope(env, LA_MLSW).manifest.attachments[0].filename
    assert name == codec.nfc("\u0e1b\u0e48\u0e39.pdf")
    assert name != "\u0e1b\u0e48\u0e39.pdf"


def test_header_lists_recipients_sorted_with_their_key_ids() -> None:
    env = seal(SENDER, [TH_ATPD, LA_MLSW, LA_ATD])
    header = env.parsed
    assert header.recipient_ids == ("LA-ATD", "LA-MLSW", "TH-ATPD")
    assert [r.key_id for r in header.recipients] == [a.encryption.key_id for a in (LA_ATD, LA_MLSW, TH_ATPD)]
    assert header.sender_id == SENDER.id
    assert header.sender_key_id == SENDER.cert.key_id
    assert header.expires_at == header.created_at + TTL == NOW + TTL
    assert header.envelope_hash == envelope_hash(env.header)
    assert header.total_ciphertext_length == sum(len(p) for p in env.parts)


def test_sealer_refuses_bad_recipient_lists() -> None:
    def sealer(recipients: list[Agency]) -> EnvelopeSealer:
        return EnvelopeSealer(
            sender=SENDER.cert,
            signing_key=SENDER.signing_key,
            recipients=[r.encryption for r in recipients],
            content_type="application/json",
            body=b"{}",
            now=NOW,
        )

    for recipients in ([], [LA_MLSW, LA_MLSW], [LA_MLSW, SENDER], [LA_MLSW] * (MAX_RECIPIENTS + 1)):
        with refused(InvalidField):
            sealer(recipients)
    with pytest.raises(ValueError, match="signing key does not match"):
        EnvelopeSealer(
            sender=SENDER.cert,
            signing_key=LA_MLSW.signing_key,
            recipients=[LA_ATD.encryption],
            content_type="application/json",
            body=b"{}",
            now=NOW,
        )


def test_sealer_refuses_unfinished_parts() -> None:
    sealer = EnvelopeSealer(
        sender=SENDER.cert,
        signing_key=SENDER.signing_key,
        recipients=[LA_MLSW.encryption],
        content_type="application/json",
        body=b"{}",
        attachments=[AttachmentInfo("a.txt", "text/plain", 3)],
        now=NOW,
    )
    sealer.manifest_ciphertext()
    enc = sealer.attachment(0)
    enc.update(b"ab")
    with pytest.raises(ValueError, match="declared 3"):
        list(enc.finalize())
    with pytest.raises(ValueError, match="not finalized"):
        sealer.finish()
    with pytest.raises(ValueError, match="more plaintext"):
        enc.update(b"cd")


# --- padding ---------------------------------------------------------------------------------

PROBES = sorted(
    {
        *range(0, 600),
        *(2**k + d for k in range(8, 41) for d in (-2, -1, 0, 1, 2)),
        10**6,
        10**9,
        3 * CHUNK + 5,
    }
)


def test_padded_length_is_monotonic_and_leaves_room_for_the_marker() -> None:
    previous = 0
    for n in PROBES:
        p = padded_length(n)
        assert p >= n + 1
        assert p >= MIN_PADDED
        assert p >= previous
        previous = p


def test_padded_length_overhead_is_at_most_twelve_percent_above_256_bytes() -> None:
    for n in PROBES:
        if n + 1 > 256:
            assert padded_length(n) <= (n + 1) * 1.12, n


def test_padded_lengths_are_fixed_points() -> None:
    for n in PROBES:
        p = padded_length(n)
        assert padded_length(p - 1) == p, n


def test_small_parts_share_one_bucket() -> None:
    assert {padded_length(n) for n in range(256)} == {MIN_PADDED}
    assert padded_length(CHUNK_BYTES - 1) == CHUNK_BYTES


def test_padded_length_refuses_negative_lengths() -> None:
    with pytest.raises(ValueError, match="negative"):
        padded_length(-1)


# --- the broker's keyless checks --------------------------------------------------------------


def test_broker_accepts_a_good_header_and_each_part_passes_its_verifier() -> None:
    attachments = [
        Attachment("a.pdf", "application/pdf", payload(CHUNK + 1)),
        Attachment("b", "text/plain", b""),
    ]
    env = seal(SENDER, [LA_MLSW, LA_ATD], attachments=attachments)
    header = validate_for_broker(
        env.header, sender=SENDER.cert, authenticated_agency=SENDER.id, recipient_exists=REGISTERED, now=NOW
    )
    assert header == EnvelopeHeader.parse(env.header)
    for i, ciphertext in enumerate(env.parts):
        verifier = header.part_verifier(i)
        for piece in (ciphertext[:1], ciphertext[1:70_000], ciphertext[70_000:]):
            verifier.update(piece)
        verifier.finish()
        assert verifier.received == len(ciphertext)


def test_part_verifier_refuses_short_long_and_altered_parts() -> None:
    env = seal(SENDER, [LA_MLSW], attachments=[Attachment("a", "text/plain", b"hello")])
    header = env.parsed
    part = env.attachments[0]
    short = header.part_verifier(1)
    short.update(part[:-1])
    with refused(MalformedInput):
        short.finish()
    with refused(MalformedInput):
        header.part_verifier(1).update(part + b"\x00")
    altered = header.part_verifier(1)
    altered.update(part[:-1] + bytes([part[-1] ^ 1]))
    with refused(MalformedInput):
        altered.finish()


def test_broker_accepts_within_clock_skew() -> None:
    env = seal(SENDER, [LA_MLSW], now=NOW + 300)
    validate_for_broker(
        env.header, sender=SENDER.cert, authenticated_agency=SENDER.id, recipient_exists=REGISTERED, now=NOW
    )


# --- filenames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a/b.pdf",
        "..\\evil.exe",
        "a\x00.pdf",
        "line\nbreak.txt",
        "tab\t.txt",
        "del\x7f.txt",
        ".",
        "..",
        "",
        "x" * 256,
    ],
)
def test_unsafe_filenames_are_refused(name: str) -> None:
    with refused(InvalidField):
        check_filename(name)
    with refused(InvalidField):
        seal(SENDER, [LA_MLSW], attachments=[Attachment(name, "text/plain", b"x")])


@pytest.mark.parametrize("name", ["เอกสารประกอบ.pdf", "ເອກະສານ.pdf", "...", ".hidden", "a..b", "x" * 255])
def test_safe_filenames_pass(name: str) -> None:
    assert check_filename(name) == name


@pytest.mark.parametrize("media_type", ["", "pdf", "Application/PDF", "text/plain; ไทย", "a/b/c"])
def test_bad_media_types_are_refused(media_type: str) -> None:
    with refused(InvalidField):
        seal(SENDER, [LA_MLSW], attachments=[Attachment("a.txt", media_type, b"x")])


# --- a signed manifest that disagrees with its header ------------------------------------------


def forged_with_manifest(listed: list[Attachment], sent: list[Attachment]) -> SealedEnvelope:
    """A properly signed envelope whose manifest lists `listed` while the parts carry `sent`."""
    envelope_id, key = system_random(16), system_random(32)
    return forge(
        SENDER,
        envelope_id=envelope_id,
        payload_key=key,
        wraps=[wrap_for(LA_MLSW, envelope_id, key)],
        manifest=manifest_bytes(envelope_id, SENDER.id, [LA_MLSW.id], listed),
        attachments=[a.data for a in sent],
    )


def test_forge_helper_builds_an_envelope_that_opens() -> None:
    files = [Attachment("ก.pdf", "application/pdf", payload(5000))]
    env = forged_with_manifest(files, files)
    assert open_envelope(env, LA_MLSW).attachments == (files[0].data,)


@pytest.mark.parametrize("name", ["../../etc/passwd", "a\\b", "..", "bell\x07"])
def test_signed_manifest_with_an_unsafe_filename_is_refused(name: str) -> None:
    files = [Attachment(name, "application/pdf", b"x")]
    env = forged_with_manifest(files, files)
    opener = opener_for(env, LA_MLSW)
    with refused(DecryptionFailed):
        opener.open_manifest(env.manifest)
    with refused(DecryptionFailed):
        opener.finish()


@pytest.mark.parametrize(
    ("listed", "sent"),
    [
        ([payload(10)], [payload(5000)]),  # length outside the part's padding bucket
        ([payload(1), payload(1)], [payload(1)]),  # more attachments than parts
        ([], [payload(1)]),  # fewer attachments than parts
    ],
    ids=["length", "extra", "missing"],
)
def test_signed_manifest_that_disagrees_with_the_parts_is_refused(
    listed: list[bytes], sent: list[bytes]
) -> None:
    env = forged_with_manifest(
        [Attachment(f"{i}.bin", "application/octet-stream", d) for i, d in enumerate(listed)],
        [Attachment(f"{i}.bin", "application/octet-stream", d) for i, d in enumerate(sent)],
    )
    opener = opener_for(env, LA_MLSW)
    with refused(DecryptionFailed):
        opener.open_manifest(env.manifest)
    with refused(DecryptionFailed):
        opener.finish()
