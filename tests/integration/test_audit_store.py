"""The audit store: the stored Merkle tree always matches the leaves, proofs come from stored nodes,
and no log table can be rewritten (SQLite triggers)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from broker.audit.records import AuditLogDamaged, StoredCosignature
from broker.audit.store import AuditStore, audit_store
from broker.storage.interfaces import Store
from broker.storage.sqlite import SqliteStore, open_sqlite_store
from protocol import auditlog
from protocol.merkle import (
    MemoryTree,
    NodeId,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from tests.integration.storage_engines import START_TIME

T0 = START_TIME
SIZES = (1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 255, 256, 257, 300)


def entry(n: int) -> bytes:
    return auditlog.encode_leaf(T0 + n, auditlog.OperatorAction("TH-OPERATOR", "test_entry", (f"entry-{n}",)))


def envelope_entries(envelope_id: bytes) -> list[bytes]:
    accepted = auditlog.EnvelopeAccepted(
        envelope_id, b"h" * 32, "TH-ATPD", b"k" * 16, ("LA-MOLSW",), 400, (4096,), T0 + 3600, b"s" * 64
    )
    purged = auditlog.EnvelopePurged(envelope_id, b"h" * 32, 4496)
    return [auditlog.encode_leaf(T0, accepted), auditlog.encode_leaf(T0 + 1, purged)]


async def fill(audit: AuditStore, count: int, memory: MemoryTree | None = None) -> list[bytes]:
    leaves = [entry(n) for n in range(count)]
    for leaf in leaves:
        await audit.record(leaf, T0)
        if memory is not None:
            memory.append_entry(leaf)
    return leaves


def tree_of(store: Store) -> AuditStore:
    """The engine's audit store; engines that do not keep the tree yet are skipped, by name."""
    if not isinstance(store.audit, AuditStore):
        pytest.skip(f"{type(store).__name__} does not keep the audit tree yet")
    return audit_store(store)


async def opened(path: Path) -> SqliteStore:
    return await open_sqlite_store(path / "broker.sqlite3", path / "blobs", now=T0)


async def test_the_stored_tree_matches_a_memory_tree_at_every_size(store: Store) -> None:
    audit = tree_of(store)
    memory = MemoryTree()
    await fill(audit, SIZES[-1], memory)
    for size in SIZES:
        assert (await audit.tree_head(size)).root_hash == memory.root(size)
    assert (await audit.tree_head()).root_hash == memory.root()
    every_node = [NodeId(level, index) for level in range(9) for index in range(SIZES[-1] >> level)]
    assert await audit.node_hashes(every_node) == memory.hashes(every_node)


async def test_proofs_come_from_stored_nodes_and_verify(store: Store) -> None:
    audit = tree_of(store)
    memory = MemoryTree()
    leaves = await fill(audit, 300, memory)
    for size in SIZES:
        root = memory.root(size)
        for index in {0, size // 2, size - 1}:
            proof = await audit.inclusion_proof(index, size)
            assert proof == inclusion_proof(index, size, memory)
            verify_inclusion(leaf_hash(leaves[index]), index, size, proof, root)
        for first in {1, size // 3 or 1, size}:
            proof = await audit.consistency_proof(first, size)
            verify_consistency(first, size, proof, memory.root(first), root)


async def test_an_append_rolled_back_with_its_transaction_leaves_no_trace(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        memory = MemoryTree()
        await fill(store.audit, 5, memory)

        def append_then_fail(conn: sqlite3.Connection) -> None:
            store.audit.append(conn, b"never committed", T0)
            raise RuntimeError("the change this entry records failed")

        async def append(leaf: bytes) -> int:
            return await store.db.write(lambda conn: store.audit.append(conn, leaf, T0))

        results = await asyncio.gather(
            append(entry(100)),
            store.db.write(append_then_fail),
            append(entry(101)),
            return_exceptions=True,
        )
        assert (results[0], results[2]) == (5, 6)
        assert isinstance(results[1], RuntimeError)
        memory.append_entry(entry(100))
        memory.append_entry(entry(101))
        assert await store.audit.leaves(0, 10) == [entry(n) for n in range(5)] + [entry(100), entry(101)]
        assert (await store.audit.tree_head()).root_hash == memory.root()
        assert await store.audit.record(entry(102), T0) == 7
        memory.append_entry(entry(102))
        assert (await store.audit.tree_head()).root_hash == memory.root()
    finally:
        await store.close()


async def test_a_reopened_store_resumes_the_tree_from_its_border_nodes(tmp_path: Path) -> None:
    memory = MemoryTree()
    store = await opened(tmp_path)
    await fill(store.audit, 21, memory)
    await store.close()
    store = await opened(tmp_path)
    try:
        head = await store.audit.open_tree()
        assert (head.size, head.root_hash) == (21, memory.root())
        for n in range(21, 40):
            await store.audit.record(entry(n), T0)
            memory.append_entry(entry(n))
        assert (await store.audit.tree_head()).root_hash == memory.root()
    finally:
        await store.close()


async def test_leaves_written_before_the_tree_existed_are_hashed_once_at_open(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await store.close()
    raw = sqlite3.connect(tmp_path / "broker.sqlite3")
    with raw:
        raw.execute("DROP TRIGGER audit_log_with_nodes")
        raw.executemany(
            "INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (?, ?, ?)",
            [(n, entry(n), T0) for n in range(10)],
        )
    raw.close()
    memory = MemoryTree()
    for n in range(10):
        memory.append_entry(entry(n))
    store = await opened(tmp_path)
    try:
        assert (await store.audit.open_tree()).root_hash == memory.root()
        assert await store.audit.inclusion_proof(3, 10) == inclusion_proof(3, 10, memory)
    finally:
        await store.close()


async def test_a_leaf_without_its_nodes_after_a_checkpoint_is_damage(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    await fill(store.audit, 3)
    head = await store.audit.tree_head()
    await store.audit.add_checkpoint(head.size, head.root_hash, b"note", T0)
    await store.close()
    raw = sqlite3.connect(tmp_path / "broker.sqlite3")
    with raw:
        raw.execute("DROP TRIGGER audit_log_with_nodes")
        raw.execute("INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (3, ?, ?)", (entry(3), T0))
    raw.close()
    store = await opened(tmp_path)
    try:
        with pytest.raises(AuditLogDamaged):
            await store.audit.open_tree()
        with pytest.raises(AuditLogDamaged):
            await store.audit.record(entry(4), T0)
    finally:
        await store.close()


async def test_every_leaf_naming_an_envelope_is_found(store: Store) -> None:
    audit = tree_of(store)
    first, second = b"\x01" * 16, b"\x02" * 16
    await audit.record(entry(0), T0)
    accepted, purged = envelope_entries(first)
    await audit.record(accepted, T0)
    for leaf in envelope_entries(second):
        await audit.record(leaf, T0)
    await audit.record(purged, T0)
    assert await audit.envelope_leaves(first) == [(1, accepted), (4, purged)]
    assert [i for i, _ in await audit.envelope_leaves(second)] == [2, 3]
    assert await audit.envelope_leaves(b"\x03" * 16) == []


async def test_a_rewritten_leaf_is_refused_when_read_for_verification(tmp_path: Path) -> None:
    store = await opened(tmp_path)
    try:
        await fill(store.audit, 4)
        await store.audit.record(envelope_entries(b"\x07" * 16)[0], T0)
        raw = sqlite3.connect(tmp_path / "broker.sqlite3")
        with raw:
            raw.execute("DROP TRIGGER audit_log_no_update")
            raw.execute("UPDATE audit_log SET leaf = ? WHERE idx = 4", (envelope_entries(b"\x07" * 16)[1],))
            raw.execute("UPDATE audit_log SET leaf = ? WHERE idx = 2", (entry(99),))
        raw.close()
        assert await store.audit.checked_leaves(0, 2) == [entry(0), entry(1)]
        with pytest.raises(AuditLogDamaged):
            await store.audit.checked_leaves(0, 4)
        with pytest.raises(AuditLogDamaged):
            await store.audit.envelope_leaves(b"\x07" * 16)
    finally:
        await store.close()


async def test_checkpoints_never_cover_fewer_entries_than_the_last(store: Store) -> None:
    audit = tree_of(store)
    await fill(audit, 5)
    head = await audit.tree_head()
    first = await audit.add_checkpoint(head.size, head.root_hash, b"note 5", T0)
    same = await audit.add_checkpoint(head.size, head.root_hash, b"note 5", T0 + 3600)
    assert (first.seq, same.seq) == (0, 1)
    smaller = await audit.tree_head(3)
    assert await audit.add_checkpoint(3, smaller.root_hash, b"note 3", T0 + 7200) == same
    assert await audit.latest_checkpoint() == same


async def test_a_witness_cosignature_is_kept_once_and_shared_by_equal_tree_heads(store: Store) -> None:
    audit = tree_of(store)
    await fill(audit, 2)
    head = await audit.tree_head()
    first = await audit.add_checkpoint(head.size, head.root_hash, b"note", T0)
    line = StoredCosignature(first.seq, "la.witness", "— la.witness AAAA", T0, T0)
    assert await audit.add_cosignature(line)
    assert not await audit.add_cosignature(line)
    heartbeat = await audit.add_checkpoint(head.size, head.root_hash, b"note", T0 + 3600)
    assert await audit.cosignatures(heartbeat) == [line]
    assert await audit.witness_sizes() == {"la.witness": 2}


TAMPERING = [
    "UPDATE audit_log SET recorded_at = 0",
    "DELETE FROM audit_log WHERE idx = 1",
    "INSERT OR REPLACE INTO audit_log (idx, leaf, recorded_at) VALUES (0, x'00', 0)",
    "UPDATE audit_log SET nodes = zeroblob(32) WHERE idx = 0",
    "UPDATE audit_log SET nodes = NULL WHERE idx = 0",
    "INSERT INTO audit_log (idx, leaf, recorded_at) VALUES (3, x'00', 0)",
    "UPDATE audit_envelope_leaves SET idx = 0",
    "DELETE FROM audit_envelope_leaves",
    "UPDATE audit_envelopes SET first_idx = 0",
    "DELETE FROM audit_envelopes",
    "INSERT OR REPLACE INTO audit_envelopes (envelope_id, first_idx) "
    "SELECT envelope_id, 0 FROM audit_envelopes",
    "UPDATE audit_checkpoints SET note = x'00'",
    "DELETE FROM audit_checkpoints",
    "INSERT OR REPLACE INTO audit_checkpoints (seq, size, root_hash, note, signed_at) "
    "VALUES (0, 3, zeroblob(32), x'00', 0)",
    "INSERT INTO audit_checkpoints (seq, size, root_hash, note, signed_at) "
    "VALUES (1, 2, zeroblob(32), x'00', 0)",
    "UPDATE audit_cosignatures SET line = 'forged'",
    "DELETE FROM audit_cosignatures",
    "INSERT OR REPLACE INTO audit_cosignatures (checkpoint_seq, witness, line, cosigned_at, received_at) "
    "VALUES (0, 'la.witness', 'forged', 0, 0)",
]


@pytest.mark.parametrize("statement", TAMPERING)
async def test_no_audit_table_can_be_rewritten(tmp_path: Path, statement: str) -> None:
    store = await opened(tmp_path)
    try:
        await store.audit.record(entry(0), T0)
        for leaf in envelope_entries(b"\x05" * 16):
            await store.audit.record(leaf, T0)
        head = await store.audit.tree_head()
        checkpoint = await store.audit.add_checkpoint(head.size, head.root_hash, b"note", T0)
        await store.audit.add_cosignature(StoredCosignature(checkpoint.seq, "la.witness", "line", T0, T0))
        before = await store.db.read(_dump)
    finally:
        await store.close()
    raw = sqlite3.connect(tmp_path / "broker.sqlite3")
    try:
        with pytest.raises(sqlite3.DatabaseError, match="audit"):
            raw.execute(statement)
        assert _dump(raw) == before
    finally:
        raw.close()


def _dump(conn: sqlite3.Connection) -> list[list[tuple[object, ...]]]:
    tables = (
        "audit_log",
        "audit_envelopes",
        "audit_envelope_leaves",
        "audit_checkpoints",
        "audit_cosignatures",
    )
    return [list(conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")) for table in tables]  # noqa: S608
