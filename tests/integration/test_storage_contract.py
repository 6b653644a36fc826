"""The storage contract: every engine behaves the same (run once per engine in ENGINES)."""

from __future__ import annotations

import pytest

from broker.storage.interfaces import Store
from broker.storage.records import (
    OPEN_STATES,
    InboxState,
    IssuedReceipt,
    NewEnvelope,
    NewPart,
    NewReceipt,
    ReceiptIssuer,
    StoredCertificate,
    StoredRevocationList,
)
from protocol import auditlog
from protocol.errors import Conflict
from tests.integration.storage_engines import START_TIME

T0 = START_TIME
SENDER = "TH-ATPD"
LAO = "LA-MOLSW"
LAO_2 = "LA-LWU"


def envelope(
    eid: int, *, recipients: tuple[str, ...] = (LAO,), salt: bytes = b"", ttl: int = 3600
) -> NewEnvelope:
    envelope_id = eid.to_bytes(16, "big")
    return NewEnvelope(
        envelope_id=envelope_id,
        envelope_hash=(bytes([eid % 256]) + salt).ljust(32, b"h")[:32],
        sender_id=SENDER,
        sender_key_id=b"k" * 16,
        header=b"header-" + envelope_id + salt,
        parts=(NewPart(0, 300, b"d" * 32, b"c" * 300), NewPart(1, 70_000, b"e" * 32, None)),
        recipients=recipients,
        accepted_at=T0,
        expires_at=T0 + ttl,
        leaf=auditlog.encode_leaf(
            T0,
            auditlog.EnvelopeAccepted(
                envelope_id=envelope_id,
                envelope_hash=b"h" * 32,
                sender_id=SENDER,
                sender_key_id=b"k" * 16,
                recipients=tuple(sorted(recipients)),
                header_length=10,
                part_lengths=(300, 70_000),
                expires_at=T0 + ttl,
                sender_signature=b"s" * 64,
            ),
        ),
    )


def issuer(new: NewEnvelope, seen: list[int]) -> ReceiptIssuer:
    def issue(index: int) -> list[IssuedReceipt]:
        seen.append(index)
        return [
            IssuedReceipt(r, f"accepted:{new.envelope_id.hex()}:{r}:{index}".encode(), f"leaf:{r}".encode())
            for r in new.recipients
        ]

    return issue


def receipt(new: NewEnvelope, recipient: str, kind: str, to: InboxState, *, at: int = T0 + 10) -> NewReceipt:
    return NewReceipt(
        envelope_id=new.envelope_id,
        recipient_id=recipient,
        kind=kind,
        raw=f"{kind}:{new.envelope_id.hex()}:{recipient}:{at}".encode(),
        recorded_at=at,
        from_states=OPEN_STATES if to is not InboxState.DELIVERED else frozenset({InboxState.PENDING}),
        to_state=to,
        leaf=f"leaf:{kind}:{recipient}:{at}".encode(),
    )


async def test_certificate_registration_is_idempotent_and_refuses_other_bytes_under_a_key(
    store: Store,
) -> None:
    cert = StoredCertificate(b"1" * 16, "TH-ATPD", b"certificate bytes", T0)
    assert await store.directory.add_certificate(cert, b"leaf-1") is True
    assert await store.directory.add_certificate(cert, b"leaf-again") is False
    with pytest.raises(Conflict):
        await store.directory.add_certificate(StoredCertificate(b"1" * 16, "TH-ATPD", b"other", T0), b"x")
    assert [c.raw for c in await store.directory.certificates()] == [b"certificate bytes"]
    assert await store.audit.leaves(0, 10) == [b"leaf-1"]


async def test_revocation_lists_only_move_forward(store: Store) -> None:
    first = StoredRevocationList("TH", 1, b"crl-1", T0)
    second = StoredRevocationList("TH", 2, b"crl-2", T0 + 1)
    assert await store.directory.add_revocation_list(first, b"l1")
    assert await store.directory.add_revocation_list(second, b"l2")
    assert not await store.directory.add_revocation_list(second, b"l2-again")
    with pytest.raises(Conflict):
        await store.directory.add_revocation_list(first, b"old")
    with pytest.raises(Conflict):
        await store.directory.add_revocation_list(StoredRevocationList("TH", 2, b"forked", T0), b"fork")
    assert [(r.country, r.number) for r in await store.directory.revocation_lists()] == [("TH", 2)]
    assert await store.audit.size() == 2


async def test_acceptance_stores_everything_in_one_go_with_receipts_carrying_the_leaf_index(
    store: Store,
) -> None:
    await store.audit.record(b"earlier entry", T0)
    new = envelope(1, recipients=(LAO_2, LAO))
    seen: list[int] = []
    accepted = await store.delivery.accept_envelope(new, issuer(new, seen))
    assert accepted.created
    assert seen == [1]
    assert accepted.envelope.accepted_index == 1
    assert [r.recipient_id for r in accepted.receipts] == sorted([LAO, LAO_2])
    assert all(r.kind == "accepted" and r.raw.endswith(b":1") for r in accepted.receipts)
    assert dict(accepted.cursors) == {LAO: 1, LAO_2: 1}
    assert await store.audit.leaves(0, 10) == [
        b"earlier entry",
        new.leaf,
        f"leaf:{LAO_2}".encode(),
        f"leaf:{LAO}".encode(),
    ]
    assert await store.delivery.header(new.envelope_id) == new.header
    assert await store.delivery.inline_part(new.envelope_id, 0) == b"c" * 300
    assert await store.delivery.inline_part(new.envelope_id, 1) is None
    assert [p.stored_inline for p in accepted.envelope.parts] == [True, False]


async def test_the_same_envelope_again_returns_the_first_acceptance(store: Store) -> None:
    new = envelope(2)
    first = await store.delivery.accept_envelope(new, issuer(new, []))
    size = await store.audit.size()
    seen: list[int] = []
    again = await store.delivery.accept_envelope(new, issuer(new, seen))
    assert not again.created
    assert seen == []
    assert again.receipts == first.receipts
    assert again.envelope == first.envelope
    assert await store.audit.size() == size


async def test_other_bytes_under_a_used_envelope_id_conflict_and_change_nothing(store: Store) -> None:
    new = envelope(3)
    await store.delivery.accept_envelope(new, issuer(new, []))
    size = await store.audit.size()
    other = envelope(3, salt=b"other")
    with pytest.raises(Conflict):
        await store.delivery.accept_envelope(other, issuer(other, []))
    assert await store.audit.size() == size
    assert await store.delivery.header(new.envelope_id) == new.header


async def test_a_failure_inside_the_acceptance_rolls_back_the_audit_entries_too(store: Store) -> None:
    new = envelope(4)

    def broken_issuer(index: int) -> list[IssuedReceipt]:
        raise RuntimeError("signing failed")

    with pytest.raises(RuntimeError):
        await store.delivery.accept_envelope(new, broken_issuer)
    assert await store.audit.size() == 0
    assert await store.delivery.envelope(new.envelope_id) is None
    assert await store.delivery.inbox(LAO, 0, 10) == []


async def test_inbox_cursors_increase_per_recipient_and_list_only_open_entries(store: Store) -> None:
    a, b, c = envelope(10), envelope(11, recipients=(LAO, LAO_2)), envelope(12)
    for new in (a, b, c):
        await store.delivery.accept_envelope(new, issuer(new, []))
    inbox = await store.delivery.inbox(LAO, 0, 10)
    assert [e.cursor for e in inbox] == [1, 2, 3]
    assert [e.envelope.envelope_id for e in inbox] == [a.envelope_id, b.envelope_id, c.envelope_id]
    assert [e.cursor for e in await store.delivery.inbox(LAO_2, 0, 10)] == [1]
    assert [e.cursor for e in await store.delivery.inbox(LAO, 1, 1)] == [2]
    await store.delivery.record_receipt(receipt(b, LAO, "verified", InboxState.VERIFIED))
    assert [e.cursor for e in await store.delivery.inbox(LAO, 0, 10)] == [1, 3]


async def test_receipts_follow_the_state_machine_and_feed_the_sender_in_order(store: Store) -> None:
    new = envelope(20)
    await store.delivery.accept_envelope(new, issuer(new, []))
    delivered = receipt(new, LAO, "delivered", InboxState.DELIVERED)
    outcome = await store.delivery.record_receipt(delivered)
    assert outcome.recorded is not None
    assert outcome.state is InboxState.DELIVERED
    again = await store.delivery.record_receipt(delivered)
    assert again.duplicate
    assert again.recorded == outcome.recorded
    verified = await store.delivery.record_receipt(receipt(new, LAO, "verified", InboxState.VERIFIED))
    assert verified.state is InboxState.VERIFIED
    rejected = await store.delivery.record_receipt(receipt(new, LAO, "rejected", InboxState.REJECTED))
    assert rejected.recorded is None
    assert not rejected.duplicate
    assert rejected.state is InboxState.VERIFIED
    unknown = await store.delivery.record_receipt(receipt(new, "LA-NOBODY", "verified", InboxState.VERIFIED))
    assert unknown.state is None
    feed = await store.delivery.sender_feed(SENDER, 0, 10)
    assert [(r.seq, r.kind) for r in feed] == [(1, "accepted"), (2, "delivered"), (3, "verified")]
    assert [r.seq for r in await store.delivery.sender_feed(SENDER, 2, 10)] == [3]
    assert await store.delivery.sender_feed(LAO, 0, 10) == []
    leaves_now = await store.audit.leaves(0, 100)
    assert leaves_now[-1] == b"leaf:verified:" + LAO.encode() + b":" + str(T0 + 10).encode()


async def test_expiry_then_purge_drops_ciphertext_and_keeps_the_facts(store: Store) -> None:
    new = envelope(30, recipients=(LAO, LAO_2), ttl=100)
    await store.delivery.accept_envelope(new, issuer(new, []))
    assert await store.delivery.expiring(T0 + 99, 10) == []
    await store.delivery.record_receipt(receipt(new, LAO_2, "verified", InboxState.VERIFIED))
    due = await store.delivery.expiring(T0 + 100, 10)
    assert [(e.recipient_id, e.state) for e in due] == [(LAO, InboxState.PENDING)]
    assert await store.delivery.purgeable(10) == []
    expired = receipt(new, LAO, "expired", InboxState.EXPIRED, at=T0 + 100)
    assert (await store.delivery.record_receipt(expired)).state is InboxState.EXPIRED
    assert [e.envelope_id for e in await store.delivery.purgeable(10)] == [new.envelope_id]
    assert new.envelope_hash in await store.delivery.stored_hashes()
    size = await store.audit.size()
    assert await store.delivery.mark_purged(new.envelope_id, T0 + 101, b"purged")
    assert not await store.delivery.mark_purged(new.envelope_id, T0 + 102, b"purged again")
    assert await store.audit.size() == size + 1
    assert await store.delivery.header(new.envelope_id) is None
    assert await store.delivery.inline_part(new.envelope_id, 0) is None
    record = await store.delivery.envelope(new.envelope_id)
    assert record is not None
    assert record.purged_at == T0 + 101
    assert await store.delivery.purgeable(10) == []
    assert new.envelope_hash not in await store.delivery.stored_hashes()
    assert len(await store.delivery.receipts_for(new.envelope_id)) == 4


async def test_an_envelope_with_open_entries_is_never_purged(store: Store) -> None:
    new = envelope(31)
    await store.delivery.accept_envelope(new, issuer(new, []))
    assert not await store.delivery.mark_purged(new.envelope_id, T0, b"too early")
    assert await store.delivery.header(new.envelope_id) == new.header


async def test_nonces_are_refused_within_their_window_only(store: Store) -> None:
    assert await store.nonces.remember(b"k" * 16, b"n" * 16, T0 + 300, T0)
    assert not await store.nonces.remember(b"k" * 16, b"n" * 16, T0 + 600, T0 + 299)
    assert await store.nonces.remember(b"j" * 16, b"n" * 16, T0 + 300, T0)
    assert await store.nonces.remember(b"k" * 16, b"n" * 16, T0 + 900, T0 + 300)
    assert await store.nonces.forget_expired(T0 + 10_000) == 2


async def test_counts_reflect_what_is_stored(store: Store) -> None:
    await store.directory.add_certificate(StoredCertificate(b"1" * 16, "TH-ATPD", b"a", T0), b"l")
    await store.directory.add_certificate(StoredCertificate(b"2" * 16, "TH-ATPD", b"b", T0), b"l")
    new = envelope(40, recipients=(LAO, LAO_2))
    await store.delivery.accept_envelope(new, issuer(new, []))
    counts = await store.delivery.counts()
    assert (counts.agencies, counts.certificates, counts.envelopes_stored, counts.open_inbox_entries) == (
        1,
        2,
        1,
        2,
    )
    assert counts.audit_entries == await store.audit.size() == 5


async def test_blobs_are_written_whole_and_read_by_range(store: Store) -> None:
    data = bytes(range(256)) * 4096
    writer = store.blobs.writer(b"a" * 32, 1)
    for i in range(0, len(data), 100_000):
        await writer.write(data[i : i + 100_000])
    assert await store.blobs.size(b"a" * 32, 1) is None
    await writer.commit()
    assert await store.blobs.size(b"a" * 32, 1) == len(data)
    assert b"".join([c async for c in store.blobs.read(b"a" * 32, 1, 0, len(data))]) == data
    assert b"".join([c async for c in store.blobs.read(b"a" * 32, 1, 1000, 300_001)]) == data[1000:300_001]
    aborted = store.blobs.writer(b"b" * 32, 0)
    await aborted.write(b"half")
    await aborted.abort()
    assert await store.blobs.size(b"b" * 32, 0) is None
    assert await store.blobs.stored_hashes() == {b"a" * 32}
    await store.blobs.delete(b"a" * 32)
    await store.blobs.delete(b"a" * 32)
    assert await store.blobs.stored_hashes() == set()
