"""Key lifecycle: certification, the name constraint, rotation, revocation, brokers, public
bundles, identity encodings and fingerprints. Real keys and real envelopes throughout."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from keys import lifecycle
from keys.bundle import export_public, verify_bundle
from keys.fingerprint import fingerprint, key_id_hex
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from keys.request import CTX_REQUEST, create_request, parse_request
from protocol import codec
from protocol.certificate import AgencyCertificate, Role, TrustStore, join_signed, split_signed
from protocol.envelope import EnvelopeOpener, EnvelopeSealer
from protocol.errors import (
    CertificateExpired,
    Conflict,
    InvalidField,
    KeyRevoked,
    MalformedInput,
    NotARecipient,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import sign

NOW = 1_760_000_000
DAY = 86400


@pytest.fixture(scope="module")
def th_root() -> RootIdentity:
    return lifecycle.create_root("TH", "สำนักงานตำรวจแห่งชาติ", NOW)


@pytest.fixture(scope="module")
def la_root() -> RootIdentity:
    return lifecycle.create_root("LA", "ກະຊວງປ້ອງກັນຄວາມສະຫງົບ", NOW)


def _certified(
    root: RootIdentity, agency: AgencyIdentity, now: int = NOW
) -> tuple[RootIdentity, AgencyIdentity]:
    root, cert = lifecycle.certify(root, lifecycle.agency_request(agency), [Role.AGENCY], now)
    return root, lifecycle.import_certificate(agency, cert.raw, root.certificate, now)


@pytest.fixture(scope="module")
def th_agency(th_root: RootIdentity) -> AgencyIdentity:
    return _certified(th_root, lifecycle.create_agency("TH-ATPD", "กองบังคับการปราบปรามการค้ามนุษย์", NOW))[1]


@pytest.fixture(scope="module")
def la_agency(la_root: RootIdentity) -> AgencyIdentity:
    return _certified(la_root, lifecycle.create_agency("LA-MOPS", "ນາງ ສົມພອນ ແກ້ວມະນີ", NOW))[1]


def _trust(*roots: RootIdentity) -> TrustStore:
    return TrustStore([r.certificate for r in roots])


def _seal(sender: AgencyIdentity, recipient: AgencyIdentity, now: int, body: bytes) -> tuple[bytes, bytes]:
    assert sender.certificate is not None
    sealer = EnvelopeSealer(
        sender=sender.certificate,
        signing_key=sender.signing_key,
        recipients=[recipient.current_encryption_key(now).statement],
        content_type="text/plain; charset=utf-8",
        body=body,
        now=now,
    )
    manifest = sealer.manifest_ciphertext()
    return sealer.finish().raw, manifest


def _open(
    header: bytes,
    manifest: bytes,
    sender: AgencyIdentity,
    recipient: AgencyIdentity,
    trust: TrustStore,
    now: int,
) -> bytes:
    assert sender.certificate is not None
    opener = EnvelopeOpener(
        header,
        trust=trust,
        sender_certificate=sender.certificate,
        recipient_id=recipient.agency_id,
        keys=recipient.recipient_keys(),
        now=now,
    )
    opener.open_manifest(manifest)
    return opener.finish().body


# --- certification ----------------------------------------------------------------------------


def test_certified_agency_verifies_against_pinned_root(th_root: RootIdentity) -> None:
    agency = lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)
    root, cert = lifecycle.certify(
        th_root, lifecycle.agency_request(agency), [Role.AGENCY, Role.AUDITOR], NOW, valid_days=730
    )
    verified = _trust(th_root).verify_agency(cert.raw, NOW + DAY)
    assert verified.agency_id == "TH-ATPD"
    assert verified.signing_key == agency.public_key
    assert verified.roles == (Role.AGENCY, Role.AUDITOR)
    assert verified.not_after == NOW + 730 * DAY
    assert (cert.serial, root.next_serial) == (1, 2)
    _, second = lifecycle.certify(root, lifecycle.agency_request(agency), [Role.AGENCY], NOW)
    assert second.serial == 2


def test_root_refuses_to_certify_another_countrys_agency(th_root: RootIdentity) -> None:
    lao = lifecycle.create_agency("LA-MOPS", "ນາງ ສົມພອນ ແກ້ວມະນີ", NOW)
    with pytest.raises(InvalidField) as caught:
        lifecycle.certify(th_root, lifecycle.agency_request(lao), [Role.AGENCY], NOW)
    assert "TH-" in caught.value.detail
    assert "LA-MOPS" in caught.value.detail


def test_forged_request_signature_is_refused(th_root: RootIdentity) -> None:
    request = bytearray(lifecycle.agency_request(lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)))
    request[-1] ^= 0x01
    with pytest.raises(VerificationError):
        lifecycle.certify(th_root, bytes(request), [Role.AGENCY], NOW)


def test_request_for_a_key_the_requester_does_not_hold_is_refused(th_root: RootIdentity) -> None:
    victim = lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)
    attacker = lifecycle.create_agency("TH-EVIL", "attacker", NOW)
    body, _ = split_signed(lifecycle.agency_request(victim), "request")
    forged = join_signed(body, sign(attacker.signing_key, CTX_REQUEST, body))
    with pytest.raises(VerificationError):
        parse_request(forged)
    with pytest.raises(VerificationError):
        lifecycle.certify(th_root, forged, [Role.AGENCY], NOW)


def test_request_round_trips_with_nfc_name() -> None:
    agency = lifecycle.create_agency("LA-MOPS", "ເອກະສານ", NOW)
    decomposed = "ສ\u0ec8\u0eb8"
    request = parse_request(create_request(agency.signing_key, agency_id="LA-MOPS", name=decomposed))
    assert request.name == codec.nfc(decomposed)
    assert request.public_key == agency.public_key


def test_certify_needs_a_role_and_stays_within_the_roots_validity(th_root: RootIdentity) -> None:
    request = lifecycle.agency_request(lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW))
    with pytest.raises(InvalidField):
        lifecycle.certify(th_root, request, [], NOW)
    with pytest.raises(InvalidField, match="root expires sooner"):
        lifecycle.certify(th_root, request, [Role.AGENCY], NOW, valid_days=3651)
    with pytest.raises(CertificateExpired):
        lifecycle.certify(th_root, request, [Role.AGENCY], th_root.certificate.not_after)


def test_import_refuses_another_agencys_certificate(th_root: RootIdentity) -> None:
    mine = lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)
    other = lifecycle.create_agency("TH-DSDW", "กรมพัฒนาสังคม", NOW)
    _, cert = lifecycle.certify(th_root, lifecycle.agency_request(other), [Role.AGENCY], NOW)
    with pytest.raises(InvalidField):
        lifecycle.import_certificate(mine, cert.raw, th_root.certificate, NOW)


def test_import_refuses_a_certificate_from_an_unpinned_root(th_root: RootIdentity) -> None:
    impostor = lifecycle.create_root("TH", "impostor", NOW)
    agency = lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)
    _, cert = lifecycle.certify(impostor, lifecycle.agency_request(agency), [Role.AGENCY], NOW)
    with pytest.raises(UntrustedCertificate):
        lifecycle.import_certificate(agency, cert.raw, th_root.certificate, NOW)


# --- rotation ---------------------------------------------------------------------------------


def test_rotation_keeps_old_keys_and_old_envelopes_still_open(
    th_root: RootIdentity, la_root: RootIdentity, th_agency: AgencyIdentity, la_agency: AgencyIdentity
) -> None:
    trust = _trust(th_root, la_root)
    header, manifest = _seal(th_agency, la_agency, NOW + DAY, "ส่งต่อกรณี".encode())
    old = la_agency.current_encryption_key(NOW + DAY)

    rotated = lifecycle.rotate_encryption_key(la_agency, NOW + 60 * DAY)
    assert len(rotated.encryption_keys) == 2
    assert rotated.encryption_keys[0] == old
    assert rotated.current_encryption_key(NOW + 60 * DAY).key_id != old.key_id
    assert set(rotated.recipient_keys()) == {k.key_id for k in rotated.encryption_keys}

    assert _open(header, manifest, th_agency, rotated, trust, NOW + 2 * DAY) == "ส่งต่อกรณี".encode()
    new_header, new_manifest = _seal(th_agency, rotated, NOW + 61 * DAY, b"after rotation")
    assert _open(new_header, new_manifest, th_agency, rotated, trust, NOW + 62 * DAY) == b"after rotation"


def test_pruned_key_no_longer_opens_and_unexpired_keys_stay(
    th_root: RootIdentity, la_root: RootIdentity, th_agency: AgencyIdentity, la_agency: AgencyIdentity
) -> None:
    header, manifest = _seal(th_agency, la_agency, NOW + DAY, b"old referral")
    rotated = lifecycle.rotate_encryption_key(la_agency, NOW + 80 * DAY)
    old_expiry = la_agency.encryption_keys[0].not_after
    kept = lifecycle.prune_encryption_keys(rotated, old_expiry + 10 * DAY, retention_seconds=30 * DAY)
    assert len(kept.encryption_keys) == 2
    pruned = lifecycle.prune_encryption_keys(rotated, old_expiry + 30 * DAY, retention_seconds=30 * DAY)
    assert [k.key_id for k in pruned.encryption_keys] == [rotated.encryption_keys[1].key_id]
    with pytest.raises(NotARecipient):
        _open(header, manifest, th_agency, pruned, _trust(th_root, la_root), NOW + 2 * DAY)


def test_no_valid_encryption_key_is_a_clear_error(la_agency: AgencyIdentity) -> None:
    expired_at = la_agency.encryption_keys[0].not_after
    with pytest.raises(CertificateExpired, match="keys rotate"):
        la_agency.current_encryption_key(expired_at)


# --- revocation -------------------------------------------------------------------------------


def test_revoked_key_is_refused_after_revocation_time_only(
    th_root: RootIdentity, th_agency: AgencyIdentity
) -> None:
    assert th_agency.certificate is not None
    revoked_at = NOW + 10 * DAY
    root, crl = lifecycle.revoke(th_root, th_agency.key_id, revoked_at, "แล็ปท็อปหาย", NOW + 11 * DAY)
    assert (crl.number, root.next_crl_number) == (1, 2)
    trust = _trust(th_root)
    trust.accept_revocation_list(crl.raw)
    assert trust.verify_agency(th_agency.certificate, revoked_at - 1).agency_id == "TH-ATPD"
    with pytest.raises(KeyRevoked):
        trust.verify_agency(th_agency.certificate, revoked_at)
    with pytest.raises(KeyRevoked):
        trust.verify_agency(th_agency.certificate, revoked_at + DAY)


def test_each_revocation_list_keeps_every_earlier_entry(
    th_root: RootIdentity, th_agency: AgencyIdentity
) -> None:
    enc = th_agency.encryption_keys[0]
    root, first = lifecycle.revoke(th_root, th_agency.key_id, NOW + DAY, "compromised", NOW + DAY)
    root, second = lifecycle.revoke(root, enc.key_id, NOW + 2 * DAY, "rotated early", NOW + 2 * DAY)
    assert second.number == first.number + 1
    assert {e.key_id for e in second.entries} == {th_agency.key_id, enc.key_id}
    root, third = lifecycle.issue_revocation_list(root, NOW + 3 * DAY)
    assert (third.number, third.entries) == (3, second.entries)
    trust = _trust(th_root)
    trust.accept_revocation_list(third.raw)
    with pytest.raises(VerificationError):
        trust.accept_revocation_list(first.raw)
    with pytest.raises(Conflict):
        lifecycle.revoke(root, enc.key_id, NOW, "again", NOW + 4 * DAY)


def test_revoke_checks_its_inputs(th_root: RootIdentity) -> None:
    with pytest.raises(InvalidField):
        lifecycle.revoke(th_root, b"\x00" * 15, NOW, "short id", NOW)
    with pytest.raises(InvalidField):
        lifecycle.revoke(th_root, b"\x00" * 16, NOW, "   ", NOW)


# --- brokers ----------------------------------------------------------------------------------


def test_broker_receipt_key_is_certified_with_the_broker_role(th_root: RootIdentity) -> None:
    broker = lifecycle.create_broker("TH-CASEBRIDGE", "CaseBridge broker")
    assert broker.public_key != broker.checkpoint_public_key
    root, cert = lifecycle.certify(th_root, lifecycle.broker_request(broker), [Role.BROKER], NOW)
    imported = lifecycle.import_broker_certificate(broker, cert.raw, th_root.certificate, NOW)
    assert imported.certificate is not None
    assert imported.certificate.has_role(Role.BROKER)
    assert BrokerIdentity.parse(imported.encode()) == imported

    _, agency_only = lifecycle.certify(root, lifecycle.broker_request(broker), [Role.AGENCY], NOW)
    with pytest.raises(UntrustedCertificate, match="broker role"):
        lifecycle.import_broker_certificate(broker, agency_only.raw, th_root.certificate, NOW)


# --- public bundle ----------------------------------------------------------------------------


def test_public_bundle_verifies_and_lists_current_keys(
    th_root: RootIdentity, th_agency: AgencyIdentity
) -> None:
    rotated = lifecycle.rotate_encryption_key(th_agency, NOW + DAY)
    bundle = verify_bundle(export_public(rotated, NOW + DAY), _trust(th_root), NOW + DAY)
    assert bundle.certificate.agency_id == "TH-ATPD"
    assert [s.key_id for s in bundle.encryption_keys] == [k.key_id for k in reversed(rotated.encryption_keys)]


def test_public_bundle_with_a_foreign_encryption_key_is_refused(
    th_root: RootIdentity, la_root: RootIdentity, th_agency: AgencyIdentity, la_agency: AgencyIdentity
) -> None:
    assert th_agency.certificate is not None
    foreign = la_agency.encryption_keys[0].statement.raw
    spliced = codec.encode(["CB-PUBLIC", 1, th_agency.certificate.raw, [foreign]])
    with pytest.raises(UntrustedCertificate):
        verify_bundle(spliced, _trust(th_root, la_root), NOW)


def test_uncertified_agency_cannot_export() -> None:
    with pytest.raises(InvalidField, match="import"):
        export_public(lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW), NOW)


# --- identity encodings -----------------------------------------------------------------------


def test_identities_round_trip_through_their_encoding(
    th_root: RootIdentity, la_agency: AgencyIdentity
) -> None:
    root, _ = lifecycle.revoke(th_root, b"\x01" * 16, NOW, "ทดสอบ", NOW)
    assert RootIdentity.parse(root.encode()) == root
    assert AgencyIdentity.parse(la_agency.encode()) == la_agency
    assert "signing_seed" not in repr(la_agency)
    assert la_agency.signing_seed.hex() not in repr(la_agency)


def test_identity_holding_anothers_certificate_is_malformed(
    th_agency: AgencyIdentity, th_root: RootIdentity
) -> None:
    other = lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)
    assert th_agency.certificate is not None
    mixed = replace(other, certificate=th_agency.certificate)
    with pytest.raises(MalformedInput):
        AgencyIdentity.parse(mixed.encode())
    stolen_key = replace(other, encryption_keys=th_agency.encryption_keys)
    with pytest.raises(MalformedInput):
        AgencyIdentity.parse(stolen_key.encode())
    wrong_seed = replace(th_root, signing_seed=other.signing_seed)
    with pytest.raises(MalformedInput):
        RootIdentity.parse(wrong_seed.encode())


def test_certificate_in_identity_is_the_exact_bytes_issued(th_root: RootIdentity) -> None:
    agency = lifecycle.create_agency("TH-ATPD", "กองบังคับการ", NOW)
    _, cert = lifecycle.certify(th_root, lifecycle.agency_request(agency), [Role.AGENCY], NOW)
    imported = lifecycle.import_certificate(agency, cert.raw, th_root.certificate, NOW)
    reparsed = AgencyIdentity.parse(imported.encode()).certificate
    assert isinstance(reparsed, AgencyCertificate)
    assert reparsed.raw == cert.raw


# --- fingerprints -----------------------------------------------------------------------------


def test_fingerprint_known_answer() -> None:
    # Computed once from keys.fingerprint (BLAKE2b-320, label "cb-fpr-v1", of bytes 0..31); it
    # must never change, or every fingerprint already read aloud and pinned would stop matching.
    assert fingerprint(bytes(range(32))) == "17192 76709 40185 22606 79064 61025 10590 52192"


def test_fingerprint_is_eight_groups_of_five_digits_for_every_key_type(
    th_root: RootIdentity, la_agency: AgencyIdentity
) -> None:
    keys = [th_root.certificate.public_key, la_agency.public_key, la_agency.encryption_keys[0].public_key]
    prints = [fingerprint(k) for k in keys]
    for fp in prints:
        assert re.fullmatch(r"\d{5}( \d{5}){7}", fp)
    assert len(set(prints)) == 3
    assert key_id_hex(la_agency.public_key) == la_agency.key_id.hex()
    assert len(key_id_hex(la_agency.public_key)) == 32
    with pytest.raises(ValueError, match="32 bytes"):
        fingerprint(b"\x00" * 31)
