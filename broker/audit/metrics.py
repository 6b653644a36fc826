"""The audit log's Prometheus metrics, in the registry the app is given.

Labels are bounded: `witness` is one of the configured witness names, `outcome` one of
`WitnessOutcome`. Alert on `casebridge_audit_checkpoint_age_seconds` (the log stopped being
signed) and on `casebridge_audit_witness_lag_entries` (a witness stopped cosigning).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class AuditMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.appends = Counter(
            "casebridge_audit_appends_total",
            "Audit-log entries appended, as seen by the checkpointer.",
            registry=registry,
        )
        self.checkpoints = Counter(
            "casebridge_audit_checkpoints_total", "Checkpoints signed.", registry=registry
        )
        self.checkpoint_size = Gauge(
            "casebridge_audit_checkpoint_size_entries",
            "Tree size of the latest signed checkpoint.",
            registry=registry,
        )
        self.checkpoint_timestamp = Gauge(
            "casebridge_audit_checkpoint_timestamp_seconds",
            "When the latest checkpoint was signed (Unix time).",
            registry=registry,
        )
        self.checkpoint_age = Gauge(
            "casebridge_audit_checkpoint_age_seconds",
            "Seconds since the latest checkpoint was signed, at the checkpointer's last look.",
            registry=registry,
        )
        self.pending = Gauge(
            "casebridge_audit_pending_entries",
            "Entries appended but not yet covered by a checkpoint.",
            registry=registry,
        )
        self.witness_lag_entries = Gauge(
            "casebridge_audit_witness_lag_entries",
            "Entries in the latest checkpoint beyond the largest tree the witness cosigned.",
            ["witness"],
            registry=registry,
        )
        self.witness_lag_seconds = Gauge(
            "casebridge_audit_witness_lag_seconds",
            "Seconds since the witness last returned a valid cosignature.",
            ["witness"],
            registry=registry,
        )
        self.witness_submissions = Counter(
            "casebridge_audit_witness_submissions_total",
            "Checkpoint submissions to witnesses, by outcome.",
            ["witness", "outcome"],
            registry=registry,
        )
