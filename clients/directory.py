"""The agency's view of the broker's directory, trusted only through its pinned national roots.

Invariants:
- Nothing the broker says is trusted for itself: every certificate must chain to a pinned root
  (`TrustStore`), every encryption key must be signed by its agency's verified certificate, and a
  revocation list is accepted only when a pinned root of its country signed it and it is not
  older than the one held. The `roots` the broker lists are ignored.
- Revocation lists are applied before certificates. A certificate enters the cache only if a
  pinned root vouched for it at some time up to now, before its expiry and before any
  revocation of its key; so an envelope accepted, or a receipt signed, before a revocation can
  still be verified, while every use checks the chain again as of the time that matters (a
  receipt's time, an envelope's acceptance, now for anything new such as sending).
- The cache is written to the local state and reloaded (and re-verified) at start, so sending
  works while the broker is unreachable.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from clients.outbox import LocalState
from protocol.certificate import (
    AgencyCertificate,
    EncryptionKey,
    RevocationList,
    Role,
    RootCertificate,
    TrustStore,
)
from protocol.errors import (
    CaseBridgeError,
    MalformedInput,
    NotFound,
    UntrustedCertificate,
    VerificationError,
)
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject, verify_receipt

log = logging.getLogger("casebridge.client.directory")


def b64decode(value: Any, field: str) -> bytes:
    """Strict RFC 4648 base64 (with padding) from a JSON string; `MalformedInput` otherwise."""
    if not isinstance(value, str):
        raise MalformedInput(reason=f"{field}: expected a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedInput(reason=f"{field}: not base64") from e


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _b64_list(doc: Mapping[str, Any], field: str) -> list[bytes]:
    values = doc.get(field, [])
    if not isinstance(values, list):
        raise MalformedInput(reason=f"directory.{field}: expected a list")
    return [b64decode(v, f"directory.{field}[{i}]") for i, v in enumerate(values)]


@dataclass(frozen=True, slots=True)
class DirectoryReport:
    """What one refresh accepted and refused (refusals are logged with their reasons)."""

    certificates: int
    encryption_keys: int
    revocation_lists: int
    refused: int
    broker_id: str | None


class VerifiedDirectory:
    """Verified certificates and encryption keys, by key id and by agency."""

    def __init__(self, roots: Iterable[RootCertificate], state: LocalState) -> None:
        self.trust = TrustStore(roots)
        self._state = state
        self._certificates: dict[bytes, AgencyCertificate] = {}
        self._encryption_keys: dict[bytes, EncryptionKey] = {}
        self.broker: AgencyCertificate | None = None

    # --- loading -----------------------------------------------------------------------------

    def load_cached(self, now: int) -> None:
        """Reload the cache from the local state, verifying every document again."""
        cached = self._state.load_directory()
        for raw in cached.revocation_lists:
            self._accept_revocations(raw)
        for raw in cached.certificates:
            try:
                cert = self._vouched(AgencyCertificate.parse(raw), now)
            except CaseBridgeError as e:
                log.warning("cached_certificate_refused", extra={"reason": e.reason})
                continue
            self._certificates[cert.key_id] = cert
        for raw in cached.encryption_keys:
            try:
                stmt = EncryptionKey.parse(raw)
            except CaseBridgeError:
                continue
            self._encryption_keys[stmt.key_id] = stmt

    def _accept_revocations(self, raw: bytes) -> RevocationList | None:
        try:
            return self.trust.accept_revocation_list(raw)
        except CaseBridgeError as e:
            log.warning("revocation_list_refused", extra={"reason": e.reason})
            return None

    def absorb(self, doc: Any, now: int) -> DirectoryReport:
        """Verify a `GET /v1/directory` answer as of `now`, keep what verified, cache it."""
        if not isinstance(doc, dict):
            raise MalformedInput(reason="directory: expected a JSON object")
        refused = 0
        crls: list[tuple[str, bytes]] = []
        for raw in _b64_list(doc, "revocations"):
            crl = self._accept_revocations(raw)
            if crl is None:
                refused += 1
            else:
                crls.append((crl.country, crl.raw))
        certs: list[tuple[bytes, str, bytes]] = []
        broker_raw = doc.get("broker")
        broker_cert: AgencyCertificate | None = None
        candidates = _b64_list(doc, "certificates")
        if broker_raw is not None:
            candidates.append(b64decode(broker_raw, "directory.broker"))
        for raw in candidates:
            try:
                cert = self._vouched(AgencyCertificate.parse(raw), now)
            except CaseBridgeError as e:
                log.info("directory_certificate_refused", extra={"reason": e.reason})
                refused += 1
                continue
            self._certificates[cert.key_id] = cert
            certs.append((cert.key_id, cert.agency_id, cert.raw))
            if broker_raw is not None and raw == candidates[-1] and cert.has_role(Role.BROKER):
                broker_cert = cert if self._valid_now(cert, now) else None
        if broker_raw is not None and broker_cert is None:
            log.warning("broker_certificate_refused", extra={"reason": "no pinned root certifies it"})
        if broker_cert is not None:
            self.broker = broker_cert
        keys: list[tuple[bytes, str, bytes]] = []
        for raw in _b64_list(doc, "encryption_keys"):
            try:
                stmt = EncryptionKey.parse(raw)
                cert = self._current_certificate(stmt.agency_id, now, key_id=stmt.signer_key_id)
                self.trust.verify_encryption_key(stmt, cert, now)
            except CaseBridgeError as e:
                log.warning("directory_encryption_key_refused", extra={"reason": e.reason})
                refused += 1
                continue
            self._encryption_keys[stmt.key_id] = stmt
            keys.append((stmt.key_id, stmt.agency_id, stmt.raw))
        self._state.save_directory(certs, keys, crls)
        return DirectoryReport(
            len(certs), len(keys), len(crls), refused, None if self.broker is None else self.broker.agency_id
        )

    def _vouched(self, cert: AgencyCertificate, now: int) -> AgencyCertificate:
        """`cert` if a pinned root vouched for it at some time up to `now`: its last valid second
        before now, its expiry and any revocation of its key. Raises otherwise."""
        at = min(now, cert.not_after - 1)
        crl = self.trust.revocation_list(cert.country)
        revoked_at = crl.revoked_at(cert.key_id) if crl is not None else None
        if revoked_at is not None:
            at = min(at, revoked_at - 1)
        return self.trust.verify_agency(cert, at)

    def _valid_now(self, cert: AgencyCertificate, now: int) -> bool:
        try:
            self.trust.verify_agency(cert, now)
        except CaseBridgeError:
            return False
        return True

    # --- lookups -----------------------------------------------------------------------------

    def certificate_by_key_id(self, kid: bytes) -> AgencyCertificate | None:
        return self._certificates.get(kid)

    def _current_certificate(
        self, agency_id: str, now: int, *, key_id: bytes | None = None
    ) -> AgencyCertificate:
        for cert in sorted(self._certificates.values(), key=lambda c: -c.not_before):
            if cert.agency_id != agency_id or (key_id is not None and cert.key_id != key_id):
                continue
            try:
                return self.trust.verify_agency(cert, now)
            except CaseBridgeError:
                continue
        raise UntrustedCertificate(
            f"no certificate of {agency_id} that a pinned root vouches for now; refresh the directory "
            "or check the agency id.",
            reason=f"no valid certificate for {agency_id}",
        )

    def certificate_of(self, agency_id: str, now: int) -> AgencyCertificate:
        """The agency's certificate valid now (newest first)."""
        return self._current_certificate(agency_id, now)

    def encryption_key_for(self, agency_id: str, now: int) -> EncryptionKey:
        """The newest encryption key of `agency_id` that verifies as of `now`."""
        best: EncryptionKey | None = None
        for stmt in self._encryption_keys.values():
            if stmt.agency_id != agency_id:
                continue
            try:
                cert = self._current_certificate(agency_id, now, key_id=stmt.signer_key_id)
                self.trust.verify_encryption_key(stmt, cert, now)
            except CaseBridgeError:
                continue
            if best is None or (stmt.not_before, stmt.key_id) > (best.not_before, best.key_id):
                best = stmt
        if best is None:
            raise NotFound(
                f"no valid encryption key for {agency_id} in the verified directory; check the id, or "
                "ask the agency to publish its keys and refresh the directory.",
            )
        return best

    def agencies(self, now: int) -> list[AgencyCertificate]:
        """Every agency certificate valid now (role agency), one per agency, newest."""
        out: dict[str, AgencyCertificate] = {}
        for cert in self._certificates.values():
            if not cert.has_role(Role.AGENCY):
                continue
            try:
                self.trust.verify_agency(cert, now)
            except CaseBridgeError:
                continue
            held = out.get(cert.agency_id)
            if held is None or cert.not_before > held.not_before:
                out[cert.agency_id] = cert
        return sorted(out.values(), key=lambda c: c.agency_id)

    # --- receipts ----------------------------------------------------------------------------

    def verify_receipt(
        self,
        raw: bytes,
        *,
        subject: ReceiptSubject | None = None,
        kinds: Sequence[ReceiptKind] | None = None,
    ) -> Receipt:
        """Verify a receipt against its signer's certificate (from this directory, chained to a
        pinned root as of the receipt's time): the broker for accepted and expired, the
        recipient for the others. Raises `VerificationError` when the signer is unknown."""
        receipt = Receipt.parse(raw)
        if kinds is not None and receipt.kind not in kinds:
            raise VerificationError(reason=f"unexpected {receipt.kind} receipt")
        signer = self._certificates.get(receipt.signer_key_id)
        if signer is None:
            raise UntrustedCertificate(reason=f"receipt signer key {receipt.signer_key_id.hex()} unknown")
        self.trust.verify_agency(signer, receipt.time)
        return verify_receipt(receipt, signer=signer, subject=subject)
