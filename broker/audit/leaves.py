"""Audit-log leaves: one canonical msgpack array per state change, stored verbatim.

Layout: `[version, kind, time, ...fields]` with `version` 1, `kind` one of `LeafKind`, `time` the
broker's Unix time of the change. Fields are ids, agency ids, times, sizes, hashes and signed
public records (certificates, revocation lists, encryption-key statements, receipts) as their
exact bytes. A leaf never holds personal data, plaintext, ciphertext or private keys: the
envelope's header is represented by its hash and sizes only.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from protocol import codec
from protocol.errors import MalformedInput

LEAF_VERSION = 1


class LeafKind(StrEnum):
    BROKER_STARTED = "broker_started"
    BROKER_STOPPED = "broker_stopped"
    ROOT_CONFIGURED = "root_configured"
    CERTIFICATE_REGISTERED = "certificate_registered"
    REVOCATION_LIST_REGISTERED = "revocation_list_registered"
    ENCRYPTION_KEY_REGISTERED = "encryption_key_registered"
    ENVELOPE_ACCEPTED = "envelope_accepted"
    RECEIPT = "receipt"
    ENVELOPE_PURGED = "envelope_purged"


def _leaf(kind: LeafKind, time: int, *fields: Any) -> bytes:
    return codec.encode([LEAF_VERSION, str(kind), time, *fields])


def broker_started(time: int, broker_id: str, receipt_key_id: bytes, software: str) -> bytes:
    return _leaf(LeafKind.BROKER_STARTED, time, broker_id, receipt_key_id, software)


def broker_stopped(time: int, broker_id: str) -> bytes:
    return _leaf(LeafKind.BROKER_STOPPED, time, broker_id)


def root_configured(time: int, country: str, key_id: bytes, certificate: bytes) -> bytes:
    return _leaf(LeafKind.ROOT_CONFIGURED, time, country, key_id, certificate)


def certificate_registered(time: int, agency_id: str, key_id: bytes, certificate: bytes, by: str) -> bytes:
    """`by` is the operator agency that registered it, or "offline" for the operator's CLI."""
    return _leaf(LeafKind.CERTIFICATE_REGISTERED, time, agency_id, key_id, certificate, by)


def revocation_list_registered(
    time: int, country: str, number: int, revocation_list: bytes, by: str
) -> bytes:
    return _leaf(LeafKind.REVOCATION_LIST_REGISTERED, time, country, number, revocation_list, by)


def encryption_key_registered(time: int, agency_id: str, key_id: bytes, statement: bytes) -> bytes:
    return _leaf(LeafKind.ENCRYPTION_KEY_REGISTERED, time, agency_id, key_id, statement)


def envelope_accepted(
    time: int,
    *,
    envelope_id: bytes,
    envelope_hash: bytes,
    sender_id: str,
    recipients: Sequence[str],
    header_length: int,
    part_lengths: Sequence[int],
    expires_at: int,
) -> bytes:
    return _leaf(
        LeafKind.ENVELOPE_ACCEPTED,
        time,
        envelope_id,
        envelope_hash,
        sender_id,
        list(recipients),
        header_length,
        list(part_lengths),
        expires_at,
    )


def receipt_recorded(time: int, *, kind: str, envelope_id: bytes, recipient_id: str, receipt: bytes) -> bytes:
    return _leaf(LeafKind.RECEIPT, time, kind, envelope_id, recipient_id, receipt)


def envelope_purged(time: int, *, envelope_id: bytes, envelope_hash: bytes, bytes_purged: int) -> bytes:
    return _leaf(LeafKind.ENVELOPE_PURGED, time, envelope_id, envelope_hash, bytes_purged)


def leaf_kind(leaf: bytes) -> LeafKind:
    """The kind of a stored leaf (raises `MalformedInput` for bytes that are not a leaf)."""
    items = codec.array(codec.decode(leaf), "audit leaf")
    if len(items) < 3:
        raise MalformedInput(reason="audit leaf: fewer than 3 items")
    codec.literal(items[0], "audit leaf version", LEAF_VERSION)
    kind = codec.str_(items[1], "audit leaf kind")
    if kind not in LeafKind.__members__.values():
        raise MalformedInput(reason=f"audit leaf kind {kind!r} is unknown")
    return LeafKind(kind)
