"""Known-answer and negative checks on the committed vectors in tests/vectors/data.

Only the regeneration tests use the generator. Every other test reads the committed JSON,
rebuilds keys from the committed seeds and checks the committed bytes with the protocol's own
parsers and verifiers, trusting nothing but the committed root certificates. The large
attachment's ciphertext is not committed (only its length and BLAKE2b-256): the tests re-seal
it from the committed inputs, and the signed part digest in the committed header pins it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any

import nacl.bindings as sodium
import nacl.public
import nacl.signing
import pytest

from protocol.certificate import (
    AgencyCertificate,
    EncryptionKey,
    RevocationList,
    Role,
    RootCertificate,
    TrustStore,
)
from protocol.envelope import (
    AttachmentInfo,
    EnvelopeHeader,
    EnvelopeOpener,
    EnvelopeSealer,
    RecipientKey,
    envelope_hash,
    validate_for_broker,
)
from protocol.errors import CaseBridgeError, KeyRevoked
from protocol.primitives import key_id, seeded_random
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, verify_receipt
from protocol.stream import CHUNK_BYTES
from tests.vectors.generate import render_all

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
ENVELOPES = ("envelope-0-attachments", "envelope-1-attachment", "envelope-3-attachments")
OPEN_AFTER_SECONDS = 3600


@cache
def load(name: str) -> Any:
    return json.loads((DATA / f"{name}.json").read_text(encoding="utf-8"))


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


def certs() -> Any:
    return load("certificates")


def trust_store() -> TrustStore:
    """The committed roots, pinned by their committed key ids, and the committed revocation list."""
    roots = []
    for country, entry in certs()["roots"].items():
        root = RootCertificate.parse(unhex(entry["outputs"]["certificate"]))
        assert root.country == country
        assert root.key_id == unhex(entry["outputs"]["key_id"])
        roots.append(root)
    trust = TrustStore(roots)
    trust.accept_revocation_list(unhex(load("revocation")["revocation_list"]["outputs"]["revocation_list"]))
    return trust


def agency_certificate(agency_id: str) -> bytes:
    return unhex(certs()["agencies"][agency_id]["outputs"]["certificate"])


def signing_key(agency_id: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(unhex(certs()["agencies"][agency_id]["inputs"]["seed"]))


def encryption_entry(agency_id: str) -> dict[str, str]:
    outputs: dict[str, str] = certs()["encryption_keys"][agency_id]["outputs"]
    return outputs


def recipient_keys(agency_id: str) -> dict[bytes, RecipientKey]:
    secret = nacl.public.PrivateKey(unhex(certs()["encryption_keys"][agency_id]["inputs"]["seed"]))
    public = bytes(secret.public_key)
    return {key_id(public): RecipientKey(public_key=public, secret_key=bytes(secret))}


def attachment_content(attachment: dict[str, Any]) -> bytes:
    if "content" in attachment:
        return unhex(attachment["content"])
    rule = attachment["content_rule"]
    assert rule["rule"] == "libsodium randombytes_buf_deterministic(length, seed)"
    content: bytes = sodium.randombytes_buf_deterministic(rule["length"], unhex(rule["seed"]))
    return content


def digest256(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


@cache
def ciphertexts(name: str) -> tuple[bytes, ...]:
    """Each attachment's ciphertext: committed, or for a large one re-sealed from the inputs."""
    vector = load(name)
    inputs, committed = vector["inputs"], vector["outputs"]["attachment_ciphertexts"]
    if all("ciphertext" in c for c in committed):
        return tuple(unhex(c["ciphertext"]) for c in committed)
    trust = trust_store()
    contents = [attachment_content(a) for a in inputs["attachments"]]
    sealer = EnvelopeSealer(
        sender=trust.verify_agency(agency_certificate(inputs["sender"]), inputs["created_at"]),
        signing_key=signing_key(inputs["sender"]),
        recipients=[
            EncryptionKey.parse(unhex(encryption_entry(r)["statement"])) for r in inputs["recipients"]
        ],
        content_type=inputs["content_type"],
        body=inputs["body"].encode(),
        attachments=[
            AttachmentInfo(a["filename"], a["media_type"], a["length"]) for a in inputs["attachments"]
        ],
        now=inputs["created_at"],
        ttl_seconds=inputs["ttl_seconds"],
        rng=seeded_random(unhex(inputs["rng_seed"])),
    )
    sealer.manifest_ciphertext()
    out = []
    for i, content in enumerate(contents):
        enc = sealer.attachment(i)
        out.append(b"".join([*enc.update(content), *enc.finalize()]))
    assert sealer.finish().raw == unhex(vector["outputs"]["header"])
    for ct, c in zip(out, committed, strict=True):
        assert len(ct) == c["length"]
        if "ciphertext" in c:
            assert ct == unhex(c["ciphertext"])
        else:
            assert digest256(ct) == unhex(c["blake2b_256"])
    return tuple(out)


def open_envelope(name: str, recipient: str, header: bytes | None = None) -> EnvelopeOpener:
    vector = load(name)
    return EnvelopeOpener(
        unhex(vector["outputs"]["header"]) if header is None else header,
        trust=trust_store(),
        sender_certificate=agency_certificate(vector["inputs"]["sender"]),
        recipient_id=recipient,
        keys=recipient_keys(recipient),
        now=vector["inputs"]["created_at"] + OPEN_AFTER_SECONDS,
    )


def flip(data: bytes, index: int) -> bytes:
    changed = bytearray(data)
    changed[index] ^= 0x01
    return bytes(changed)


def assert_every_flip_fails(data: bytes, check: Callable[[bytes], object]) -> None:
    """`check` accepts `data` but raises a CaseBridgeError for every one-byte change of it."""
    check(data)
    survivors = []
    for index in range(len(data)):
        try:
            check(flip(data, index))
        except CaseBridgeError:
            continue
        survivors.append(index)
    assert not survivors, f"one-byte changes at {survivors} were accepted"


# --- 1. regeneration --------------------------------------------------------------------------


def test_regenerating_the_vectors_changes_no_byte() -> None:
    generated = render_all()
    committed = {p.name: p.read_bytes() for p in DATA.glob("*.json")}
    assert sorted(generated) == sorted(committed)
    changed = [name for name in generated if generated[name] != committed[name]]
    assert not changed, f"regenerating changed {changed}: see tests/vectors/README.md"


def test_generator_check_mode_reports_a_changed_byte(tmp_path: Path) -> None:
    copy = tmp_path / "data"
    shutil.copytree(DATA, copy)
    command = [sys.executable, "-m", "tests.vectors.generate", "--check", "--out", str(copy)]
    ok = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    receipts = copy / "receipts.json"
    receipts.write_bytes(receipts.read_bytes().replace(b'"receipt": "92', b'"receipt": "93', 1))
    changed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert changed.returncode == 1
    assert "receipts.json: differs" in changed.stderr


def test_generator_writes_the_committed_files(tmp_path: Path) -> None:
    out = tmp_path / "fresh"
    command = [sys.executable, "-m", "tests.vectors.generate", "--out", str(out)]
    subprocess.run(command, cwd=REPO, capture_output=True, check=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {
        p.name: p.read_bytes() for p in DATA.glob("*.json")
    }


# --- 2. known answers -------------------------------------------------------------------------


def test_roots_are_self_signed_by_the_keys_from_their_seeds() -> None:
    for country, entry in certs()["roots"].items():
        root = RootCertificate.parse(unhex(entry["outputs"]["certificate"]))
        inputs = entry["inputs"]
        assert bytes(nacl.signing.SigningKey(unhex(inputs["seed"])).verify_key) == root.public_key
        assert (root.country, root.name, root.not_before, root.not_after) == (
            country,
            inputs["name"],
            inputs["not_before"],
            inputs["not_after"],
        )


@pytest.mark.parametrize("agency_id", ["TH-ATPD", "TH-CASEBRIDGE", "LA-NSATIP", "LA-VTE-LSW", "LA-CPS"])
def test_agency_certificate_chains_to_its_national_root(agency_id: str) -> None:
    entry = certs()["agencies"][agency_id]
    inputs = entry["inputs"]
    cert = trust_store().verify_agency(agency_certificate(agency_id), certs()["now"])
    assert (
        cert.signing_key == bytes(signing_key(agency_id).verify_key) == unhex(entry["outputs"]["public_key"])
    )
    assert cert.key_id == unhex(entry["outputs"]["key_id"])
    assert (cert.agency_id, cert.country, cert.name, cert.serial) == (
        agency_id,
        inputs["issuer"],
        inputs["name"],
        inputs["serial"],
    )
    assert [str(r) for r in cert.roles] == inputs["roles"]
    assert (cert.not_before, cert.not_after) == (inputs["not_before"], inputs["not_after"])


def test_broker_certificate_carries_the_broker_role_only() -> None:
    cert = AgencyCertificate.parse(agency_certificate("TH-CASEBRIDGE"))
    assert cert.roles == (Role.BROKER,)


@pytest.mark.parametrize("agency_id", ["TH-ATPD", "LA-NSATIP", "LA-VTE-LSW", "LA-CPS"])
def test_encryption_key_is_signed_by_its_agency(agency_id: str) -> None:
    trust, now = trust_store(), certs()["now"]
    agency = trust.verify_agency(agency_certificate(agency_id), now)
    stmt = trust.verify_encryption_key(unhex(encryption_entry(agency_id)["statement"]), agency, now)
    (kid, key), *_ = recipient_keys(agency_id).items()
    assert stmt.public_key == key.public_key == unhex(encryption_entry(agency_id)["public_key"])
    assert stmt.key_id == kid == unhex(encryption_entry(agency_id)["key_id"])


def test_revocation_list_revokes_the_named_key_from_its_time_on() -> None:
    vector = load("revocation")
    crl = RevocationList.parse(unhex(vector["revocation_list"]["outputs"]["revocation_list"]))
    inputs = vector["revocation_list"]["inputs"]
    assert (crl.country, crl.number, crl.issued_at) == (
        inputs["issuer"],
        inputs["number"],
        inputs["issued_at"],
    )
    assert [(e.key_id.hex(), e.revoked_at, e.reason) for e in crl.entries] == [
        (e["key_id"], e["revoked_at"], e["reason"]) for e in inputs["entries"]
    ]
    revoked = unhex(vector["revoked_certificate"]["outputs"]["certificate"])
    revoked_at = inputs["entries"][0]["revoked_at"]
    trust = trust_store()
    assert trust.verify_agency(revoked, revoked_at - 1).key_id == crl.entries[0].key_id
    with pytest.raises(KeyRevoked):
        trust.verify_agency(revoked, revoked_at)


def recipients_of(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(name, r) for name in names for r in load(name)["inputs"]["recipients"]]


@pytest.mark.parametrize(("name", "recipient"), recipients_of(ENVELOPES))
def test_envelope_opens_for_each_recipient_to_the_committed_plaintext(name: str, recipient: str) -> None:
    vector = load(name)
    inputs, outputs = vector["inputs"], vector["outputs"]
    opener = open_envelope(name, recipient)
    assert opener.header.envelope_id == unhex(outputs["envelope_id"])
    assert opener.header.envelope_hash == unhex(outputs["envelope_hash"])
    manifest = opener.open_manifest(unhex(outputs["manifest_ciphertext"]))
    assert (manifest.sender_id, manifest.content_type) == (inputs["sender"], inputs["content_type"])
    assert list(manifest.recipients) == sorted(inputs["recipients"])
    assert manifest.body.decode() == inputs["body"]
    assert [(a.filename, a.media_type, a.length) for a in manifest.attachments] == [
        (a["filename"], a["media_type"], a["length"]) for a in inputs["attachments"]
    ]
    for i, (attachment, ct) in enumerate(zip(inputs["attachments"], ciphertexts(name), strict=True)):
        decryptor = opener.attachment(i)
        plain = b"".join(
            piece
            for start in range(0, len(ct), CHUNK_BYTES)
            for piece in decryptor.update(ct[start : start + CHUNK_BYTES])
        )
        decryptor.finalize()
        if "content" in attachment:
            assert plain == unhex(attachment["content"])
        else:
            assert len(plain) == attachment["length"]
            assert digest256(plain) == unhex(attachment["content_blake2b_256"])
    assert opener.finish() == manifest


def test_large_attachment_spans_two_chunks_and_matches_its_rule() -> None:
    vector = load("envelope-3-attachments")
    large = [a for a in vector["inputs"]["attachments"] if "content_rule" in a]
    assert len(large) == 1
    content = attachment_content(large[0])
    assert CHUNK_BYTES < len(content) == large[0]["length"]
    assert digest256(content) == unhex(large[0]["content_blake2b_256"])
    assert [a["length"] for a in vector["inputs"]["attachments"]].count(0) == 1


@pytest.mark.parametrize("name", ENVELOPES)
def test_broker_accepts_each_header_and_its_parts_without_a_key(name: str) -> None:
    vector = load(name)
    inputs, outputs = vector["inputs"], vector["outputs"]
    header_bytes = unhex(outputs["header"])
    assert envelope_hash(header_bytes) == unhex(outputs["envelope_hash"])
    header = validate_for_broker(
        header_bytes,
        sender=trust_store().verify_agency(agency_certificate(inputs["sender"]), inputs["created_at"]),
        authenticated_agency=inputs["sender"],
        recipient_exists=set(certs()["agencies"]),
        now=inputs["created_at"] + 1,
    )
    assert header.expires_at == inputs["created_at"] + inputs["ttl_seconds"]
    for part_no, ct in enumerate([unhex(outputs["manifest_ciphertext"]), *ciphertexts(name)]):
        verifier = header.part_verifier(part_no)
        verifier.update(ct)
        verifier.finish()


def receipt_subject() -> ReceiptSubject:
    vector = load("receipts")
    envelope = load(vector["envelope"].removesuffix(".json"))
    header = EnvelopeHeader.parse(unhex(envelope["outputs"]["header"]))
    subject = ReceiptSubject(
        envelope_hash=header.envelope_hash,
        envelope_id=header.envelope_id,
        sender_id=header.sender_id,
        recipient_id=header.recipient_ids[0],
    )
    committed = vector["subject"]
    assert (
        subject.envelope_hash.hex(),
        subject.envelope_id.hex(),
        subject.sender_id,
        subject.recipient_id,
    ) == (
        committed["envelope_hash"],
        committed["envelope_id"],
        committed["sender_id"],
        committed["recipient_id"],
    )
    return subject


def verified_receipt(kind: ReceiptKind, data: bytes) -> Receipt:
    entry = load("receipts")["receipts"][str(kind)]
    signer = trust_store().verify_agency(
        agency_certificate(entry["inputs"]["signer"]), entry["inputs"]["time"]
    )
    return verify_receipt(data, signer=signer, subject=receipt_subject(), kind=kind)


def committed_receipt(kind: ReceiptKind) -> bytes:
    return unhex(load("receipts")["receipts"][str(kind)]["outputs"]["receipt"])


@pytest.mark.parametrize("kind", list(ReceiptKind))
def test_receipt_verifies_against_its_signer_and_subject(kind: ReceiptKind) -> None:
    inputs = load("receipts")["receipts"][str(kind)]["inputs"]
    receipt = verified_receipt(kind, committed_receipt(kind))
    assert receipt.signer_id == inputs["signer"]
    assert receipt.time == inputs["time"]
    assert (None if receipt.reason is None else str(receipt.reason)) == inputs["reason"]
    assert receipt.log_index == inputs["log_index"]


# --- 3. one changed byte fails ----------------------------------------------------------------


def test_any_changed_byte_of_a_root_certificate_fails() -> None:
    for entry in certs()["roots"].values():
        assert_every_flip_fails(unhex(entry["outputs"]["certificate"]), RootCertificate.parse)


@pytest.mark.parametrize("agency_id", ["TH-ATPD", "TH-CASEBRIDGE", "LA-NSATIP", "LA-VTE-LSW", "LA-CPS"])
def test_any_changed_byte_of_an_agency_certificate_fails(agency_id: str) -> None:
    trust, now = trust_store(), certs()["now"]
    assert_every_flip_fails(agency_certificate(agency_id), lambda data: trust.verify_agency(data, now))


@pytest.mark.parametrize("agency_id", ["TH-ATPD", "LA-NSATIP", "LA-VTE-LSW", "LA-CPS"])
def test_any_changed_byte_of_an_encryption_key_fails(agency_id: str) -> None:
    trust, now = trust_store(), certs()["now"]
    agency = trust.verify_agency(agency_certificate(agency_id), now)
    assert_every_flip_fails(
        unhex(encryption_entry(agency_id)["statement"]),
        lambda data: trust.verify_encryption_key(data, agency, now),
    )


def test_any_changed_byte_of_the_revocation_list_fails() -> None:
    data = unhex(load("revocation")["revocation_list"]["outputs"]["revocation_list"])
    roots = [RootCertificate.parse(unhex(e["outputs"]["certificate"])) for e in certs()["roots"].values()]
    assert_every_flip_fails(data, lambda changed: TrustStore(roots).accept_revocation_list(changed))


@pytest.mark.parametrize(("name", "recipient"), recipients_of(ENVELOPES))
def test_any_changed_byte_of_an_envelope_header_fails_opening(name: str, recipient: str) -> None:
    header = unhex(load(name)["outputs"]["header"])
    assert_every_flip_fails(header, lambda data: open_envelope(name, recipient, data))


@pytest.mark.parametrize("name", ENVELOPES)
def test_any_changed_byte_of_the_manifest_ciphertext_fails_opening(name: str) -> None:
    opener = open_envelope(name, load(name)["inputs"]["recipients"][0])
    assert_every_flip_fails(unhex(load(name)["outputs"]["manifest_ciphertext"]), opener.open_manifest)


def decrypt_attachment(opener: EnvelopeOpener, index: int, ciphertext: bytes) -> None:
    decryptor = opener.attachment(index)
    for start in range(0, len(ciphertext), CHUNK_BYTES):
        decryptor.update(ciphertext[start : start + CHUNK_BYTES])
    decryptor.finalize()


@pytest.mark.parametrize("name", ENVELOPES[1:])
def test_any_changed_byte_of_an_attachment_ciphertext_fails_opening(name: str) -> None:
    opener = open_envelope(name, load(name)["inputs"]["recipients"][0])
    opener.open_manifest(unhex(load(name)["outputs"]["manifest_ciphertext"]))
    for index, ct in enumerate(ciphertexts(name)):
        if len(ct) > CHUNK_BYTES:
            for position in (0, CHUNK_BYTES - 1, CHUNK_BYTES + 17, len(ct) - 1):
                with pytest.raises(CaseBridgeError):
                    decrypt_attachment(opener, index, flip(ct, position))
            decrypt_attachment(opener, index, ct)
        else:
            assert_every_flip_fails(ct, partial(decrypt_attachment, opener, index))


@pytest.mark.parametrize("kind", list(ReceiptKind))
def test_any_changed_byte_of_a_receipt_fails_verification(kind: ReceiptKind) -> None:
    assert_every_flip_fails(committed_receipt(kind), lambda data: verified_receipt(kind, data))
