"""Who is who at the broker: pinned roots, registered certificates, encryption keys, revocations.

Invariants:
- The store is the record; this object is a snapshot of it, loaded at start and updated only
  after a registration committed, so it never holds what the store does not. Replicas sharing
  one database `refresh` it when another process registered something.
- Trust decisions go through `protocol.certificate.TrustStore` as of the time given. A verified
  certificate is cached with the window in which that verdict holds (its own and its root's
  validity, and its revocation time); the cache is dropped whenever a revocation list changes.
  Outside the window it is verified again, so the cache never widens what is accepted.
- Registration verifies before it stores: a certificate against the configured roots as of
  now, an encryption key against its agency's certificate, a revocation list against its
  country's root and the list held (numbers only go up).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from broker.storage.interfaces import DirectoryStore
from broker.storage.records import StoredCertificate, StoredEncryptionKey, StoredRevocationList, StoredRoot
from protocol import auditlog
from protocol.certificate import (
    AgencyCertificate,
    EncryptionKey,
    RevocationList,
    Role,
    RootCertificate,
    TrustStore,
)
from protocol.errors import AuthError, CaseBridgeError, Conflict, Forbidden, UntrustedCertificate

log = logging.getLogger("casebridge.broker.directory")


@dataclass(frozen=True, slots=True)
class _Verdict:
    certificate: AgencyCertificate
    valid_from: int
    valid_until: int


class Directory:
    """The in-memory directory and the registrations that change it."""

    def __init__(self, roots: Sequence[RootCertificate], store: DirectoryStore) -> None:
        if not roots:
            raise UntrustedCertificate("no national root is configured; nothing can be trusted.")
        self._roots = tuple(roots)
        self._store = store
        self._trust = TrustStore(roots)
        self._certificates: dict[bytes, AgencyCertificate] = {}
        self._by_agency: dict[str, list[bytes]] = {}
        self._encryption_keys: dict[bytes, EncryptionKey] = {}
        self._verdicts: dict[bytes, _Verdict] = {}

    @property
    def roots(self) -> tuple[RootCertificate, ...]:
        return self._roots

    async def load(self, now: int) -> None:
        """Record the configured roots (audited when new), then read everything registered."""
        for root in self._roots:
            leaf = auditlog.encode_leaf(now, auditlog.RootConfigured(root.country, root.key_id, root.raw))
            await self._store.add_root(StoredRoot(root.key_id, root.country, root.raw, now), leaf)
        for crl in await self._store.revocation_lists():
            try:
                self._trust.accept_revocation_list(crl.raw)
            except CaseBridgeError as e:
                log.warning("revocation_list_not_loaded", extra={"country": crl.country, "reason": e.reason})
        for stored in await self._store.certificates():
            self._add_certificate(AgencyCertificate.parse(stored.raw))
        for stored_key in await self._store.encryption_keys():
            statement = EncryptionKey.parse(stored_key.raw)
            self._encryption_keys[statement.key_id] = statement

    async def refresh(self) -> None:
        """Read what other processes registered since the last read (replicas sharing one
        database): new certificates and encryption keys, and newer revocation lists (which
        drop the cached verdicts)."""
        revoked = False
        for crl in await self._store.revocation_lists():
            held = self._trust.revocation_list(crl.country)
            if held is not None and crl.number <= held.number:
                continue
            try:
                self._trust.accept_revocation_list(crl.raw)
                revoked = True
            except CaseBridgeError as e:
                log.warning("revocation_list_not_loaded", extra={"country": crl.country, "reason": e.reason})
        if revoked:
            self._verdicts.clear()
        for stored in await self._store.certificates():
            if stored.key_id not in self._certificates:
                self._add_certificate(AgencyCertificate.parse(stored.raw))
        for stored_key in await self._store.encryption_keys():
            if stored_key.key_id not in self._encryption_keys:
                statement = EncryptionKey.parse(stored_key.raw)
                self._encryption_keys[statement.key_id] = statement

    def _add_certificate(self, cert: AgencyCertificate) -> None:
        key_id = cert.key_id
        if key_id not in self._certificates:
            self._certificates[key_id] = cert
            self._by_agency.setdefault(cert.agency_id, []).append(key_id)

    # --- trust decisions -------------------------------------------------------------------------

    def verified(self, key_id: bytes, now: int) -> AgencyCertificate:
        """The registered certificate of `key_id`, verified as of `now`; raises
        `UntrustedCertificate` (or a subclass) if unknown, expired, revoked or not chained."""
        verdict = self._verdicts.get(key_id)
        if verdict is not None and verdict.valid_from <= now < verdict.valid_until:
            return verdict.certificate
        cert = self._certificates.get(key_id)
        if cert is None:
            raise UntrustedCertificate(reason=f"key {key_id.hex()} is not registered")
        cert = self._trust.verify_agency(cert, now)
        root = self._trust.root_for(cert.issuer_key_id, now)
        crl = self._trust.revocation_list(root.country)
        revoked_at = crl.revoked_at(cert.key_id) if crl is not None else None
        until = min(cert.not_after, root.not_after, *(() if revoked_at is None else (revoked_at,)))
        self._verdicts[key_id] = _Verdict(cert, max(cert.not_before, root.not_before), until)
        return cert

    def authenticate(self, key_id: bytes, now: int) -> AgencyCertificate:
        """As `verified`, but every refusal is `AuthError` (401) with the precise reason."""
        try:
            return self.verified(key_id, now)
        except UntrustedCertificate as e:
            raise AuthError(reason=e.reason) from e

    def _valid(self, agency_id: str, now: int) -> list[AgencyCertificate]:
        valid = []
        for key_id in self._by_agency.get(agency_id, ()):
            try:
                valid.append(self.verified(key_id, now))
            except UntrustedCertificate:
                continue
        return valid

    def is_agency(self, agency_id: str, now: int) -> bool:
        """Whether `agency_id` holds a valid certificate with the agency role now."""
        return any(c.has_role(Role.AGENCY) for c in self._valid(agency_id, now))

    def current_certificate(self, agency_id: str, now: int) -> AgencyCertificate | None:
        valid = self._valid(agency_id, now)
        return max(valid, key=lambda c: (c.not_before, c.serial)) if valid else None

    def encryption_keys_of(self, agency_id: str, now: int) -> list[EncryptionKey]:
        """Statements of `agency_id` that verify now against one of its valid certificates."""
        signers = {c.key_id: c for c in self._valid(agency_id, now)}
        found = []
        for statement in self._encryption_keys.values():
            signer = signers.get(statement.signer_key_id)
            if statement.agency_id != agency_id or signer is None:
                continue
            try:
                found.append(self._trust.verify_encryption_key(statement, signer, now))
            except UntrustedCertificate:
                continue
        return sorted(found, key=lambda s: (s.not_before, s.key_id))

    def certificates(self) -> list[AgencyCertificate]:
        return sorted(self._certificates.values(), key=lambda c: (c.agency_id, c.not_before, c.key_id))

    def encryption_keys(self, now: int) -> list[EncryptionKey]:
        return [s for s in self._encryption_keys.values() if now < s.not_after]

    def revocation_lists(self) -> list[RevocationList]:
        lists = (self._trust.revocation_list(c) for c in sorted({r.country for r in self._roots}))
        return [crl for crl in lists if crl is not None]

    def agency_ids(self) -> Iterable[str]:
        return self._by_agency.keys()

    # --- registration ----------------------------------------------------------------------------

    async def register_certificate(self, data: bytes, now: int, *, by: str) -> tuple[AgencyCertificate, bool]:
        """Verify and store an agency certificate; (certificate, created)."""
        cert = self._trust.verify_agency(data, now)
        leaf = auditlog.encode_leaf(
            now, auditlog.CertificateRegistered(cert.agency_id, cert.key_id, cert.raw, by)
        )
        created = await self._store.add_certificate(
            StoredCertificate(cert.key_id, cert.agency_id, cert.raw, now), leaf
        )
        self._add_certificate(cert)
        return cert, created

    async def record_own_certificate(self, cert: AgencyCertificate, now: int) -> bool:
        """Register the broker's own certificate, audited as `certificate_registered` by the
        broker itself, unless the store holds it already: so the log alone names the key that
        signs accepted and expired receipts, and an offline trace needs nothing else. True if it
        was added now (the first start after `broker import-cert`).

        A renewed certificate for a key the store holds under an earlier certificate cannot be
        stored beside it (one certificate per key); it is left out, with a warning."""
        held = self._certificates.get(cert.key_id)
        if held is not None:
            if held.raw != cert.raw:
                log.warning(
                    "broker_certificate_not_recorded",
                    extra={"reason": "the store holds an earlier certificate of the same key"},
                )
            return False
        _, created = await self.register_certificate(cert.raw, now, by=cert.agency_id)
        return created

    async def register_revocation_list(
        self, data: bytes, now: int, *, by: str
    ) -> tuple[RevocationList, bool]:
        """Verify a root-signed list that is newer than the one held (or the same one again)."""
        check = TrustStore(self._roots)
        crl = check.accept_revocation_list(data)
        held = self._trust.revocation_list(crl.country)
        if held is not None and held.raw == crl.raw:
            return held, False
        if held is not None and crl.number <= held.number:
            raise Conflict(
                reason=f"revocation list {crl.number} is not newer than the one held ({held.number})"
            )
        leaf = auditlog.encode_leaf(
            now, auditlog.RevocationListRegistered.of(crl.raw, country=crl.country, number=crl.number, by=by)
        )
        created = await self._store.add_revocation_list(
            StoredRevocationList(crl.country, crl.number, crl.raw, now), leaf
        )
        self._trust.accept_revocation_list(crl.raw)
        self._verdicts.clear()
        return crl, created

    async def register_encryption_key(
        self, data: bytes, caller: AgencyCertificate, now: int
    ) -> tuple[EncryptionKey, bool]:
        """Store an encryption-key statement of the caller's own agency, signed by one of its
        valid certificates."""
        statement = EncryptionKey.parse(data)
        if statement.agency_id != caller.agency_id:
            raise Forbidden(reason=f"{caller.agency_id} cannot register a key of {statement.agency_id}")
        signer = self._certificates.get(statement.signer_key_id)
        if signer is None or signer.agency_id != caller.agency_id:
            raise UntrustedCertificate(
                reason="the statement's signing key is not a registered key of the caller"
            )
        signer = self.verified(signer.key_id, now)
        statement = self._trust.verify_encryption_key(statement, signer, now)
        leaf = auditlog.encode_leaf(
            now, auditlog.EncryptionKeyRegistered(statement.agency_id, statement.key_id, statement.raw)
        )
        created = await self._store.add_encryption_key(
            StoredEncryptionKey(statement.key_id, statement.agency_id, statement.raw, now), leaf
        )
        self._encryption_keys[statement.key_id] = statement
        return statement, created


class RegisteredAgencies:
    """`recipient in RegisteredAgencies(directory, now)`: a valid agency certificate now."""

    def __init__(self, directory: Directory, now: int) -> None:
        self._directory = directory
        self._now = now

    def __contains__(self, agency_id: object) -> bool:
        return isinstance(agency_id, str) and self._directory.is_agency(agency_id, self._now)
