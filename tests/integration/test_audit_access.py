"""Who may read what of the audit log, and how bad requests are refused (problem+json)."""

from __future__ import annotations

import pytest

from protocol import auditlog
from tests.integration.audit_harness import auditor, checkpoint_now, fetch_checkpoint
from tests.integration.broker_harness import RunningBroker
from tests.integration.pki import Sealed


async def sent(broker: RunningBroker) -> Sealed:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    assert (await broker.submit("TH-ATPD", sealed)).status == 201
    await checkpoint_now(broker)
    return sealed


async def accepted_index(broker: RunningBroker, sealed: Sealed) -> int:
    leaves = await broker.store.audit.leaves(0, await broker.store.audit.size())
    for index, leaf in enumerate(leaves):
        parsed = auditlog.parse_leaf(leaf)
        if parsed.kind is auditlog.LeafKind.ENVELOPE_ACCEPTED and auditlog.envelope_ids(parsed) == (
            sealed.envelope_id,
        ):
            return index
    raise AssertionError("no acceptance entry")


async def test_the_sender_and_recipient_read_their_envelopes_trace_and_no_one_elses(
    broker: RunningBroker,
) -> None:
    sealed = await sent(broker)
    path = f"/v1/audit/envelopes/{sealed.envelope_id.hex()}"
    for party in ("TH-ATPD", "LA-MOLSW"):
        assert (await broker.client(party).get(path)).status == 200
        assert (await broker.client(party).get(path + "/tlog-proof")).status == 200
    for outsider in ("LA-LWU", "TH-DSDW"):
        for target in (path, path + "/tlog-proof"):
            reply = await broker.client(outsider).get(target)
            assert (reply.status, reply.problem["code"]) == (404, "not_found")
    assert (await (await auditor(broker)).get(path)).status == 200
    assert (await broker.client("TH-OPERATOR").get(path)).status == 200


async def test_an_agency_gets_inclusion_proofs_only_for_entries_that_concern_it(
    broker: RunningBroker,
) -> None:
    sealed = await sent(broker)
    size = (await fetch_checkpoint(broker.client("LA-MOLSW"), broker)).checkpoint.size
    query = {"index": await accepted_index(broker, sealed), "size": size}
    assert (await broker.client("LA-MOLSW").get("/v1/audit/proof/inclusion", query=query)).status == 200
    refused = await broker.client("LA-LWU").get("/v1/audit/proof/inclusion", query=query)
    assert (refused.status, refused.problem["code"]) == (403, "forbidden")
    root_entry = {"index": 0, "size": size}
    assert (await broker.client("TH-ATPD").get("/v1/audit/proof/inclusion", query=root_entry)).status == 403
    assert (await (await auditor(broker)).get("/v1/audit/proof/inclusion", query=root_entry)).status == 200


@pytest.mark.parametrize(
    ("path", "query"),
    [
        ("/v1/audit/tile/0/000.p/1", {}),
        ("/v1/audit/tile/entries/000.p/1", {}),
        ("/v1/audit/entries", {"start": 0, "count": 1}),
    ],
)
async def test_agencies_cannot_export_the_whole_log(
    broker: RunningBroker, path: str, query: dict[str, int]
) -> None:
    await sent(broker)
    refused = await broker.client("TH-ATPD").get(path, query=query)
    assert (refused.status, refused.problem["code"]) == (403, "forbidden")
    assert (await (await auditor(broker)).get(path, query=query)).status == 200


async def test_every_party_reads_the_checkpoint_and_consistency_proofs(broker: RunningBroker) -> None:
    await sent(broker)
    for party in ("TH-ATPD", "TH-OPERATOR"):
        size = (await fetch_checkpoint(broker.client(party), broker)).checkpoint.size
        query = {"from": 1, "to": size}
        assert (await broker.client(party).get("/v1/audit/proof/consistency", query=query)).status == 200
    unsigned = await broker.client(None).get("/v1/audit/checkpoint")
    assert (unsigned.status, unsigned.problem["code"]) == (401, "unauthenticated")


BAD_REQUESTS = [
    ("/v1/audit/proof/inclusion", {"index": 0, "size": 10_000}, 400, "invalid_field", "size"),
    ("/v1/audit/proof/inclusion", {"index": 0, "size": 0}, 400, "invalid_field", "size"),
    ("/v1/audit/proof/inclusion", {"index": 5, "size": 5}, 400, "invalid_field", "index"),
    ("/v1/audit/proof/inclusion", {"size": 5}, 400, "invalid_field", "index"),
    ("/v1/audit/proof/inclusion", {"index": "-1", "size": 5}, 400, "invalid_field", "index"),
    ("/v1/audit/proof/inclusion", {"index": "٣", "size": 5}, 400, "invalid_field", "index"),
    ("/v1/audit/proof/inclusion", {"index": "9" * 40, "size": 5}, 400, "invalid_field", "index"),
    ("/v1/audit/proof/consistency", {"from": 0, "to": 5}, 400, "invalid_field", "from"),
    ("/v1/audit/proof/consistency", {"from": 6, "to": 5}, 400, "invalid_field", "from"),
    ("/v1/audit/proof/consistency", {"from": 1, "to": 10_000}, 400, "invalid_field", "to"),
    ("/v1/audit/tile/0/1", {}, 400, "malformed_input", None),
    ("/v1/audit/tile/0/000.p/256", {}, 400, "malformed_input", None),
    ("/v1/audit/tile/0/x000/001", {}, 400, "malformed_input", None),
    ("/v1/audit/tile/0/000.p/0", {}, 400, "malformed_input", None),
    ("/v1/audit/tile/0/000", {}, 404, "not_found", None),
    ("/v1/audit/tile/0/001.p/1", {}, 404, "not_found", None),
    ("/v1/audit/tile/1/000.p/1", {}, 404, "not_found", None),
    ("/v1/audit/tile/63/000.p/1", {}, 404, "not_found", None),
    ("/v1/audit/tile/entries/000", {}, 404, "not_found", None),
    ("/v1/audit/entries", {"start": 0, "count": 0}, 400, "invalid_field", "count"),
    ("/v1/audit/entries", {"start": 0, "count": 4097}, 400, "invalid_field", "count"),
    ("/v1/audit/entries", {"start": 10_000, "count": 1}, 400, "invalid_field", "start"),
    ("/v1/audit/envelopes/not-an-id", {}, 400, "invalid_field", "envelope_id"),
    ("/v1/audit/envelopes/" + "00" * 16, {}, 404, "not_found", None),
    ("/v1/audit/envelopes/" + "00" * 16 + "/tlog-proof", {}, 404, "not_found", None),
]


@pytest.mark.parametrize(("path", "query", "status", "code", "field"), BAD_REQUESTS)
async def test_bad_sizes_indices_and_paths_are_refused_with_problem_details(
    broker: RunningBroker, path: str, query: dict[str, object], status: int, code: str, field: str | None
) -> None:
    await sent(broker)
    reply = await (await auditor(broker)).get(path, query=query)
    problem = reply.problem
    assert (reply.status, problem["status"], problem["code"]) == (status, status, code)
    assert problem.get("field") == field


async def test_an_entries_page_ends_at_the_published_size(broker: RunningBroker) -> None:
    await sent(broker)
    client = await auditor(broker)
    size = (await fetch_checkpoint(client, broker)).checkpoint.size
    await broker.submit("TH-ATPD", broker.seal("TH-ATPD", ["LA-LWU"]))
    reply = await client.get("/v1/audit/entries", query={"start": size - 1, "count": 4096})
    assert reply.headers["CaseBridge-Log-Size"] == str(size)
    assert reply.headers["Content-Type"] == "application/octet-stream"
    length = int.from_bytes(reply.body[:2], "big")
    assert len(reply.body) == 2 + length
    empty = await client.get("/v1/audit/entries", query={"start": size, "count": 10})
    assert (empty.status, empty.body) == (200, b"")
