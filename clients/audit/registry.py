"""The certificates and revocation lists the log records, judged only through pinned roots.

The log says which certificates the broker registered and when; it does not make them
trustworthy. A receipt in the log counts as verified only when its signer's certificate, found
by key id among the logged ones (or the broker's own, given separately), chains to a pinned
national root as of the receipt's time and is not revoked by then under the newest revocation
list the log holds that a pinned root signed.

Invariants: empty means deny (no pinned root, nothing verifies); revocation lists only move
forward; a certificate or list that does not verify is skipped, never trusted.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from clients.audit.leaf_records import LeafRecord, parse_leaf
from protocol.certificate import AgencyCertificate, RevocationList, RootCertificate, TrustStore
from protocol.errors import CaseBridgeError, MalformedInput, UntrustedCertificate
from protocol.receipt import Receipt


class CertificateRegistry:
    """An observer of parsed leaves that keeps certificates, revocation lists and agency names."""

    def __init__(self, roots: Sequence[RootCertificate]) -> None:
        self._roots = tuple(roots)
        self._certificates: dict[bytes, list[AgencyCertificate]] = {}
        self._revocation_lists: dict[tuple[str, int], RevocationList] = {}
        self._store: TrustStore | None = None
        self.names: dict[str, str] = {}

    @property
    def roots(self) -> tuple[RootCertificate, ...]:
        return self._roots

    def observe(self, record: LeafRecord) -> None:
        cert = record.certificate()
        if cert is not None:
            self.add_certificate(cert)
        crl = record.revocation_list()
        if crl is not None:
            self._revocation_lists.setdefault((crl.country, crl.number), crl)
            self._store = None

    def add_leaves(self, leaves: Iterable[tuple[int, bytes]]) -> None:
        """Leaves kept by the trusted state (verified before)."""
        for index, leaf in leaves:
            self.observe(parse_leaf(index, leaf))

    def add_certificate(self, cert: AgencyCertificate | bytes) -> None:
        """A certificate from the log, or the broker's own (from its directory or a file)."""
        parsed = cert if isinstance(cert, AgencyCertificate) else AgencyCertificate.parse(cert)
        held = self._certificates.setdefault(parsed.key_id, [])
        if all(c.raw != parsed.raw for c in held):
            held.append(parsed)
        self.names[parsed.agency_id] = parsed.name

    def _trust(self) -> TrustStore:
        if self._store is None:
            store = TrustStore(self._roots)
            for _, crl in sorted(self._revocation_lists.items()):
                try:
                    store.accept_revocation_list(crl.raw)
                except CaseBridgeError:
                    continue
            self._store = store
        return self._store

    def certified(self, agency_id: str, key_id: bytes, at: int) -> AgencyCertificate:
        """The certificate of `agency_id` for `key_id`, verified through pinned roots as of `at`."""
        candidates = [c for c in self._certificates.get(key_id, []) if c.agency_id == agency_id]
        if not candidates:
            raise UntrustedCertificate(
                reason=f"no certificate of {agency_id} for key {key_id.hex()} in the log"
            )
        last: CaseBridgeError | None = None
        for cert in candidates:
            try:
                return self._trust().verify_agency(cert, at)
            except (CaseBridgeError, MalformedInput) as e:
                last = e
        assert last is not None
        raise UntrustedCertificate(reason=f"certificate of {agency_id}: {last.reason}")

    def signer_of(self, receipt: Receipt) -> AgencyCertificate:
        return self.certified(receipt.signer_id, receipt.signer_key_id, receipt.time)

    def name(self, agency_id: str) -> str | None:
        return self.names.get(agency_id)
