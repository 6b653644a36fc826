"""The audit-log leaf format now lives in `protocol.auditlog` (shared with the officers' tools);
this module re-exports it for code written against the old location."""

from protocol.auditlog import (
    LEAF_VERSION,
    Leaf,
    LeafFields,
    LeafKind,
    agencies,
    encode_leaf,
    envelope_ids,
    leaf_kind,
    parse_leaf,
)

__all__ = [
    "LEAF_VERSION",
    "Leaf",
    "LeafFields",
    "LeafKind",
    "agencies",
    "encode_leaf",
    "envelope_ids",
    "leaf_kind",
    "parse_leaf",
]
