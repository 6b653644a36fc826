"""Certificate chains and the trust decisions on them: every wrong chain fails closed.

Root -> agency certificate -> encryption key statement, plus root-signed revocation lists. Each
test names the way a key directory could lie and checks the exact error it meets.
"""

from __future__ import annotations

import nacl.signing
import pytest

from protocol import codec
from protocol.certificate import (
    CTX_AGENCY,
    CTX_ENCRYPTION_KEY,
    CTX_REVOCATION,
    CTX_ROOT,
    AgencyCertificate,
    EncryptionKey,
    Revocation,
    RevocationList,
    Role,
    RootCertificate,
    TrustStore,
    join_signed,
    split_signed,
)
from protocol.errors import (
    CertificateExpired,
    CertificateNotYetValid,
    KeyRevoked,
    MalformedInput,
    UnsupportedVersion,
    UntrustedCertificate,
    VerificationError,
)
from protocol.primitives import key_id, sign, x25519_public
from tests.protocol_fixtures import (
    DAY,
    LA,
    LA_ATD,
    LA_MLSW,
    NOW,
    TH,
    TH_ATPD,
    TH_DSDW,
    YEAR,
    Agency,
    agency_certificate_items,
    make_agency,
    make_country,
    refused,
    seed,
    signed,
    trust_store,
)


def flip(data: bytes, index: int) -> bytes:
    out = bytearray(data)
    out[index] ^= 0x01
    return bytes(out)


# --- chains that verify ----------------------------------------------------------------------


@pytest.mark.parametrize("agency", [TH_DSDW, TH_ATPD, LA_MLSW, LA_ATD], ids=lambda a: a.id)
def test_chain_root_agency_encryption_key_verifies(agency: Agency) -> None:
    trust = trust_store()
    cert = trust.verify_agency(agency.cert.raw, NOW)
    assert cert == agency.cert
    assert cert.country == agency.id[:2]
    key = trust.verify_encryption_key(agency.encryption.raw, cert, NOW)
    assert key.public_key == x25519_public(agency.encryption_secret)


def test_thai_and_lao_names_survive_certification() -> None:
    assert TH_DSDW.cert.name == "กรมพัฒนาสังคมและสวัสดิการ"
    assert LA_MLSW.cert.name == "ກະຊວງແຮງງານ ແລະ ສະຫວັດດີການສັງຄົມ"
    assert RootCertificate.parse(LA.root.raw).name == LA.root.name
    assert AgencyCertificate.parse(LA_MLSW.cert.raw) == LA_MLSW.cert


def test_certificate_name_is_stored_in_nfc() -> None:
    decomposed = "\u0e1b\u0e48\u0e39 Cafe\u0301"
    agency = make_agency(TH, "TH-NFC", decomposed)
    assert agency.cert.name == codec.nfc(decomposed)


# --- validity windows and revocation ---------------------------------------------------------


def test_expired_agency_certificate_is_refused() -> None:
    agency = make_agency(TH, "TH-OLD", "เก่า", not_before=NOW - 2 * YEAR, not_after=NOW - DAY)
    trust = trust_store()
    trust.verify_agency(agency.cert.raw, NOW - 2 * DAY)
    with refused(CertificateExpired):
        trust.verify_agency(agency.cert.raw, NOW)
    with refused(CertificateExpired):
        trust.verify_agency(agency.cert.raw, NOW - DAY)  # not_after itself is outside


def test_not_yet_valid_agency_certificate_is_refused() -> None:
    agency = make_agency(LA, "LA-NEW", "ໃໝ່", not_before=NOW + DAY, not_after=NOW + YEAR)
    trust = trust_store()
    with refused(CertificateNotYetValid):
        trust.verify_agency(agency.cert.raw, NOW)
    assert trust.verify_agency(agency.cert.raw, NOW + DAY).agency_id == "LA-NEW"


def test_expired_encryption_key_is_refused() -> None:
    trust = trust_store()
    cert = trust.verify_agency(LA_MLSW.cert.raw, NOW)
    with refused(CertificateExpired):
        trust.verify_encryption_key(LA_MLSW.encryption.raw, cert, NOW + 60 * DAY)
    with refused(CertificateNotYetValid):
        trust.verify_encryption_key(LA_MLSW.encryption.raw, cert, NOW - 31 * DAY)


def test_expired_root_refuses_everything_it_certified() -> None:
    old = make_country("TH", "เก่า", not_before=NOW - 3 * YEAR, not_after=NOW - DAY, label="old")
    agency = make_agency(old, "TH-DSDW", "กรม", label="old")
    with refused(CertificateExpired):
        TrustStore([old.root]).verify_agency(agency.cert.raw, NOW)


def revoke(
    country_key: nacl.signing.SigningKey, root: RootCertificate, number: int, *entries: Revocation
) -> bytes:
    return RevocationList.issue(country_key, root, number=number, issued_at=NOW, entries=entries).raw


def test_revoked_signing_key_is_refused_from_revoked_at_on_only() -> None:
    trust = trust_store()
    trust.accept_revocation_list(
        revoke(LA.root_key, LA.root, 1, Revocation(LA_MLSW.cert.key_id, NOW, "compromise"))
    )
    assert trust.verify_agency(LA_MLSW.cert.raw, NOW - 1).agency_id == "LA-MLSW"
    with refused(KeyRevoked):
        trust.verify_agency(LA_MLSW.cert.raw, NOW)
    with refused(KeyRevoked):
        trust.verify_agency(LA_MLSW.cert.raw, NOW + DAY)
    assert trust.verify_agency(LA_ATD.cert.raw, NOW + DAY).agency_id == "LA-ATD"


def test_revoked_encryption_key_is_refused_from_revoked_at_on_only() -> None:
    trust = trust_store()
    kid = TH_DSDW.encryption.key_id
    trust.accept_revocation_list(revoke(TH.root_key, TH.root, 3, Revocation(kid, NOW + 10, "rotated early")))
    cert = trust.verify_agency(TH_DSDW.cert.raw, NOW + 10)
    trust.verify_encryption_key(TH_DSDW.encryption.raw, cert, NOW + 9)
    with refused(KeyRevoked):
        trust.verify_encryption_key(TH_DSDW.encryption.raw, cert, NOW + 10)


def test_revocation_in_one_country_does_not_touch_the_other() -> None:
    trust = trust_store()
    # The TH list names an LA key id: it is TH's list, so it does not revoke LA's key.
    trust.accept_revocation_list(revoke(TH.root_key, TH.root, 1, Revocation(LA_MLSW.cert.key_id, NOW, "x")))
    trust.verify_agency(LA_MLSW.cert.raw, NOW + 1)


# --- who may certify whom --------------------------------------------------------------------


def test_unknown_root_is_untrusted() -> None:
    rogue = make_country("TH", "รากปลอม", label="rogue")
    agency = make_agency(rogue, "TH-DSDW", "กรมพัฒนาสังคมและสวัสดิการ", label="rogue")
    with refused(UntrustedCertificate):
        trust_store().verify_agency(agency.cert.raw, NOW)


def test_empty_trust_store_denies_everything() -> None:
    empty = TrustStore([])
    assert empty.roots == {}
    for agency in (TH_DSDW, LA_MLSW):
        with refused(UntrustedCertificate):
            empty.verify_agency(agency.cert.raw, NOW)
    with refused(UntrustedCertificate):
        empty.accept_revocation_list(revoke(TH.root_key, TH.root, 1))
    with refused(UntrustedCertificate):
        empty.root_for(TH.root.key_id, NOW)


def test_root_refuses_to_issue_for_another_country() -> None:
    with refused(UntrustedCertificate):
        AgencyCertificate.issue(
            TH.root_key,
            TH.root,
            serial=9,
            agency_id="LA-MLSW",
            name="ກະຊວງ",
            roles=[Role.AGENCY],
            signing_key=bytes(LA_MLSW.signing_key.verify_key),
            not_before=NOW - DAY,
            not_after=NOW + YEAR,
        )


def test_root_issues_only_with_its_own_key() -> None:
    with pytest.raises(ValueError, match="not this root's key"):
        AgencyCertificate.issue(
            LA.root_key,
            TH.root,
            serial=9,
            agency_id="TH-X",
            name="x",
            roles=[Role.AGENCY],
            signing_key=bytes(TH_DSDW.signing_key.verify_key),
            not_before=NOW - DAY,
            not_after=NOW + YEAR,
        )


@pytest.mark.parametrize(("agency_id", "country"), [("LA-MLSW", "LA"), ("LA-MLSW", "TH"), ("TH-DSDW", "LA")])
def test_name_constraint_refuses_hand_built_certificate(agency_id: str, country: str) -> None:
    # A correctly signed TH-root certificate for a Lao agency (or with a mismatched country):
    # the TH root cannot speak for Lao PDR, whatever the body claims.
    key = bytes(nacl.signing.SigningKey(seed("impostor")).verify_key)
    raw = signed(TH.root_key, CTX_AGENCY, agency_certificate_items(TH.root, agency_id, country, key))
    with refused(UntrustedCertificate):
        trust_store().verify_agency(raw, NOW)


def test_foreign_root_claiming_the_other_roots_key_id_fails_its_signature() -> None:
    key = bytes(nacl.signing.SigningKey(seed("impostor")).verify_key)
    raw = signed(LA.root_key, CTX_AGENCY, agency_certificate_items(TH.root, "TH-DSDW", "TH", key))
    with refused(VerificationError):
        trust_store().verify_agency(raw, NOW)


@pytest.mark.parametrize("where", ["body", "signature"])
def test_tampered_agency_certificate_is_refused(where: str) -> None:
    body, signature = split_signed(LA_MLSW.cert.raw, "agency certificate")
    if where == "body":
        # Change the serial (a fixint just after magic and version): still parses, signature fails.
        index = body.index(b"\xa9CB-AGENCY") + 11
        body = flip(body, index)
        assert AgencyCertificate.parse(join_signed(body, signature)).serial != LA_MLSW.cert.serial
    else:
        signature = flip(signature, 5)
    with refused(VerificationError):
        trust_store().verify_agency(join_signed(body, signature), NOW)


def test_certificate_signed_under_another_context_is_refused() -> None:
    key = bytes(LA_MLSW.signing_key.verify_key)
    items = agency_certificate_items(LA.root, "LA-MLSW", "LA", key)
    body = codec.encode(items)
    raw = join_signed(body, sign(LA.root_key, CTX_REVOCATION, body))
    with refused(VerificationError):
        trust_store().verify_agency(raw, NOW)


def test_root_with_tampered_self_signature_is_refused() -> None:
    body, signature = split_signed(TH.root.raw, "root certificate")
    with refused(VerificationError):
        RootCertificate.parse(join_signed(body, flip(signature, 0)))
    with refused(VerificationError):
        RootCertificate.parse(join_signed(flip(body, len(body) - 1), signature))


def test_root_signed_by_another_key_is_refused() -> None:
    body, _ = split_signed(TH.root.raw, "root certificate")
    with refused(VerificationError):
        RootCertificate.parse(join_signed(body, sign(LA.root_key, CTX_ROOT, body)))


def test_unknown_certificate_version_is_unsupported() -> None:
    key = bytes(TH_DSDW.signing_key.verify_key)
    items = agency_certificate_items(TH.root, "TH-DSDW", "TH", key)
    items[1] = 2
    with refused(UnsupportedVersion):
        AgencyCertificate.parse(signed(TH.root_key, CTX_AGENCY, items))


def test_certificate_with_inverted_validity_is_malformed() -> None:
    items = agency_certificate_items(TH.root, "TH-DSDW", "TH", bytes(TH_DSDW.signing_key.verify_key))
    items[9], items[10] = NOW + YEAR, NOW
    with refused(MalformedInput):
        AgencyCertificate.parse(signed(TH.root_key, CTX_AGENCY, items))


@pytest.mark.parametrize("roles", [["agency", "agency"], ["auditor", "agency"], ["king"], [1, "agency"]])
def test_certificate_roles_must_be_known_sorted_and_unique(roles: list[object]) -> None:
    items = agency_certificate_items(TH.root, "TH-DSDW", "TH", bytes(TH_DSDW.signing_key.verify_key))
    items[6] = roles
    with refused(MalformedInput):
        AgencyCertificate.parse(signed(TH.root_key, CTX_AGENCY, items))


# --- encryption key statements ---------------------------------------------------------------


def test_encryption_key_signed_by_another_agency_is_refused() -> None:
    # LA-ATD signs a statement that claims to be LA-MLSW's key.
    forged = EncryptionKey.issue(
        LA_ATD.signing_key,
        agency_id="LA-MLSW",
        public_key=x25519_public(seed("attacker encryption key")),
        not_before=NOW - DAY,
        not_after=NOW + 30 * DAY,
    )
    trust = trust_store()
    cert = trust.verify_agency(LA_MLSW.cert.raw, NOW)
    with refused(UntrustedCertificate):
        trust.verify_encryption_key(forged.raw, cert, NOW)
    # Another agency's genuine key presented as LA-MLSW's.
    with refused(UntrustedCertificate):
        trust.verify_encryption_key(LA_ATD.encryption.raw, cert, NOW)


def test_encryption_key_claiming_the_agency_key_id_but_signed_by_another_is_refused() -> None:
    items = [
        "CB-ENCKEY",
        1,
        "LA-MLSW",
        LA_MLSW.cert.key_id,
        x25519_public(seed("attacker encryption key")),
        NOW - DAY,
        NOW + 30 * DAY,
    ]
    raw = signed(LA_ATD.signing_key, CTX_ENCRYPTION_KEY, items)
    trust = trust_store()
    cert = trust.verify_agency(LA_MLSW.cert.raw, NOW)
    with refused(VerificationError):
        trust.verify_encryption_key(raw, cert, NOW)


def test_encryption_key_statement_signed_by_the_root_is_refused() -> None:
    items = [
        "CB-ENCKEY",
        1,
        "LA-MLSW",
        LA_MLSW.cert.key_id,
        LA_MLSW.encryption.public_key,
        NOW - DAY,
        NOW + DAY,
    ]
    raw = signed(LA.root_key, CTX_ENCRYPTION_KEY, items)
    trust = trust_store()
    with refused(VerificationError):
        trust.verify_encryption_key(raw, trust.verify_agency(LA_MLSW.cert.raw, NOW), NOW)


# --- revocation lists ------------------------------------------------------------------------


def test_revocation_list_from_the_wrong_root_is_refused() -> None:
    # Signed by the LA root but naming the TH root as its issuer (built by hand: the issuing
    # helper refuses a key that is not the root's own).
    with pytest.raises(ValueError, match="not this root's key"):
        RevocationList.issue(LA.root_key, TH.root, number=5, issued_at=NOW, entries=[])
    items = ["CB-CRL", 1, "TH", TH.root.key_id, 5, NOW, []]
    trust = trust_store()
    with refused(VerificationError):
        trust.accept_revocation_list(signed(LA.root_key, CTX_REVOCATION, items))
    # A list from an unpinned root of the same country.
    rogue = make_country("TH", "รากปลอม", label="rogue")
    with refused(UntrustedCertificate):
        trust.accept_revocation_list(revoke(rogue.root_key, rogue.root, 6))
    assert trust.revocation_list("TH") is None


def test_revocation_list_claiming_another_country_is_refused() -> None:
    items = ["CB-CRL", 1, "LA", TH.root.key_id, 1, NOW, []]
    with refused(UntrustedCertificate):
        trust_store().accept_revocation_list(signed(TH.root_key, CTX_REVOCATION, items))


def test_revocation_list_rollback_is_refused() -> None:
    trust = trust_store()
    entry = Revocation(LA_MLSW.cert.key_id, NOW, "compromise")
    trust.accept_revocation_list(revoke(LA.root_key, LA.root, 2, entry))
    with refused(VerificationError):
        trust.accept_revocation_list(revoke(LA.root_key, LA.root, 1))
    held = trust.revocation_list("LA")
    assert held is not None
    assert held.number == 2
    with refused(KeyRevoked):
        trust.verify_agency(LA_MLSW.cert.raw, NOW)


def test_two_different_revocation_lists_with_the_same_number_are_refused() -> None:
    trust = trust_store()
    first = revoke(LA.root_key, LA.root, 4, Revocation(LA_MLSW.cert.key_id, NOW, "a"))
    trust.accept_revocation_list(first)
    trust.accept_revocation_list(first)  # the same list again is harmless
    with refused(VerificationError):
        trust.accept_revocation_list(revoke(LA.root_key, LA.root, 4))
    newer = trust.accept_revocation_list(revoke(LA.root_key, LA.root, 5))
    assert newer.entries == ()


def test_tampered_revocation_list_is_refused() -> None:
    raw = revoke(TH.root_key, TH.root, 1, Revocation(TH_DSDW.cert.key_id, NOW, "compromise"))
    body, signature = split_signed(raw, "revocation list")
    tampered = body.replace(b"compromise", b"compromisf")
    with refused(VerificationError):
        trust_store().accept_revocation_list(join_signed(tampered, signature))


def test_revocation_entries_must_be_sorted_and_unique() -> None:
    kid = key_id(b"k" * 32)
    items = ["CB-CRL", 1, "TH", TH.root.key_id, 1, NOW, [[kid, NOW, "a"], [kid, NOW, "b"]]]
    with refused(MalformedInput):
        RevocationList.parse(signed(TH.root_key, CTX_REVOCATION, items))
