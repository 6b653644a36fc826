"""The broker's Prometheus metrics, registered in the registry the app is given (no global one).

Names follow Prometheus rules: `casebridge_` prefix, base units, `_total` for counters. Labels
are bounded sets (receipt kinds, error codes, route names, certificate kinds), never ids or
agency names.

`casebridge_certificate_expiry_timestamp_seconds{kind}` is computed when scraped: `broker` is the
broker's own certificate, `root` the configured national root that expires first, `agency` the
soonest time an agency is left without a certificate (per agency, the latest expiry among its
certificates not yet expired; then the earliest of those). Revocation is not considered: a
revoked agency is the national authority's concern, not an expiry to renew.

`casebridge_leader{task}` is 1 while this replica runs the periodic task (`checkpointer`,
`retention`; `broker.leadership`), else 0: across the replicas sharing a database exactly one
reports 1 per task. The label is `task`, not `job`, which Prometheus gives every scraped series.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from protocol.certificate import AgencyCertificate, RootCertificate

LATENCY_BUCKETS_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class BrokerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.envelopes_submitted = Counter(
            "casebridge_envelopes_submitted_total",
            "Envelopes accepted (first submissions only).",
            registry=registry,
        )
        self.envelopes_delivered = Counter(
            "casebridge_envelopes_delivered_total",
            "Inbox entries that reached delivery (a delivered, verified or rejected receipt from pending).",
            registry=registry,
        )
        self.receipts = Counter(
            "casebridge_receipts_total", "Receipts recorded, by kind.", ["kind"], registry=registry
        )
        self.refusals = Counter(
            "casebridge_refusals_total", "Requests refused, by error code.", ["code"], registry=registry
        )
        self.authentication_failures = Counter(
            "casebridge_authentication_failures_total",
            "Requests whose signature was refused.",
            registry=registry,
        )
        self.inbox_depth = Gauge(
            "casebridge_inbox_depth",
            "Inbox entries still pending or delivered, all agencies.",
            registry=registry,
        )
        self.audit_entries = Gauge(
            "casebridge_audit_log_entries", "Entries in the audit log at the last sweep.", registry=registry
        )
        self.request_latency = Histogram(
            "casebridge_request_duration_seconds",
            "Time to answer a request, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS_SECONDS,
            registry=registry,
        )
        self.purged = Counter(
            "casebridge_envelopes_purged_total", "Envelopes whose ciphertext was purged.", registry=registry
        )
        self.expired = Counter(
            "casebridge_inbox_entries_expired_total",
            "Inbox entries expired before verification.",
            registry=registry,
        )
        self.certificate_expiry = Gauge(
            "casebridge_certificate_expiry_timestamp_seconds",
            "When the soonest-expiring certificate of each kind (broker, root, agency) expires (Unix time).",
            ["kind"],
            registry=registry,
        )
        self.leader = Gauge(
            "casebridge_leader",
            "1 while this replica runs the periodic task (checkpointer, retention), else 0.",
            ["task"],
            registry=registry,
        )

    def watch_certificates(
        self,
        *,
        broker: AgencyCertificate,
        roots: Iterable[RootCertificate],
        agencies: Callable[[], Iterable[AgencyCertificate]],
        now: Callable[[], int],
    ) -> None:
        """Expose the certificate expiries (see the module docstring), read when scraped."""
        root_expiry = min((r.not_after for r in roots), default=math.inf)
        self.certificate_expiry.labels(kind="broker").set(broker.not_after)
        self.certificate_expiry.labels(kind="root").set(root_expiry)
        self.certificate_expiry.labels(kind="agency").set_function(
            lambda: earliest_agency_expiry(agencies(), now())
        )


def earliest_agency_expiry(certificates: Iterable[AgencyCertificate], now: int) -> float:
    """The soonest time one agency is left without a certificate that has not expired: per
    agency the latest `not_after` after `now`, then the earliest of those (+Inf when none)."""
    latest: dict[str, int] = {}
    for cert in certificates:
        if cert.not_after > now:
            latest[cert.agency_id] = max(latest.get(cert.agency_id, 0), cert.not_after)
    return float(min(latest.values(), default=math.inf))
