"""The audit log's Merkle tree: hashing, proofs from stored nodes, verification, tile layout."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from protocol.errors import InvalidField, MalformedInput, VerificationError
from protocol.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    NodeId,
    border_nodes,
    consistency_plan,
    consistency_proof,
    inclusion_plan,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_leaf_hashes,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from protocol.tiles import (
    TilePath,
    TileSpan,
    decode_entry_bundle,
    decode_hash_tile,
    encode_entry_bundle,
    encode_hash_tile,
    entries_path,
    hash_from_tile,
    node_tile,
    parse_tile_path,
    tile_count,
    tile_index_path,
    tile_path,
)

# The reference tree of transparency-dev/merkle (testonly/constants.go and proof/verify_test.go):
# its eight leaves, the root of every prefix, and known proofs over it.
REFERENCE_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
REFERENCE_ROOTS = [
    bytes.fromhex(h)
    for h in (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    )
]
H = bytes.fromhex
REFERENCE_INCLUSION = {  # (leaf index, tree size): audit path
    (0, 8): [
        H("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        H("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
    ],
    (5, 8): [
        H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
        H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ],
    (2, 3): [H("fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125")],
    (1, 5): [
        H("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ],
}
REFERENCE_CONSISTENCY = {  # (size1, size2): proof
    (1, 8): REFERENCE_INCLUSION[(0, 8)],
    (6, 8): [
        H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        H("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
        H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ],
    (2, 5): [
        H("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
        H("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
    ],
    (6, 7): [
        H("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
        H("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
        H("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
    ],
}


def reference_mth(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 section 2.1 written as the recursive definition, to check the fast code against."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + reference_mth(leaves[:split]) + reference_mth(leaves[split:])).digest()


def tree_of(count: int) -> tuple[MemoryTree, list[bytes]]:
    tree = MemoryTree()
    entries = [f"รายการ {i} ລາຍການ".encode() for i in range(count)]
    for entry in entries:
        tree.append_entry(entry)
    return tree, entries


@pytest.fixture(scope="module")
def tree70() -> tuple[MemoryTree, list[bytes]]:
    return tree_of(70)


def flipped(proof: list[bytes], position: int) -> list[bytes]:
    changed = list(proof)
    changed[position] = bytes([changed[position][0] ^ 0x10]) + changed[position][1:]
    return changed


# --- hashing and roots ---------------------------------------------------------------------


def test_hashes_are_domain_separated_as_rfc6962_says() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert leaf_hash(b"\x01" + b"a" * 32 + b"b" * 32) != node_hash(b"a" * 32, b"b" * 32)


def test_reference_tree_has_the_published_roots() -> None:
    tree = MemoryTree()
    assert tree.root() == EMPTY_ROOT
    for size, entry in enumerate(REFERENCE_LEAVES, start=1):
        tree.append_entry(entry)
        assert tree.root() == REFERENCE_ROOTS[size - 1]
    assert tree.root().hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"
    assert [tree.root(size) for size in range(1, 9)] == REFERENCE_ROOTS


def test_generated_proofs_equal_the_reference_proofs() -> None:
    tree = MemoryTree()
    for entry in REFERENCE_LEAVES:
        tree.append_entry(entry)
    for (index, size), proof in REFERENCE_INCLUSION.items():
        assert inclusion_proof(index, size, tree) == proof
    for (size1, size2), proof in REFERENCE_CONSISTENCY.items():
        assert consistency_proof(size1, size2, tree) == proof


def test_compact_range_matches_full_recomputation_at_every_size() -> None:
    entries = [f"ເອກະສານ {i}".encode() for i in range(300)]
    compact, tree = CompactRange(), MemoryTree()
    for size in range(301):
        assert compact.root() == reference_mth(entries[:size]) == tree.root()
        assert root_from_leaf_hashes(leaf_hash(e) for e in entries[:size]) == compact.root()
        if size < 300:
            created = compact.append(leaf_hash(entries[size]))
            tree.append_entry(entries[size])
            assert tree.hashes([node for node, _ in created]) == [digest for _, digest in created]


def test_compact_range_resumes_from_stored_border_nodes() -> None:
    tree, entries = tree_of(45)
    for size in range(46):
        resumed = CompactRange.from_border(size, tree.hashes(border_nodes(size)))
        resumed.extend(leaf_hash(e) for e in entries[size:])
        assert resumed.size == 45
        assert resumed.root() == tree.root()
    with pytest.raises(MalformedInput):
        CompactRange.from_border(5, tree.hashes(border_nodes(4)))


def test_append_reports_every_full_node_it_completes() -> None:
    compact = CompactRange()
    reported: list[NodeId] = []
    for i in range(8):
        reported.extend(node for node, _ in compact.append(leaf_hash(bytes([i]))))
    assert reported[-4:] == [NodeId(0, 7), NodeId(1, 3), NodeId(2, 1), NodeId(3, 0)]
    assert len(reported) == 15


def test_a_leaf_that_is_not_a_hash_is_refused() -> None:
    with pytest.raises(MalformedInput):
        CompactRange().append(b"short")
    compact = CompactRange()
    with pytest.raises(MalformedInput):
        compact.extend([leaf_hash(b"a"), b"short"])
    assert compact.size == 1
    assert compact.root() == leaf_hash(b"a")


# --- proofs from stored nodes ----------------------------------------------------------------


def test_every_inclusion_proof_up_to_70_leaves_verifies(tree70: tuple[MemoryTree, list[bytes]]) -> None:
    tree, entries = tree70
    for size in range(1, 71):
        root = tree.root(size)
        assert root == reference_mth(entries[:size])
        for index in range(size):
            verify_inclusion(leaf_hash(entries[index]), index, size, inclusion_proof(index, size, tree), root)


def test_every_consistency_proof_up_to_40_leaves_verifies(tree70: tuple[MemoryTree, list[bytes]]) -> None:
    tree, _ = tree70
    for size2 in range(1, 41):
        for size1 in range(1, size2 + 1):
            proof = consistency_proof(size1, size2, tree)
            verify_consistency(size1, size2, proof, tree.root(size1), tree.root(size2))


def test_tree_root_from_stored_nodes_matches_every_past_size(tree70: tuple[MemoryTree, list[bytes]]) -> None:
    tree, entries = tree70
    for size in range(71):
        assert tree_root(size, tree) == reference_mth(entries[:size])


def test_proof_plans_read_few_nodes_at_a_million_leaves() -> None:
    size = 1_000_003
    for index in (0, 1, 524_287, 524_288, 999_999, 1_000_000, 1_000_002):
        plan = inclusion_plan(index, size)
        assert len(plan.nodes) <= 2 * 20
        assert sum(count > 1 for count in plan.groups) <= 1
        assert sum(plan.groups) == len(plan.nodes)
    for size1 in (1, 2, 3, 1000, 524_288, 999_999, 1_000_002):
        assert len(consistency_plan(size1, size).nodes) <= 3 * 20


def test_stored_tree_refuses_to_serve_an_ephemeral_node() -> None:
    tree, _ = tree_of(5)
    assert len(tree.hashes([NodeId(2, 0), NodeId(0, 4)])) == 2
    with pytest.raises(InvalidField):
        tree.hashes([NodeId(1, 2)])
    with pytest.raises(InvalidField):
        inclusion_proof(0, 6, tree)


@pytest.mark.parametrize(
    ("index", "size"), [(5, 5), (0, 0), (-1, 3), (True, 3)], ids=["at-size", "empty", "negative", "bool"]
)
def test_inclusion_plan_refuses_impossible_leaves(index: int, size: int) -> None:
    with pytest.raises(InvalidField):
        inclusion_plan(index, size)


def test_consistency_plan_refuses_shrinking_and_empty_starts() -> None:
    with pytest.raises(InvalidField):
        consistency_plan(6, 5)
    with pytest.raises(InvalidField):
        consistency_plan(0, 5)
    assert consistency_plan(7, 7).nodes == ()
    assert consistency_plan(0, 0).nodes == ()


# --- verification attacks --------------------------------------------------------------------


def test_tampered_inclusion_proofs_are_refused(tree70: tuple[MemoryTree, list[bytes]]) -> None:
    tree, entries = tree70
    for size in range(1, 33):
        root = tree.root(size)
        for index in range(size):
            leaf = leaf_hash(entries[index])
            proof = inclusion_proof(index, size, tree)
            attacks: list[tuple[bytes, int, int, list[bytes], bytes]] = [
                (leaf, index, size, proof, tree.root(size - 1) if size > 1 else EMPTY_ROOT),
                (leaf_hash(b"forged entry"), index, size, proof, root),
                (leaf, index, size * 2, proof, root),
                (leaf, index, size, [*proof, root], root),
                (leaf, index, size, [root, *proof], root),
                (leaf, index ^ 1, size, proof, root),
                (leaf, index + 1, size, proof, root),
            ]
            attacks += [(leaf, index, size // 2, proof, root)] if index < size // 2 else []
            attacks += [(leaf, index, size, proof[:-1], root)] if proof else []
            attacks += [(leaf, index, size, flipped(proof, i), root) for i in range(len(proof))]
            for attack in attacks:
                with pytest.raises(VerificationError):
                    verify_inclusion(*attack)


def test_tampered_consistency_proofs_are_refused(tree70: tuple[MemoryTree, list[bytes]]) -> None:
    tree, _ = tree70
    for size2 in range(2, 25):
        for size1 in range(1, size2):
            root1, root2 = tree.root(size1), tree.root(size2)
            proof = consistency_proof(size1, size2, tree)
            attacks: list[tuple[int, int, list[bytes], bytes, bytes]] = [
                (size1, size2, proof, root2, root1),
                (size1, size2, proof, root1, tree.root(size2 + 1)),
                (size1 + 1, size2, proof, root1, root2),
                (size1, size2 * 2, proof, root1, root2),
                (size1, size2, [], root1, root2),
                (size1, size2, [*proof, root1], root1, root2),
                (size1, size2, [proof[0], *proof], root1, root2),
                (size1, size2, proof[:-1], root1, root2),
            ]
            attacks += [(size1 - 1, size2, proof, root1, root2)] if size1 > 1 else []
            attacks += [(size1, size2, flipped(proof, i), root1, root2) for i in range(len(proof))]
            for attack in attacks:
                with pytest.raises(VerificationError):
                    verify_consistency(*attack)


def test_a_forked_log_fails_consistency() -> None:
    honest, _ = tree_of(20)
    forked = MemoryTree()
    for i in range(20):
        forked.append_entry(b"rewritten" if i == 3 else f"รายการ {i} ລາຍການ".encode())
    proof = consistency_proof(10, 20, forked)
    verify_consistency(10, 20, proof, forked.root(10), forked.root(20))
    with pytest.raises(VerificationError) as refused:
        verify_consistency(10, 20, proof, honest.root(10), forked.root(20))
    assert refused.value.reason == "consistency proof: computed root differs from the root of size 10"


def test_verifier_refuses_malformed_arguments() -> None:
    leaf = leaf_hash(b"x")
    for attack in [
        (leaf[:31], 0, 1, [], leaf),
        (leaf, 0, 1, [], leaf + b"\x00"),
        (leaf, 2**64, 2**64 + 1, [], leaf),
    ]:
        with pytest.raises(VerificationError):
            verify_inclusion(*attack)
    with pytest.raises(VerificationError) as refused:
        verify_consistency(0, 0, [], b"x" * 32, b"x" * 32)
    assert "empty tree" in refused.value.reason
    verify_consistency(0, 0, [], EMPTY_ROOT, EMPTY_ROOT)


# --- tlog-tiles -------------------------------------------------------------------------------


def test_tile_paths_follow_the_tlog_tiles_examples() -> None:
    assert tile_index_path(1234067) == "x001/x234/067"
    assert [tile_index_path(n) for n in (0, 7, 999, 1000, 1_000_000)] == [
        "000",
        "007",
        "999",
        "x001/000",
        "x001/x000/000",
    ]
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(1, 2, width=17) == "tile/1/002.p/17"
    assert entries_path(273, width=112) == "tile/entries/273.p/112"
    assert entries_path(5) == "tile/entries/005"
    with pytest.raises(InvalidField):
        tile_path(0, 1, width=0)
    with pytest.raises(InvalidField):
        tile_path(64, 1)


def test_tile_paths_parse_back_and_only_canonical_ones_do() -> None:
    for path, parsed in [
        ("tile/0/x001/x234/067", TilePath(0, 1234067, 256)),
        ("tile/2/000.p/1", TilePath(2, 0, 1)),
        ("tile/entries/x001/000.p/255", TilePath(None, 1000, 255)),
    ]:
        assert parse_tile_path(path) == parsed
        if parsed.level is None:
            assert entries_path(parsed.index, parsed.width) == path
        else:
            assert tile_path(parsed.level, parsed.index, parsed.width) == path
    for bad in [
        "tile/0/1",
        "tile/0/x000/001",
        "tile/0/001.p/256",
        "tile/0/001.p/0",
        "tile/0/001.p/017",
        "tile/00/001",
        "tile/64/001",
        "tile/0/x1/001",
        "tile/0/001/",
        "tile/data/001",
        "tile/0/๐๐๑",
        "tile/0/" + "x999/" * 30 + "999",
    ]:
        with pytest.raises(MalformedInput):
            parse_tile_path(bad)


def test_tile_counts_match_the_70000_leaf_example() -> None:
    assert [tile_count(70_000, level) for level in range(4)] == [(273, 112), (1, 17), (0, 1), (0, 0)]
    assert [tile_count(256, level) for level in range(3)] == [(1, 0), (0, 1), (0, 0)]


def test_node_hashes_are_recomputed_from_their_tiles() -> None:
    tree, _ = tree_of(256 * 3 + 5)
    level0 = [
        tree.hashes([NodeId(0, i) for i in range(t * 256, min(t * 256 + 256, tree.size))]) for t in range(4)
    ]
    level1 = tree.hashes([NodeId(8, i) for i in range(3)])
    for level, index in [(0, 700), (1, 0), (3, 40), (7, 1), (8, 2), (9, 0)]:
        span = node_tile(level, index)
        tile = level0[span.index] if span.level == 0 else level1
        assert hash_from_tile(level, index, tile) == tree.hashes([NodeId(level, index)])[0]
    assert node_tile(3, 40) == TileSpan(0, 1, 64, 8)
    with pytest.raises(InvalidField):
        hash_from_tile(3, 40, level0[1][:70])


def test_hash_tiles_round_trip_and_refuse_wrong_widths() -> None:
    hashes = [leaf_hash(bytes([i])) for i in range(17)]
    data = encode_hash_tile(hashes)
    assert len(data) == 17 * 32
    assert decode_hash_tile(data, 17) == hashes
    for bad, width in [(data, 16), (data + b"\x00", 17), (data[:-1], 17), (b"", 1)]:
        with pytest.raises(MalformedInput):
            decode_hash_tile(bad, width)
    with pytest.raises(InvalidField):
        encode_hash_tile([])
    with pytest.raises(InvalidField):
        encode_hash_tile([b"short"])


def test_entry_bundles_round_trip_and_refuse_corruption() -> None:
    entries = ["สมชาย ใจดี".encode(), b"", "ນາງ ສົມພອນ ແກ້ວມະນີ".encode(), b"\x00" * 65535]
    data = encode_entry_bundle(entries)
    assert data[:2] == len(entries[0]).to_bytes(2, "big")
    assert decode_entry_bundle(data, 4) == entries
    for bad, width in [(data, 3), (data, 5), (data[:-1], 4), (data + b"\x00", 4), (b"\x00", 1)]:
        with pytest.raises(MalformedInput):
            decode_entry_bundle(bad, width)
    with pytest.raises(InvalidField):
        encode_entry_bundle([b"\x00" * 65536])
    with pytest.raises(InvalidField):
        encode_entry_bundle([b"x"] * 257)
