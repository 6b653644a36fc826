"""What a keystore holds: a national root, an agency or a broker, with their private keys.

Each identity is a frozen dataclass with a canonical msgpack encoding (the keystore's
plaintext). Signed documents are held parsed, and encoded as their exact received bytes.

Invariants, checked by every `parse` so a keystore that decrypts but holds mismatched keys is
refused rather than used:
- a root's seed is the key of its root certificate;
- an agency's (or broker's) seed is the key its certificate certifies, for the same id;
- each held encryption key's secret matches its statement, which names this agency and is
  signed by this agency's own signing key; key ids are unique;
- a root's revocation entries are sorted by key id with no duplicates.

Old encryption keys are kept after rotation so old envelopes still open; only
`keys.lifecycle.prune_encryption_keys` drops them, after their retention time.
Secrets never appear in a repr.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.signing

from protocol import codec
from protocol.certificate import (
    AGENCY_ID,
    CTX_ENCRYPTION_KEY,
    MAX_NAME,
    MAX_REVOCATIONS,
    AgencyCertificate,
    EncryptionKey,
    Revocation,
    RootCertificate,
)
from protocol.envelope import RecipientKey
from protocol.errors import CaseBridgeError, CertificateExpired, MalformedInput
from protocol.primitives import key_id, verify, x25519_public

SEED_BYTES = 32
MAX_ENCRYPTION_KEYS = 512
IDENTITY_LIMITS = codec.Limits(max_bytes=2 << 20, max_array_len=MAX_REVOCATIONS)


def _parsed(parse: Any, data: Any, field_name: str) -> Any:
    """Parse an embedded signed document; any failure means the identity is malformed."""
    raw = codec.bin_(data, field_name)
    try:
        return parse(raw)
    except CaseBridgeError as e:
        raise MalformedInput(reason=f"{field_name}: {e.reason}") from e


def _header(items: list[Any], magic: str) -> None:
    codec.literal(items[0], "magic", magic)
    codec.literal(items[1], "version", 1)


def _check_certified(cert: AgencyCertificate | None, holder_id: str, public_key: bytes) -> None:
    if cert is not None and (cert.agency_id != holder_id or cert.signing_key != public_key):
        raise MalformedInput(reason=f"certificate is not for {holder_id}'s signing key")


# --- national root ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootIdentity:
    """A national root key, its self-signed certificate and what it has issued so far."""

    signing_seed: bytes = field(repr=False)
    certificate: RootCertificate
    next_serial: int
    next_crl_number: int
    revocations: tuple[Revocation, ...] = ()

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.signing_seed)

    @property
    def country(self) -> str:
        return self.certificate.country

    def encode(self) -> bytes:
        return codec.encode(
            [
                "CB-ROOT-ID",
                1,
                self.signing_seed,
                self.certificate.raw,
                self.next_serial,
                self.next_crl_number,
                [[r.key_id, r.revoked_at, r.reason] for r in self.revocations],
            ],
            limits=IDENTITY_LIMITS,
        )

    @classmethod
    def parse(cls, data: bytes) -> RootIdentity:
        items = codec.array(codec.decode(data, limits=IDENTITY_LIMITS), "root identity", 7)
        _header(items, "CB-ROOT-ID")
        seed = codec.bin_(items[2], "signing_seed", SEED_BYTES)
        cert: RootCertificate = _parsed(RootCertificate.parse, items[3], "certificate")
        if bytes(nacl.signing.SigningKey(seed).verify_key) != cert.public_key:
            raise MalformedInput(reason="root seed does not match the root certificate")
        revocations = []
        for i, raw in enumerate(codec.array(items[6], "revocations", max_len=MAX_REVOCATIONS)):
            entry = codec.array(raw, f"revocations[{i}]", 3)
            revocations.append(
                Revocation(
                    key_id=codec.bin_(entry[0], f"revocations[{i}].key_id", 16),
                    revoked_at=codec.int_(entry[1], f"revocations[{i}].revoked_at"),
                    reason=codec.str_(entry[2], f"revocations[{i}].reason", max_len=200),
                )
            )
        codec.sorted_unique([r.key_id for r in revocations], "revocations")
        return cls(
            signing_seed=seed,
            certificate=cert,
            next_serial=codec.int_(items[4], "next_serial", 1),
            next_crl_number=codec.int_(items[5], "next_crl_number", 1),
            revocations=tuple(revocations),
        )


# --- agency -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeldEncryptionKey:
    """One X25519 key pair of an agency with its signed statement."""

    secret_key: bytes = field(repr=False)
    statement: EncryptionKey

    @property
    def public_key(self) -> bytes:
        return self.statement.public_key

    @property
    def key_id(self) -> bytes:
        return self.statement.key_id

    @property
    def not_before(self) -> int:
        return self.statement.not_before

    @property
    def not_after(self) -> int:
        return self.statement.not_after

    def valid_at(self, now: int) -> bool:
        return self.not_before <= now < self.not_after

    def recipient_key(self) -> RecipientKey:
        return RecipientKey(public_key=self.public_key, secret_key=self.secret_key)


@dataclass(frozen=True, slots=True)
class AgencyIdentity:
    """An agency's signing key, its certificate once issued, and every encryption key it holds."""

    agency_id: str
    name: str
    signing_seed: bytes = field(repr=False)
    certificate: AgencyCertificate | None
    encryption_keys: tuple[HeldEncryptionKey, ...]

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.signing_seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def key_id(self) -> bytes:
        return key_id(self.public_key)

    def recipient_keys(self) -> Mapping[bytes, RecipientKey]:
        """Every held key pair by key id, for `protocol.envelope.EnvelopeOpener(keys=...)`."""
        return {k.key_id: k.recipient_key() for k in self.encryption_keys}

    def current_encryption_key(self, now: int) -> HeldEncryptionKey:
        """The newest encryption key valid at `now`: the one senders should use."""
        valid = [k for k in self.encryption_keys if k.valid_at(now)]
        if not valid:
            raise CertificateExpired(
                f"{self.agency_id} holds no encryption key valid now; run `casebridge keys rotate`.",
                reason=f"no encryption key of {self.agency_id} valid at {now}",
            )
        return max(valid, key=lambda k: k.not_before)

    def encode(self) -> bytes:
        return codec.encode(
            [
                "CB-AGENCY-ID",
                1,
                self.agency_id,
                self.name,
                self.signing_seed,
                None if self.certificate is None else self.certificate.raw,
                [[k.secret_key, k.statement.raw] for k in self.encryption_keys],
            ],
            limits=IDENTITY_LIMITS,
        )

    @classmethod
    def parse(cls, data: bytes) -> AgencyIdentity:
        items = codec.array(codec.decode(data, limits=IDENTITY_LIMITS), "agency identity", 7)
        _header(items, "CB-AGENCY-ID")
        agency_id = codec.str_(items[2], "agency_id", pattern=AGENCY_ID)
        seed = codec.bin_(items[4], "signing_seed", SEED_BYTES)
        public_key = bytes(nacl.signing.SigningKey(seed).verify_key)
        cert = None if items[5] is None else _parsed(AgencyCertificate.parse, items[5], "certificate")
        _check_certified(cert, agency_id, public_key)
        held = []
        for i, raw in enumerate(codec.array(items[6], "encryption_keys", max_len=MAX_ENCRYPTION_KEYS)):
            pair = codec.array(raw, f"encryption_keys[{i}]", 2)
            secret = codec.bin_(pair[0], f"encryption_keys[{i}].secret_key", SEED_BYTES)
            stmt: EncryptionKey = _parsed(EncryptionKey.parse, pair[1], f"encryption_keys[{i}]")
            if stmt.agency_id != agency_id or stmt.signer_key_id != key_id(public_key):
                raise MalformedInput(reason=f"encryption_keys[{i}]: not signed by this agency")
            if x25519_public(secret) != stmt.public_key:
                raise MalformedInput(reason=f"encryption_keys[{i}]: secret does not match its statement")
            try:
                verify(public_key, CTX_ENCRYPTION_KEY, stmt.body, stmt.signature, what="encryption key")
            except CaseBridgeError as e:
                raise MalformedInput(reason=f"encryption_keys[{i}]: {e.reason}") from e
            held.append(HeldEncryptionKey(secret, stmt))
        if len({k.key_id for k in held}) != len(held):
            raise MalformedInput(reason="encryption_keys: duplicate key")
        return cls(
            agency_id=agency_id,
            name=codec.str_(items[3], "name", max_len=MAX_NAME),
            signing_seed=seed,
            certificate=cert,
            encryption_keys=tuple(held),
        )


# --- broker -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerIdentity:
    """A broker's receipt-signing key (certified with the `broker` role) and its audit
    checkpoint key (published as a signed-note verifier key, not certified by a root)."""

    broker_id: str
    name: str
    receipt_seed: bytes = field(repr=False)
    checkpoint_seed: bytes = field(repr=False)
    certificate: AgencyCertificate | None = None

    @property
    def receipt_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.receipt_seed)

    @property
    def checkpoint_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.checkpoint_seed)

    @property
    def public_key(self) -> bytes:
        """The receipt key's public key: the one its certificate certifies."""
        return bytes(self.receipt_key.verify_key)

    @property
    def checkpoint_public_key(self) -> bytes:
        return bytes(self.checkpoint_key.verify_key)

    def encode(self) -> bytes:
        return codec.encode(
            [
                "CB-BROKER-ID",
                1,
                self.broker_id,
                self.name,
                self.receipt_seed,
                self.checkpoint_seed,
                None if self.certificate is None else self.certificate.raw,
            ],
            limits=IDENTITY_LIMITS,
        )

    @classmethod
    def parse(cls, data: bytes) -> BrokerIdentity:
        items = codec.array(codec.decode(data, limits=IDENTITY_LIMITS), "broker identity", 7)
        _header(items, "CB-BROKER-ID")
        broker_id = codec.str_(items[2], "broker_id", pattern=AGENCY_ID)
        receipt_seed = codec.bin_(items[4], "receipt_seed", SEED_BYTES)
        checkpoint_seed = codec.bin_(items[5], "checkpoint_seed", SEED_BYTES)
        if receipt_seed == checkpoint_seed:
            raise MalformedInput(reason="receipt and checkpoint keys must differ")
        cert = None if items[6] is None else _parsed(AgencyCertificate.parse, items[6], "certificate")
        _check_certified(cert, broker_id, bytes(nacl.signing.SigningKey(receipt_seed).verify_key))
        return cls(
            broker_id=broker_id,
            name=codec.str_(items[3], "name", max_len=MAX_NAME),
            receipt_seed=receipt_seed,
            checkpoint_seed=checkpoint_seed,
            certificate=cert,
        )
