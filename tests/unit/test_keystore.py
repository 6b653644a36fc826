"""Sealed keystore files: round trips, every failure class, file hygiene, Unicode passphrases."""

from __future__ import annotations

import os
import stat
import unicodedata
from pathlib import Path

import pytest

from keys import lifecycle
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from keys.keystore import (
    KDF_PROFILES,
    KeystoreKind,
    LooseKeystorePermissions,
    load_agency,
    load_broker,
    load_root,
    open_sealed,
    peek_kind,
    read_header,
    save_identity,
    seal,
)
from protocol import codec
from protocol.errors import (
    Conflict,
    InvalidField,
    KeystoreCorrupted,
    KeystoreError,
    NotFound,
    WrongKeystoreKind,
    WrongPassphrase,
)

NOW = 1_760_000_000
FAST = KDF_PROFILES["interactive"]
PASSPHRASE = "correct horse แบตเตอรี่ ສົມພອນ"


@pytest.fixture(scope="module")
def root() -> RootIdentity:
    return lifecycle.create_root("TH", "สำนักงานตำรวจแห่งชาติ", NOW)


@pytest.fixture(scope="module")
def agency() -> AgencyIdentity:
    return lifecycle.rotate_encryption_key(
        lifecycle.create_agency("LA-MOPS", "ນາງ ສົມພອນ ແກ້ວມະນີ", NOW), NOW + 5
    )


@pytest.fixture(scope="module")
def broker() -> BrokerIdentity:
    return lifecycle.create_broker("TH-CASEBRIDGE", "CaseBridge broker")


@pytest.fixture
def agency_file(tmp_path: Path, agency: AgencyIdentity) -> Path:
    path = tmp_path / "agency.cbks"
    save_identity(path, agency, PASSPHRASE, FAST)
    return path


def _items(path: Path) -> list[object]:
    items: list[object] = codec.decode(path.read_bytes(), limits=codec.Limits(max_bytes=1 << 22))
    return items


# --- round trips ------------------------------------------------------------------------------


def test_root_keystore_round_trips(tmp_path: Path, root: RootIdentity) -> None:
    path = tmp_path / "th-root.cbks"
    save_identity(path, root, PASSPHRASE, FAST)
    unlocked = load_root(path, PASSPHRASE)
    assert unlocked.identity == root
    assert unlocked.identity.encode() == root.encode()
    assert unlocked.profile == FAST


def test_agency_keystore_round_trips_with_every_encryption_key(
    agency_file: Path, agency: AgencyIdentity
) -> None:
    unlocked = load_agency(agency_file, PASSPHRASE)
    assert unlocked.identity.encode() == agency.encode()
    assert unlocked.identity.recipient_keys() == agency.recipient_keys()
    assert len(unlocked.identity.encryption_keys) == 2


def test_broker_keystore_round_trips(tmp_path: Path, broker: BrokerIdentity) -> None:
    path = tmp_path / "broker.cbks"
    save_identity(path, broker, PASSPHRASE, FAST)
    assert load_broker(path, PASSPHRASE).identity.encode() == broker.encode()


def test_each_seal_uses_fresh_salt_and_nonce(agency: AgencyIdentity) -> None:
    a = read_header(seal(KeystoreKind.AGENCY, agency.encode(), PASSPHRASE, FAST))
    b = read_header(seal(KeystoreKind.AGENCY, agency.encode(), PASSPHRASE, FAST))
    assert a.salt != b.salt
    assert a.nonce != b.nonce
    assert a.ciphertext != b.ciphertext


def test_keystore_kind_is_readable_without_passphrase(agency_file: Path) -> None:
    header = peek_kind(agency_file)
    assert header.kind == KeystoreKind.AGENCY
    assert header.profile.name == "interactive"


# --- failures, each with its own class ----------------------------------------------------------


def test_wrong_passphrase_is_its_own_error(agency_file: Path) -> None:
    with pytest.raises(WrongPassphrase) as caught:
        load_agency(agency_file, PASSPHRASE + "x")
    assert str(agency_file) in caught.value.detail


def test_flipped_ciphertext_byte_is_corruption_not_a_wrong_passphrase(agency_file: Path) -> None:
    data = bytearray(agency_file.read_bytes())
    data[-1] ^= 0x01  # The last byte of the file is the last byte of the AEAD tag.
    agency_file.write_bytes(bytes(data))
    with pytest.raises(KeystoreCorrupted) as caught:
        load_agency(agency_file, PASSPHRASE)
    assert not isinstance(caught.value, WrongPassphrase)
    assert "passphrase is right" in caught.value.detail


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda data: data[: len(data) // 2], id="truncated"),
        pytest.param(lambda data: data[:-1], id="last-byte-missing"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: os.urandom(len(data)), id="random-garbage"),
        pytest.param(lambda data: b"-----BEGIN OPENSSH PRIVATE KEY-----\n", id="another-format"),
        pytest.param(lambda data: data + b"\x00", id="trailing-byte"),
    ],
)
def test_damaged_file_is_corrupted(agency_file: Path, damage: object) -> None:
    assert callable(damage)
    agency_file.write_bytes(damage(agency_file.read_bytes()))
    with pytest.raises(KeystoreCorrupted):
        load_agency(agency_file, PASSPHRASE)


def test_wrong_kind_names_both_kinds(agency_file: Path) -> None:
    with pytest.raises(WrongKeystoreKind) as caught:
        load_root(agency_file, PASSPHRASE)
    assert "an agency keystore" in caught.value.detail
    assert "a root keystore is expected" in caught.value.detail


def test_relabelled_kind_does_not_open_as_another_kind(agency_file: Path) -> None:
    items = _items(agency_file)
    items[2] = "broker"
    agency_file.write_bytes(codec.encode(items, limits=codec.Limits(max_bytes=1 << 22)))
    with pytest.raises(KeystoreError):
        load_broker(agency_file, PASSPHRASE)


@pytest.mark.parametrize(
    ("index", "value"),
    [
        pytest.param(3, 1, id="opslimit-downgraded"),
        pytest.param(3, 1 << 20, id="opslimit-huge"),
        pytest.param(4, 8192, id="memlimit-downgraded"),
        pytest.param(4, 1 << 40, id="memlimit-huge"),
    ],
)
def test_kdf_cost_outside_bounds_is_refused_before_any_work(
    agency_file: Path, index: int, value: int
) -> None:
    items = _items(agency_file)
    items[index] = value
    agency_file.write_bytes(codec.encode(items, limits=codec.Limits(max_bytes=1 << 22)))
    with pytest.raises(KeystoreCorrupted) as caught:
        load_agency(agency_file, PASSPHRASE)
    assert "outside" in caught.value.detail


def test_unknown_kind_and_version_are_corrupted(agency_file: Path) -> None:
    for index, value in ((2, "desk"), (1, 2)):
        items = _items(agency_file)
        items[index] = value
        data = codec.encode(items, limits=codec.Limits(max_bytes=1 << 22))
        with pytest.raises(KeystoreCorrupted):
            open_sealed(data, PASSPHRASE, KeystoreKind.AGENCY)


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        load_agency(tmp_path / "absent.cbks", PASSPHRASE)


def test_empty_passphrase_is_refused(agency_file: Path, agency: AgencyIdentity) -> None:
    with pytest.raises(InvalidField):
        load_agency(agency_file, "")
    with pytest.raises(InvalidField):
        save_identity(agency_file.with_name("new.cbks"), agency, "", FAST)


def test_short_new_passphrase_is_refused(tmp_path: Path, agency: AgencyIdentity) -> None:
    with pytest.raises(InvalidField):
        save_identity(tmp_path / "new.cbks", agency, "1234567", FAST)
    assert not (tmp_path / "new.cbks").exists()


# --- file hygiene -----------------------------------------------------------------------------


def test_keystore_file_is_private(agency_file: Path) -> None:
    assert stat.S_IMODE(agency_file.stat().st_mode) == 0o600


def test_atomic_writes_leave_no_temporary_files(tmp_path: Path, agency: AgencyIdentity) -> None:
    path = tmp_path / "agency.cbks"
    save_identity(path, agency, PASSPHRASE, FAST)
    save_identity(path, agency, PASSPHRASE, FAST, overwrite=True)
    with pytest.raises(Conflict):
        save_identity(path, agency, PASSPHRASE, FAST)
    assert sorted(os.listdir(tmp_path)) == ["agency.cbks"]


def test_existing_keystore_is_never_replaced_unless_asked(
    tmp_path: Path, agency: AgencyIdentity, broker: BrokerIdentity
) -> None:
    path = tmp_path / "agency.cbks"
    save_identity(path, agency, PASSPHRASE, FAST)
    before = path.read_bytes()
    with pytest.raises(Conflict):
        save_identity(path, broker, PASSPHRASE, FAST)
    assert path.read_bytes() == before
    save_identity(path, broker, PASSPHRASE, FAST, overwrite=True)
    assert peek_kind(path).kind == KeystoreKind.BROKER
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_readable_by_others_warns_but_opens(agency_file: Path) -> None:
    agency_file.chmod(0o644)
    with pytest.warns(LooseKeystorePermissions, match="chmod 600"):
        unlocked = load_agency(agency_file, PASSPHRASE)
    assert unlocked.identity.agency_id == "LA-MOPS"


# --- Unicode passphrases ----------------------------------------------------------------------

# Thai and Lao marks whose canonical order differs from a keyboard's typing order: a tone mark
# typed before a below-vowel is reordered by NFC (canonical combining classes 107/103 and 122/118).
THAI_TYPED = "รหัสผ่านก\u0e48\u0e39ของฉัน"
LAO_TYPED = "ລະຫັດສ\u0ec8\u0eb8ຂອງຂ້ອຍ"


@pytest.mark.parametrize("typed", [THAI_TYPED, LAO_TYPED, "cafe\u0301 passphrase"])
def test_passphrase_opens_regardless_of_normalisation(
    tmp_path: Path, agency: AgencyIdentity, typed: str
) -> None:
    composed = unicodedata.normalize("NFC", typed)
    decomposed = unicodedata.normalize("NFD", typed)
    assert len({typed, composed, decomposed}) >= 2
    path = tmp_path / "agency.cbks"
    save_identity(path, agency, typed, FAST)
    for form in (composed, decomposed, typed):
        assert load_agency(path, form).identity.agency_id == "LA-MOPS"
    with pytest.raises(WrongPassphrase):
        load_agency(path, composed[:-1])
