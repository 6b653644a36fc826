"""What every service shares: settings, store, clock, directory, notifier, metrics, the
broker's own signing identity. Built once per app; nothing here is global."""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.signing

from broker.clock import Clock
from broker.metrics import BrokerMetrics
from broker.service.directory import Directory
from broker.service.notify import Notifier
from broker.settings import Settings
from broker.storage.interfaces import Store
from keys.identity import BrokerIdentity
from protocol.certificate import AgencyCertificate, Role
from protocol.errors import UntrustedCertificate


@dataclass(frozen=True, slots=True)
class BrokerSigner:
    """The broker's certified receipt key (role `broker`), unlocked once at start."""

    broker_id: str
    certificate: AgencyCertificate
    signing_key: nacl.signing.SigningKey = field(repr=False)

    @classmethod
    def from_identity(cls, identity: BrokerIdentity) -> BrokerSigner:
        cert = identity.certificate
        if cert is None:
            raise UntrustedCertificate(
                "the broker keystore holds no certificate yet. Have the national authority certify "
                "the request with `casebridge keys certify --role broker`, then run "
                "`casebridge broker import-cert`."
            )
        if not cert.has_role(Role.BROKER):
            raise UntrustedCertificate(
                "the broker's certificate lacks the broker role; have it certified again."
            )
        return cls(identity.broker_id, cert, identity.receipt_key)


@dataclass(frozen=True, slots=True)
class Services:
    settings: Settings
    store: Store
    clock: Clock
    directory: Directory
    notifier: Notifier
    metrics: BrokerMetrics
    signer: BrokerSigner
