"""Signed notes, checkpoints, cosignatures and tlog-proof receipts, against published vectors."""

from __future__ import annotations

import base64

import nacl.signing
import pytest

from protocol.errors import InvalidField, MalformedInput, VerificationError
from protocol.merkle import MemoryTree, inclusion_proof, leaf_hash
from protocol.note import (
    EM_DASH,
    SIG_COSIGNATURE_V1,
    SIG_ED25519,
    Checkpoint,
    NoteSignature,
    NoteSigner,
    VerifierKey,
    add_signatures,
    cosign_checkpoint,
    cosignature_message,
    cosignature_timestamp,
    open_checkpoint,
    open_note,
    parse_note,
    sign_checkpoint,
    sign_note,
)
from protocol.tlog_proof import TlogProof, verify_tlog_proof

# c2sp.org/signed-note, section "Verifier keys / Example" (github.com/C2SP/C2SP, HEAD 5ba5ee8).
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    f"{EM_DASH} example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
).encode()

# golang.org/x/mod, sumdb/note/note_test.go (TestSign, TestOpen): a signing key, both verifier keys
# and the signatures they make over one text.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
)
PETER_SIG = (
    f"{EM_DASH} PeterNeumann "
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    f"{EM_DASH} EnochRoot "
    "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
)

# transparency-dev/formats, note/note_cosigv1_test.go (TestCosignatureTimestamp): a cosignature
# whose timestamp is 1727964367, and a plain Ed25519 signature that is not a cosignature.
TD_COSIGNATURE = (
    "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
)
TD_PLAIN_SIGNATURE = (
    "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="
)

# c2sp.org/tlog-checkpoint and tlog-cosignature: the example checkpoint and cosigned message.
SPEC_CHECKPOINT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIGNED_MESSAGE = "cosignature/v1\ntime 1679315147\n" + SPEC_CHECKPOINT

ORIGIN = "audit.casebridge.example/referrals/v1"
NOW = 1_767_225_600


def seed_key(label: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(label.encode().ljust(32, b"."))


LOG = NoteSigner(ORIGIN, seed_key("log"))
WITNESS_TH = NoteSigner("witness.th.example/ສົມພອນ", seed_key("witness-th"), SIG_COSIGNATURE_V1)
WITNESS_LA = NoteSigner("witness.la.example/w1", seed_key("witness-la"), SIG_COSIGNATURE_V1)


def refused(error: type[Exception], data: bytes, keys: list[VerifierKey]) -> str:
    with pytest.raises(error) as caught:
        open_note(data, keys)
    reason: str = getattr(caught.value, "reason", "")
    return reason


# --- published vectors ------------------------------------------------------------------------


def test_the_signed_note_spec_example_verifies() -> None:
    vkey = VerifierKey.parse(SPEC_VKEY)
    assert vkey.encode() == SPEC_VKEY
    opened = open_note(SPEC_NOTE, [vkey])
    assert opened.text == "This is an example message.\n"
    assert [v.key for v in opened.verified] == [vkey]
    assert opened.note.encode() == SPEC_NOTE


def test_signing_reproduces_the_go_sumdb_note_byte_for_byte() -> None:
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])
    assert seed[0] == SIG_ED25519
    peter = NoteSigner("PeterNeumann", nacl.signing.SigningKey(seed[1:]))
    assert peter.vkey.encode() == PETER_VKEY
    assert sign_note(GO_TEXT, [peter]) == (GO_TEXT + "\n" + PETER_SIG).encode()


def test_go_note_opens_with_known_keys_and_ignores_unknown_ones() -> None:
    note = (GO_TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()
    peter, enoch = VerifierKey.parse(PETER_VKEY), VerifierKey.parse(ENOCH_VKEY)
    assert [v.key for v in open_note(note, [peter]).verified] == [peter]
    assert [v.key for v in open_note(note, [peter, enoch]).verified] == [peter, enoch]
    assert "no signature by a known key" in refused(VerificationError, note, [])


def test_every_mangled_go_vkey_is_refused() -> None:
    for start in range(len(PETER_VKEY)):
        for end in range(start + 1, len(PETER_VKEY) + 1):
            if (start, end) != (0, len(PETER_VKEY)):
                with pytest.raises(MalformedInput):
                    VerifierKey.parse(PETER_VKEY[start:end])
    for position in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:position] + chr(ord(PETER_VKEY[position]) + 1) + PETER_VKEY[position + 1 :]
        with pytest.raises(MalformedInput):
            VerifierKey.parse(mangled)


def test_go_malformed_notes_are_refused() -> None:
    peter = VerifierKey.parse(PETER_VKEY)
    for bad in [
        GO_TEXT,
        GO_TEXT + "\n",
        GO_TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + GO_TEXT + "\n" + PETER_SIG,
        GO_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Bad Name"),
        GO_TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        GO_TEXT + "\n" + PETER_SIG * 101,
    ]:
        refused(MalformedInput, bad.encode(), [peter])
    refused(MalformedInput, b"\xff" + (GO_TEXT + "\n" + PETER_SIG).encode(), [peter])


def test_cosignature_timestamps_decode_as_transparency_dev_does() -> None:
    signature = NoteSignature.parse(f"{EM_DASH} witness {TD_COSIGNATURE}")
    assert signature.key_id.hex() == "646846b9"
    assert cosignature_timestamp(signature) == 1727964367
    with pytest.raises(MalformedInput):
        cosignature_timestamp(NoteSignature.parse(f"{EM_DASH} witness {TD_PLAIN_SIGNATURE}"))


def test_cosigned_message_matches_the_spec_example() -> None:
    assert cosignature_message(SPEC_CHECKPOINT, 1679315147) == SPEC_COSIGNED_MESSAGE.encode()
    checkpoint = Checkpoint.parse(SPEC_CHECKPOINT)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert checkpoint.text() == SPEC_CHECKPOINT


# --- our own notes ------------------------------------------------------------------------------


def test_notes_round_trip_in_thai_and_lao() -> None:
    signer = NoteSigner("กรม/สมชาย", seed_key("thai"))
    text = "สมชาย ใจดี\nນາງ ສົມພອນ ແກ້ວມະນີ\n\nเอกสารประกอบ.pdf ເອກະສານ.pdf\n"
    note = sign_note(text, [signer])
    opened = open_note(note, [VerifierKey.parse(signer.vkey.encode())])
    assert opened.text == text
    assert note.decode().endswith(f"\n\n{EM_DASH} กรม/สมชาย {note.decode().split()[-1]}\n")


def test_a_note_signed_by_another_key_of_the_same_name_is_refused() -> None:
    note = sign_note("hello\n", [NoteSigner("agency.th", seed_key("real"))])
    impostor = NoteSigner("agency.th", seed_key("impostor")).vkey
    assert "no signature by a known key" in refused(VerificationError, note, [impostor])


def test_a_tampered_text_fails_its_known_key() -> None:
    signer = NoteSigner("agency.la", seed_key("la"))
    note = sign_note("size 10\n", [signer])
    assert "bad signature" in refused(VerificationError, note.replace(b"10", b"11"), [signer.vkey])


def test_a_failing_known_signature_rejects_the_whole_note() -> None:
    good, other = NoteSigner("good", seed_key("good")), NoteSigner("other", seed_key("other"))
    note = parse_note(sign_note("hello\n", [good, other]))
    forged = NoteSignature("other", other.vkey.key_id, bytes(64))
    tampered = add_signatures(sign_note("hello\n", [good]), [forged])
    assert len(note.signatures) == 2
    refused(VerificationError, tampered, [good.vkey, other.vkey])
    assert [v.key for v in open_note(tampered, [good.vkey]).verified] == [good.vkey]


@pytest.mark.parametrize(
    "bad",
    [
        "hello\n\n— name AAAA\n",
        "hello\n\n— name not*base64\n",
        "hello\n\n— name QUJDREU\n",
        "hello\n\n— name QUJDREV=\n",
        "hello\n\n— na+me QUJDREU=\n",
        "hello\n\n—  name QUJDREU=\n",
        "hello\n\n— name QUJDREU= extra\n",
        "hello\n\n- name QUJDREU=\n",
        "hello\n\n",
        "hello\n\n— name QUJDREU=",
        "hel\tlo\n\n— name QUJDREU=\n",
        "cafe\u0301\n\n— name QUJDREU=\n",
        "hello\n\n— name\u00a0x QUJDREU=\n",
    ],
    ids=[
        "short-signature",
        "not-base64",
        "unpadded",
        "non-canonical-base64",
        "plus-in-name",
        "double-space",
        "extra-field",
        "hyphen-not-em-dash",
        "no-signature",
        "no-final-newline",
        "control-character",
        "not-nfc",
        "unicode-space-in-name",
    ],
)
def test_malformed_notes_are_refused_precisely(bad: str) -> None:
    with pytest.raises(MalformedInput) as caught:
        parse_note(bad.encode())
    assert caught.value.reason


def test_signing_normalises_to_nfc_and_refuses_what_a_note_cannot_hold() -> None:
    signer = NoteSigner("agency.th", seed_key("th"))
    assert open_note(sign_note("cafe\u0301\n", [signer]), [signer.vkey]).text == "caf\u00e9\n"
    for bad in ["no newline", "tab\there\n", ""]:
        with pytest.raises(InvalidField):
            sign_note(bad, [signer])
    with pytest.raises(InvalidField):
        NoteSigner("two words", seed_key("x"))
    with pytest.raises(InvalidField):
        signer.sign("hello\n", timestamp=NOW)


def test_a_repeated_key_counts_once_and_a_namesake_key_is_ignored() -> None:
    key = VerifierKey.parse(SPEC_VKEY)
    namesake = NoteSigner(key.name, seed_key("namesake")).vkey
    cosigner_form = VerifierKey(key.name, SIG_COSIGNATURE_V1, key.public_key)
    opened = open_note(SPEC_NOTE, [namesake, key, cosigner_form, key])
    assert [v.key for v in opened.verified] == [key]
    assert "no signature by a known key" in refused(VerificationError, SPEC_NOTE, [namesake, cosigner_form])


# --- checkpoints --------------------------------------------------------------------------------


def test_checkpoints_round_trip_with_extension_lines() -> None:
    checkpoint = Checkpoint(ORIGIN, 70_000, leaf_hash(b"root"), ("ລາຍງານ ປະຈຳວັນ",))
    assert Checkpoint.parse(checkpoint.text()) == checkpoint
    assert Checkpoint.parse(Checkpoint(ORIGIN, 0, leaf_hash(b"")).text()).size == 0


@pytest.mark.parametrize(
    "size",
    ["12a", "+12", " 12", "12 ", "1_000", "٣", "012", "00", "", "9223372036854775808"],
)
def test_checkpoint_sizes_must_be_plain_decimals(size: str) -> None:
    with pytest.raises(MalformedInput):
        Checkpoint.parse(f"{ORIGIN}\n{size}\n{base64.b64encode(bytes(32)).decode()}\n")


@pytest.mark.parametrize(
    "text",
    [
        f"{ORIGIN}\n5\nnot base64!\n",
        f"{ORIGIN}\n5\n{base64.b64encode(bytes(31)).decode()}\n",
        f"{ORIGIN}\n5\n{base64.b64encode(bytes(32)).decode()}",
        f"{ORIGIN}\n5\n{base64.b64encode(bytes(32)).decode()}\n\n",
        f"{ORIGIN}\n5\n",
        f"\n5\n{base64.b64encode(bytes(32)).decode()}\n",
        f"{ORIGIN}\t\n5\n{base64.b64encode(bytes(32)).decode()}\n",
    ],
    ids=["bad-base64", "short-root", "no-final-newline", "empty-extension", "two-lines", "no-origin", "tab"],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(MalformedInput):
        Checkpoint.parse(text)


def signed_checkpoint(size: int = 5) -> tuple[bytes, MemoryTree]:
    tree = MemoryTree()
    for i in range(size):
        tree.append_entry(f"referral {i}".encode())
    return sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), LOG), tree


def test_a_cosigned_checkpoint_opens_with_its_cosignatures() -> None:
    note, tree = signed_checkpoint()
    note = add_signatures(
        note, [cosign_checkpoint(note, WITNESS_TH, NOW), cosign_checkpoint(note, WITNESS_LA, NOW + 1)]
    )
    opened = open_checkpoint(
        note, origin=ORIGIN, log_key=LOG.vkey, cosigners=[WITNESS_TH.vkey, WITNESS_LA.vkey]
    )
    assert opened.checkpoint == Checkpoint(ORIGIN, 5, tree.root())
    assert [(c.key, c.timestamp) for c in opened.cosignatures] == [
        (WITNESS_TH.vkey, NOW),
        (WITNESS_LA.vkey, NOW + 1),
    ]
    only_log = open_checkpoint(note, origin=ORIGIN, log_key=LOG.vkey)
    assert only_log.cosignatures == ()


def test_a_cosignature_with_a_changed_timestamp_fails() -> None:
    note, _ = signed_checkpoint()
    line = cosign_checkpoint(note, WITNESS_TH, NOW)
    moved = NoteSignature(line.name, line.key_id, (NOW + 60).to_bytes(8, "big") + line.signature[8:])
    with pytest.raises(VerificationError):
        open_checkpoint(
            add_signatures(note, [moved]), origin=ORIGIN, log_key=LOG.vkey, cosigners=[WITNESS_TH.vkey]
        )


def test_a_checkpoint_from_another_log_or_only_cosigned_is_refused() -> None:
    note, tree = signed_checkpoint()
    with pytest.raises(VerificationError):
        open_checkpoint(note, origin="audit.other.example/v1", log_key=LOG.vkey)
    text = Checkpoint(ORIGIN, tree.size, tree.root()).text()
    witnessed_only = sign_note(text, [WITNESS_TH], timestamp=NOW)
    with pytest.raises(VerificationError):
        open_checkpoint(witnessed_only, origin=ORIGIN, log_key=LOG.vkey, cosigners=[WITNESS_TH.vkey])
    with pytest.raises(InvalidField):
        open_checkpoint(note, origin=ORIGIN, log_key=WITNESS_TH.vkey)


def test_a_log_signature_is_not_a_cosignature() -> None:
    assert LOG.vkey.key_id != NoteSigner(ORIGIN, seed_key("log"), SIG_COSIGNATURE_V1).vkey.key_id
    with pytest.raises(InvalidField):
        WITNESS_TH.sign("hello\n")
    with pytest.raises(InvalidField):
        cosign_checkpoint(sign_note("not a checkpoint\n", [LOG]), LOG, NOW)


# --- tlog-proof receipts -----------------------------------------------------------------------


def test_a_tlog_proof_round_trips_and_verifies() -> None:
    note, tree = signed_checkpoint(11)
    note = add_signatures(note, [cosign_checkpoint(note, WITNESS_LA, NOW)])
    receipt = TlogProof(7, tuple(inclusion_proof(7, 11, tree)), note, extra="ເອກະສານ.pdf".encode())
    data = receipt.encode()
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra ")
    assert TlogProof.parse(data) == receipt
    signed = verify_tlog_proof(
        TlogProof.parse(data),
        leaf_hash(b"referral 7"),
        origin=ORIGIN,
        log_key=LOG.vkey,
        cosigners=[WITNESS_LA.vkey],
    )
    assert signed.checkpoint.size == 11
    assert [c.key for c in signed.cosignatures] == [WITNESS_LA.vkey]
    with pytest.raises(VerificationError):
        verify_tlog_proof(receipt, leaf_hash(b"referral 8"), origin=ORIGIN, log_key=LOG.vkey)
    with pytest.raises(VerificationError):
        verify_tlog_proof(
            TlogProof(8, receipt.proof, note), leaf_hash(b"referral 7"), origin=ORIGIN, log_key=LOG.vkey
        )


def test_malformed_tlog_proofs_are_refused() -> None:
    note, tree = signed_checkpoint(3)
    good = TlogProof(0, tuple(inclusion_proof(0, 3, tree)), note).encode()
    assert TlogProof.parse(good).index == 0
    for bad in [
        good.replace(b"index 0", b"index 00"),
        good.replace(b"index 0", b"index"),
        good.replace(b"@v1", b"@v2"),
        good.replace(b"\n\n", b"\n", 1),
        good.replace(b"index 0\n", b"index 0\nAAAA\n"),
        good.replace(b"index 0\n", b"extra \nindex 0\n"),
        good.split(b"\n\n", 1)[0] + b"\n\nnot a note\n",
    ]:
        with pytest.raises(MalformedInput):
            TlogProof.parse(bad)
