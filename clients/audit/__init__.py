"""The security officer's side of the audit log: `casebridge audit ...` (docs/audit-log.md).

- `policy`, `verifier`, `tree_check`, `trusted_state`: recompute the whole Merkle tree from the
  leaves (streamed, O(log n) memory), check the checkpoint's log signature and witness
  cosignatures, every leaf's format and time order, and consistency with the last checkpoint this
  officer trusted; each problem is one named line.
- `sources`, `broker_log`: where leaves come from: an export directory (`export --raw`) or a live
  broker (signed requests with an auditor's keystore).
- `leaf_records`, `registry`, `trace`, `search`, `export`, `report_html`: leaves as rows, the
  certificates the log records, one referral's whole life, filters, and JSON Lines, CSV and HTML.
- `witness`, `witness_state`, `witness_server`: a tlog-witness a partner country's officer runs.
- `cli`, `commands`, `witness_commands`, `progress`: the commands themselves.

Nothing here trusts the broker: every checkpoint is checked against keys the officer configured,
every receipt against certificates chained to pinned national roots.
"""
