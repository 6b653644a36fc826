"""Passphrase-sealed keystore files.

A keystore file is one canonical msgpack array:

    ["CB-KEYSTORE", 1, kind, opslimit, memlimit, salt(16), check(16), nonce(24), ciphertext]

- `kind` is "root", "agency", "broker" or "witness" (an audit-log witness's cosigning key,
  held by `clients.audit`); it is readable without the passphrase, so a command
  given the wrong file says so before asking for anything.
- Argon2id(passphrase, salt, opslimit, memlimit) gives 64 bytes. The first 32 are the
  XChaCha20-Poly1305 key; the associated data is the canonical encoding of the header
  `[magic, version, kind, opslimit, memlimit, salt]`, so no header field can be changed without
  the open failing. The last 32 key a 16-byte BLAKE2b check value over the same header, which
  tells a wrong passphrase (check differs, compared in constant time) from a damaged file
  (check matches, AEAD fails). A header field altered within the valid range also changes the
  check value, and so reads as a wrong passphrase: the format cannot tell the two apart.
- Passphrases are text, NFC-normalised and UTF-8 encoded, so the same Thai or Lao passphrase
  opens the keystore however the keyboard composed it. An empty one is refused; a new keystore
  needs at least `MIN_NEW_PASSPHRASE_CHARS` characters.
- opslimit and memlimit outside `[interactive, sensitive]`-sized bounds are refused as
  corruption before any work: a weakened file is a downgrade, a huge one a denial of service.
- Files are written atomically with mode 0600 (`keys.files`) and never replaced unless asked.
  A keystore that group or world can read still opens, with a `LooseKeystorePermissions`
  warning: the secret stays sealed, but anyone who can read the file can guess passphrases
  offline, so the owner must be told. Callers (the CLI) show the warning to the user.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

import nacl.bindings as sodium
import nacl.exceptions
import nacl.pwhash.argon2id as argon2id

from keys.files import PRIVATE_MODE, loose_permissions, read_bytes, write_atomic
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from protocol import codec
from protocol.errors import (
    InvalidField,
    KeystoreCorrupted,
    KeystoreError,
    MalformedInput,
    WrongKeystoreKind,
    WrongPassphrase,
)
from protocol.primitives import Random, blake2b, equal, system_random

MAGIC = "CB-KEYSTORE"
VERSION = 1
SALT_BYTES = argon2id.SALTBYTES
CHECK_BYTES = 16
NONCE_BYTES = sodium.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES
CHECK_LABEL = b"cb-ks-check-v1"
MIN_NEW_PASSPHRASE_CHARS = 8
MAX_KEYSTORE_BYTES = 2 << 20
KEYSTORE_LIMITS = codec.Limits(max_bytes=MAX_KEYSTORE_BYTES, max_bin_len=MAX_KEYSTORE_BYTES)
OPSLIMIT_BOUNDS = (argon2id.OPSLIMIT_INTERACTIVE, 16)
MEMLIMIT_BOUNDS = (argon2id.MEMLIMIT_INTERACTIVE, argon2id.MEMLIMIT_SENSITIVE)


class KeystoreKind(StrEnum):
    ROOT = "root"
    AGENCY = "agency"
    BROKER = "broker"
    WITNESS = "witness"


class LooseKeystorePermissions(UserWarning):
    """A keystore file that users other than its owner can read."""


@dataclass(frozen=True, slots=True)
class KdfProfile:
    """Argon2id cost parameters. Stronger is slower for the owner and for a guessing attacker."""

    name: str
    opslimit: int
    memlimit: int


KDF_PROFILES: dict[str, KdfProfile] = {
    p.name: p
    for p in (
        KdfProfile("interactive", argon2id.OPSLIMIT_INTERACTIVE, argon2id.MEMLIMIT_INTERACTIVE),
        KdfProfile("moderate", argon2id.OPSLIMIT_MODERATE, argon2id.MEMLIMIT_MODERATE),
        KdfProfile("sensitive", argon2id.OPSLIMIT_SENSITIVE, argon2id.MEMLIMIT_SENSITIVE),
    )
}
DEFAULT_PROFILE = KDF_PROFILES["moderate"]


def profile_for(opslimit: int, memlimit: int) -> KdfProfile:
    for profile in KDF_PROFILES.values():
        if (profile.opslimit, profile.memlimit) == (opslimit, memlimit):
            return profile
    return KdfProfile("custom", opslimit, memlimit)


@dataclass(frozen=True, slots=True)
class KeystoreHeader:
    """The part of a keystore anyone can read."""

    kind: KeystoreKind
    profile: KdfProfile
    salt: bytes
    check: bytes
    nonce: bytes
    ciphertext: bytes = field(repr=False)

    @property
    def associated_data(self) -> bytes:
        return codec.encode(
            [MAGIC, VERSION, str(self.kind), self.profile.opslimit, self.profile.memlimit, self.salt]
        )


@dataclass(frozen=True, slots=True)
class OpenedKeystore:
    kind: KeystoreKind
    profile: KdfProfile
    plaintext: bytes = field(repr=False)


def encode_passphrase(passphrase: str) -> bytes:
    """The bytes a passphrase stands for: UTF-8 of its NFC form. Empty is refused."""
    if not isinstance(passphrase, str) or not passphrase:
        raise InvalidField("passphrase", "a non-empty passphrase")
    return codec.nfc(passphrase).encode("utf-8")


def _check_bounds(name: str, value: int, bounds: tuple[int, int]) -> None:
    lo, hi = bounds
    if not lo <= value <= hi:
        raise KeystoreCorrupted(
            f"the keystore's {name} {value} is outside {lo}..{hi}; the file is damaged or was "
            "tampered with. Restore it from its backup.",
            reason=f"{name} {value} out of bounds",
        )


def _derive(passphrase: bytes, header: KeystoreHeader) -> tuple[bytes, bytes]:
    material: bytes = argon2id.kdf(
        64, passphrase, header.salt, opslimit=header.profile.opslimit, memlimit=header.profile.memlimit
    )
    aead_key, check_key = material[:32], material[32:]
    check = blake2b(header.associated_data, label=CHECK_LABEL, size=CHECK_BYTES, key=check_key)
    return aead_key, check


def read_header(data: bytes) -> KeystoreHeader:
    """Parse the readable part of a keystore; raises `KeystoreCorrupted`."""
    try:
        items = codec.array(codec.decode(data, limits=KEYSTORE_LIMITS), "keystore", 9)
        codec.literal(items[0], "magic", MAGIC)
        version = codec.int_(items[1], "version")
        if version != VERSION:
            raise KeystoreCorrupted(
                f"keystore format version {version} is not supported; upgrade CaseBridge, or the "
                "file is damaged.",
                reason=f"keystore version {version}",
            )
        kind_text = codec.str_(items[2], "kind", max_len=16)
        opslimit = codec.int_(items[3], "opslimit")
        memlimit = codec.int_(items[4], "memlimit")
        if kind_text not in {k.value for k in KeystoreKind}:
            raise MalformedInput(reason=f"unknown keystore kind {kind_text!r}")
        header = KeystoreHeader(
            kind=KeystoreKind(kind_text),
            profile=profile_for(opslimit, memlimit),
            salt=codec.bin_(items[5], "salt", SALT_BYTES),
            check=codec.bin_(items[6], "check", CHECK_BYTES),
            nonce=codec.bin_(items[7], "nonce", NONCE_BYTES),
            ciphertext=codec.bin_(items[8], "ciphertext"),
        )
    except MalformedInput as e:
        raise KeystoreCorrupted(
            f"not a CaseBridge keystore, or a damaged one ({e.reason}). Restore it from its backup.",
            reason=e.reason,
        ) from e
    _check_bounds("opslimit", opslimit, OPSLIMIT_BOUNDS)
    _check_bounds("memlimit", memlimit, MEMLIMIT_BOUNDS)
    return header


def seal(
    kind: KeystoreKind,
    plaintext: bytes,
    passphrase: str,
    profile: KdfProfile = DEFAULT_PROFILE,
    *,
    rng: Random = system_random,
) -> bytes:
    """Seal `plaintext` into keystore bytes under `passphrase`."""
    encoded = encode_passphrase(passphrase)
    if len(codec.nfc(passphrase)) < MIN_NEW_PASSPHRASE_CHARS:
        raise InvalidField("passphrase", f"at least {MIN_NEW_PASSPHRASE_CHARS} characters")
    if not (
        OPSLIMIT_BOUNDS[0] <= profile.opslimit <= OPSLIMIT_BOUNDS[1]
        and MEMLIMIT_BOUNDS[0] <= profile.memlimit <= MEMLIMIT_BOUNDS[1]
    ):
        raise InvalidField("kdf profile", f"one of {', '.join(KDF_PROFILES)} or costs between them")
    header = KeystoreHeader(KeystoreKind(kind), profile, rng(SALT_BYTES), b"", rng(NONCE_BYTES), b"")
    aead_key, check = _derive(encoded, header)
    ciphertext: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, header.associated_data, header.nonce, aead_key
    )
    return codec.encode(
        [
            MAGIC,
            VERSION,
            str(header.kind),
            profile.opslimit,
            profile.memlimit,
            header.salt,
            check,
            header.nonce,
            ciphertext,
        ],
        limits=KEYSTORE_LIMITS,
    )


def expect_kind(header: KeystoreHeader, expected: KeystoreKind) -> None:
    if header.kind != expected:
        raise WrongKeystoreKind(
            f"this is {_article(header.kind)} {header.kind} keystore, but {_article(expected)} "
            f"{expected} keystore is expected here. Give the {expected} keystore file.",
            reason=f"keystore kind {header.kind}, expected {expected}",
        )


def _article(kind: KeystoreKind) -> str:
    return "an" if kind.value[0] in "aeiou" else "a"


def open_sealed(data: bytes, passphrase: str, expected: KeystoreKind) -> OpenedKeystore:
    """Open keystore bytes of kind `expected`. Raises, in this order: `KeystoreCorrupted` (not
    a keystore), `WrongKeystoreKind`, `WrongPassphrase`, `KeystoreCorrupted` (damaged)."""
    header = read_header(data)
    expect_kind(header, expected)
    aead_key, check = _derive(encode_passphrase(passphrase), header)
    if not equal(check, header.check):
        raise WrongPassphrase(
            "wrong passphrase for this keystore. Check the keyboard layout and caps lock, and try again.",
            reason="keystore check value mismatch",
        )
    try:
        plaintext: bytes = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            header.ciphertext, header.associated_data, header.nonce, aead_key
        )
    except (nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise KeystoreCorrupted(
            "the passphrase is right but the sealed keys are damaged. Restore the keystore from its backup.",
            reason="keystore AEAD failure with a matching check value",
        ) from e
    return OpenedKeystore(header.kind, header.profile, plaintext)


# --- identities in files ----------------------------------------------------------------------

Identity = RootIdentity | AgencyIdentity | BrokerIdentity
IdentityT = TypeVar("IdentityT", RootIdentity, AgencyIdentity, BrokerIdentity)


@dataclass(frozen=True, slots=True)
class Unlocked(Generic[IdentityT]):
    """An identity read from a keystore, with the KDF profile to seal it again under."""

    identity: IdentityT
    profile: KdfProfile


_KIND_OF: dict[type[Identity], KeystoreKind] = {
    RootIdentity: KeystoreKind.ROOT,
    AgencyIdentity: KeystoreKind.AGENCY,
    BrokerIdentity: KeystoreKind.BROKER,
}


def kind_of(identity: Identity) -> KeystoreKind:
    return _KIND_OF[type(identity)]


def _with_path(path: str | os.PathLike[str], e: KeystoreError) -> KeystoreError:
    return type(e)(f"{os.fspath(path)}: {e.detail}", reason=e.reason)


def read_keystore_file(path: str | os.PathLike[str]) -> bytes:
    """Read a keystore file (bounded), warning if others can read it."""
    data = read_bytes(path, max_bytes=MAX_KEYSTORE_BYTES)
    loose = loose_permissions(path)
    if loose is not None:
        warnings.warn(
            LooseKeystorePermissions(
                f"{os.fspath(path)} can be read by other users (mode bits {loose:03o}); "
                f"run: chmod 600 {os.fspath(path)}"
            ),
            stacklevel=2,
        )
    return data


def peek_kind(path: str | os.PathLike[str], expected: KeystoreKind | None = None) -> KeystoreHeader:
    """Read a keystore's public header (and check its kind) without a passphrase."""
    try:
        header = read_header(read_keystore_file(path))
        if expected is not None:
            expect_kind(header, expected)
    except KeystoreError as e:
        raise _with_path(path, e) from e
    return header


def save_identity(
    path: str | os.PathLike[str],
    identity: Identity,
    passphrase: str,
    profile: KdfProfile = DEFAULT_PROFILE,
    *,
    overwrite: bool = False,
    rng: Random = system_random,
) -> None:
    """Seal `identity` under `passphrase` and write it to `path` (mode 0600, atomically)."""
    data = seal(kind_of(identity), identity.encode(), passphrase, profile, rng=rng)
    write_atomic(path, data, mode=PRIVATE_MODE, overwrite=overwrite)


def _load(path: str | os.PathLike[str], passphrase: str, kind: KeystoreKind) -> OpenedKeystore:
    try:
        return open_sealed(read_keystore_file(path), passphrase, kind)
    except KeystoreError as e:
        raise _with_path(path, e) from e


def _parse(
    path: str | os.PathLike[str], parse: type[IdentityT], opened: OpenedKeystore
) -> Unlocked[IdentityT]:
    try:
        return Unlocked(parse.parse(opened.plaintext), opened.profile)
    except MalformedInput as e:
        raise KeystoreCorrupted(
            f"{os.fspath(path)}: the keys inside are not readable ({e.reason}). Restore it from its backup.",
            reason=e.reason,
        ) from e


def load_root(path: str | os.PathLike[str], passphrase: str) -> Unlocked[RootIdentity]:
    return _parse(path, RootIdentity, _load(path, passphrase, KeystoreKind.ROOT))


def load_agency(path: str | os.PathLike[str], passphrase: str) -> Unlocked[AgencyIdentity]:
    return _parse(path, AgencyIdentity, _load(path, passphrase, KeystoreKind.AGENCY))


def load_broker(path: str | os.PathLike[str], passphrase: str) -> Unlocked[BrokerIdentity]:
    return _parse(path, BrokerIdentity, _load(path, passphrase, KeystoreKind.BROKER))
