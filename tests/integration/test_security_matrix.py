"""The broker's security matrix: every `/v1` route against every way a request can be forged,
replayed, altered, misdirected or sent by the wrong party.

Columns: fourteen authentication attacks (401 `unauthenticated`), replay (401), each role the
route does not give (403 `forbidden`), and, where the route takes another agency's envelope or
receipt, the other agency's attempts (404 `not_found` where the broker hides existence, 403
where the caller names itself wrongly). The WebSocket `/v1/events` is attacked as an upgrade.

Each refusal is checked for its exact status and problem+json `code`, and for changing nothing:
the database (every table; nonces too when authentication failed), the blob files and the
in-memory directory are the same before and after. The routes come from the broker's own router,
so a new `/v1` route fails `test_every_v1_route_is_in_the_security_matrix` until it is given an
honest request here (and so goes through every attack). One broker serves the whole module;
attacks that move the clock put it back.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from protocol import httpsig
from protocol.certificate import Role
from protocol.receipt import ReceiptKind, RejectReason
from tests.integration.attack_requests import (
    PROBLEM_TYPE,
    ROLE_ACTORS,
    ROUTES,
    UNSIGNED_ROUTES,
    Call,
    World,
    open_world,
    receipt_batch,
    send_honestly,
    sign,
    signed_call,
    snapshot,
    transmit,
)
from tests.integration.broker_harness import (
    ENCRYPTION_KEY_TYPE,
    ENVELOPE_TYPE,
    RECEIPT_BATCH_TYPE,
    RECEIPT_TYPE,
)
from tests.integration.pki import recipient_receipt
from tests.integration.signed_http import Reply, SignedClient

pytestmark = pytest.mark.asyncio(loop_scope="module")

Attack = Callable[[World, Call, bytes], Awaitable[Reply]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    directory: Path = tmp_path_factory.mktemp("security-matrix")
    async with open_world(directory) as opened:
        yield opened


def assert_problem(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, (reply.status, reply.body[:300])
    assert reply.headers.get("Content-Type", "").startswith(PROBLEM_TYPE), reply.headers
    problem = reply.json()
    assert (problem["status"], problem["code"]) == (status, code), problem
    assert problem["type"] == f"urn:casebridge:problem:{code}"
    assert problem["request_id"] == reply.headers["X-Request-Id"]


# --- authentication attacks -----------------------------------------------------------------


async def _send(
    world: World,
    call: Call,
    headers: Mapping[str, str],
    *,
    body: bytes | None = None,
    target: str | None = None,
) -> Reply:
    """Send `call` with these headers (and another body or target if given)."""
    sent = call.body if body is None else body
    return await transmit(world, call.method, target or call.target, headers, sent, websocket=call.websocket)


def _signed(world: World, call: Call, **changes: Any) -> dict[str, str]:
    """The caller's signature over `call`, with some signature inputs changed."""
    identity = world.identity(call.caller)
    headers = call.body_headers()
    has_body = call.body is not None
    return sign(
        world, identity, method=call.method, target=call.target, headers=headers, has_body=has_body, **changes
    )


async def unsigned(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, call.body_headers())


async def key_not_in_the_directory(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, signed_call(world, call, world.attackers["stranger"]))


async def key_chaining_to_an_unpinned_root(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, signed_call(world, call, world.attackers["rogue"]))


async def revoked_key(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, signed_call(world, call, world.attackers["revoked"]))


async def not_yet_valid_certificate(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, signed_call(world, call, world.attackers["future"]))


async def expired_certificate(world: World, call: Call, swap: bytes) -> Reply:
    cert = world.identity(call.caller).certificate
    assert cert is not None
    moved = cert.not_after - world.clock.now()
    world.clock.advance(moved)
    try:
        return await send_honestly(world, call)
    finally:
        world.clock.advance(-moved)


async def stale_created(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, _signed(world, call, created=world.clock.now() - world.skew - 1))


async def future_created(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, _signed(world, call, created=world.clock.now() + world.skew + 1))


async def signed_for_another_authority(world: World, call: Call, swap: bytes) -> Reply:
    return await _send(world, call, _signed(world, call, authority="broker.example:8443"))


async def another_body(world: World, route: str, call: Call) -> bytes:
    """A body the caller could have sent honestly instead (a second fresh one); for a route
    without a body, some bytes to add."""
    if call.body is None:
        return "ข้อมูลที่แทรกเข้ามา".encode()
    other = (await ROUTES[route].honest(world)).body
    assert other is not None
    assert other != call.body
    if call.content_type == ENVELOPE_TYPE:
        assert len(other) == len(call.body), "a swapped-in envelope of another length fails earlier"
    return other


async def body_altered_after_signing(world: World, call: Call, swap: bytes) -> Reply:
    """The signed Content-Digest stays; the body is another one (or a body added to a GET)."""
    return await _send(world, call, signed_call(world, call), body=swap)


async def digest_replaced_with_the_body(world: World, call: Call, swap: bytes) -> Reply:
    """Body and Content-Digest both replaced: the signature no longer covers the digest sent."""
    headers = {**signed_call(world, call), "Content-Digest": httpsig.content_digest(swap)}
    return await _send(world, call, headers, body=swap)


async def path_altered(world: World, call: Call, swap: bytes) -> Reply:
    decoy = "/v1/directory" if call.path != "/v1/directory" else "/v1/inbox"
    return await _send(world, call, signed_call(world, dataclasses.replace(call, path=decoy)))


async def query_altered(world: World, call: Call, swap: bytes) -> Reply:
    target = call.target + ("&" if call.query else "?") + "after=1"
    return await _send(world, call, signed_call(world, call), target=target)


async def method_altered(world: World, call: Call, swap: bytes) -> Reply:
    other_method = "POST" if call.method == "GET" else "GET"
    return await _send(world, call, signed_call(world, dataclasses.replace(call, method=other_method)))


AUTH_ATTACKS: dict[str, Attack] = {
    attack.__name__: attack
    for attack in (
        unsigned,
        key_not_in_the_directory,
        key_chaining_to_an_unpinned_root,
        revoked_key,
        expired_certificate,
        not_yet_valid_certificate,
        stale_created,
        future_created,
        signed_for_another_authority,
        body_altered_after_signing,
        digest_replaced_with_the_body,
        path_altered,
        query_altered,
        method_altered,
    )
}

BODY_SWAPS = {"body_altered_after_signing", "digest_replaced_with_the_body"}
AUTH_CASES = [(route, attack) for route in ROUTES for attack in AUTH_ATTACKS]
ROLE_CASES = [
    (route, role) for route, case in ROUTES.items() for role in ROLE_ACTORS if role not in case.roles
]


# --- the attacks on other agencies' envelopes, inboxes and receipts ------------------------

CrossAttack = Callable[[World], Awaitable[Reply]]


async def _get_as(world: World, agency: str, path: str) -> Reply:
    call = Call("GET", path.format(sent=world.sent.envelope_id.hex()), agency)
    return await send_honestly(world, call)


async def outsider_reads_the_status(world: World) -> Reply:
    return await _get_as(world, "LA-LWU", "/v1/envelopes/{sent}")


async def outsider_reads_the_header(world: World) -> Reply:
    return await _get_as(world, "LA-LWU", "/v1/inbox/{sent}/header")


async def outsider_downloads_a_part(world: World) -> Reply:
    return await _get_as(world, "LA-LWU", "/v1/inbox/{sent}/parts/1")


async def _post(world: World, agency: str, path: str, body: bytes, content_type: str) -> Reply:
    return await send_honestly(world, Call("POST", path, agency, body=body, content_type=content_type))


async def outsider_posts_the_recipients_receipt(world: World) -> Reply:
    receipt = recipient_receipt(
        world.identity("LA-MOLSW"), world.sent, ReceiptKind.VERIFIED, world.clock.now()
    )
    return await _post(world, "LA-LWU", "/v1/receipts", receipt, RECEIPT_TYPE)


async def sender_posts_a_receipt_as_the_recipient(world: World) -> Reply:
    receipt = recipient_receipt(
        world.identity("LA-MOLSW"),
        world.sent,
        ReceiptKind.REJECTED,
        world.clock.now(),
        reason=RejectReason.POLICY,
    )
    return await _post(world, "TH-ATPD", "/v1/receipts", receipt, RECEIPT_TYPE)


async def outsider_receipt_for_an_envelope_not_addressed_to_it(world: World) -> Reply:
    receipt = recipient_receipt(world.identity("LA-LWU"), world.sent, ReceiptKind.VERIFIED, world.clock.now())
    return await _post(world, "LA-LWU", "/v1/receipts", receipt, RECEIPT_TYPE)


async def _post_batch(world: World, agency: str, receipt: bytes) -> Reply:
    """One receipt in a batch: the request succeeds, and its one result is the receipt's answer."""
    body = receipt_batch(receipt)
    return await _post(world, agency, "/v1/receipts/batch", body, RECEIPT_BATCH_TYPE)


async def outsider_batches_the_recipients_receipt(world: World) -> Reply:
    receipt = recipient_receipt(
        world.identity("LA-MOLSW"), world.sent, ReceiptKind.VERIFIED, world.clock.now()
    )
    return await _post_batch(world, "LA-LWU", receipt)


async def sender_batches_a_receipt_as_the_recipient(world: World) -> Reply:
    receipt = recipient_receipt(
        world.identity("LA-MOLSW"),
        world.sent,
        ReceiptKind.REJECTED,
        world.clock.now(),
        reason=RejectReason.POLICY,
    )
    return await _post_batch(world, "TH-ATPD", receipt)


async def outsider_batches_a_receipt_for_an_envelope_not_addressed_to_it(world: World) -> Reply:
    receipt = recipient_receipt(world.identity("LA-LWU"), world.sent, ReceiptKind.VERIFIED, world.clock.now())
    return await _post_batch(world, "LA-LWU", receipt)


async def outsider_traces_the_envelope_in_the_audit_log(world: World) -> Reply:
    return await _get_as(world, "LA-LWU", "/v1/audit/envelopes/{sent}")


async def outsider_asks_for_the_envelopes_tlog_proof(world: World) -> Reply:
    return await _get_as(world, "LA-LWU", "/v1/audit/envelopes/{sent}/tlog-proof")


async def outsider_asks_for_the_inclusion_of_the_envelopes_entry(world: World) -> Reply:
    trace = (await _get_as(world, "TH-ATPD", "/v1/audit/envelopes/{sent}")).json()
    index = min(entry["index"] for entry in trace["entries"])
    call = Call("GET", "/v1/audit/proof/inclusion", "LA-LWU", f"index={index}&size={trace['size']}")
    return await send_honestly(world, call)


async def agency_registers_anothers_encryption_key(world: World) -> Reply:
    call = await ROUTES["register_encryption_key"].honest(world)
    assert call.body is not None
    return await _post(world, "TH-DSDW", call.path, call.body, ENCRYPTION_KEY_TYPE)


async def agency_uploads_an_envelope_sealed_by_another(world: World) -> Reply:
    sealed = world.broker.seal("TH-ATPD", ["LA-MOLSW"])
    return await _post(world, "TH-DSDW", "/v1/envelopes", sealed.body, ENVELOPE_TYPE)


CROSS_AGENCY: dict[str, list[tuple[CrossAttack, int, str]]] = {
    "envelope_status": [(outsider_reads_the_status, 404, "not_found")],
    "inbox_header": [(outsider_reads_the_header, 404, "not_found")],
    "inbox_part": [(outsider_downloads_a_part, 404, "not_found")],
    "post_receipt": [
        (outsider_posts_the_recipients_receipt, 403, "forbidden"),
        (sender_posts_a_receipt_as_the_recipient, 403, "forbidden"),
        (outsider_receipt_for_an_envelope_not_addressed_to_it, 404, "not_found"),
    ],
    "post_receipts": [
        (outsider_batches_the_recipients_receipt, 403, "forbidden"),
        (sender_batches_a_receipt_as_the_recipient, 403, "forbidden"),
        (outsider_batches_a_receipt_for_an_envelope_not_addressed_to_it, 404, "not_found"),
    ],
    "register_encryption_key": [(agency_registers_anothers_encryption_key, 403, "forbidden")],
    "submit_envelope": [(agency_uploads_an_envelope_sealed_by_another, 403, "forbidden")],
    "audit_envelope": [(outsider_traces_the_envelope_in_the_audit_log, 404, "not_found")],
    "audit_envelope_tlog_proof": [(outsider_asks_for_the_envelopes_tlog_proof, 404, "not_found")],
    "audit_inclusion_proof": [(outsider_asks_for_the_inclusion_of_the_envelopes_entry, 403, "forbidden")],
}
# Routes that take no other agency's id: they answer about the caller only (checked below), or
# hold nothing private to one agency (public, hashes only, or for operators and auditors only).
CALLER_SCOPED = {"inbox", "receipt_feed", "events"}
NOTHING_PRIVATE = {
    "directory",
    "directory_agency",
    "register_certificate",
    "register_revocations",
    "audit_checkpoint",
    "audit_consistency_proof",
    "audit_tile",
    "audit_entries",
}
CROSS_CASES = [
    (route, attack, status, code) for route, cases in CROSS_AGENCY.items() for attack, status, code in cases
]


# --- the tests --------------------------------------------------------------------------------


async def test_every_v1_route_is_in_the_security_matrix(world: World) -> None:
    app = world.broker.app
    assert app is not None
    served: dict[str, tuple[str, str]] = {}
    unsigned: set[str] = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = str(info.get("formatter", info.get("path", "")))
        name = route.name or f"unnamed {route.method} {path}"
        if path == "/v1" or path.startswith("/v1/"):
            assert name not in served, f"{name} serves two methods or paths: give each its own entry"
            served[name] = (route.method, path)
        else:
            unsigned.add(name)
    assert served == {name: (case.method, case.path) for name, case in ROUTES.items()}
    assert unsigned == UNSIGNED_ROUTES
    assert set(CROSS_AGENCY) | CALLER_SCOPED | NOTHING_PRIVATE == set(ROUTES)


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_the_honest_request_of_every_route_succeeds(world: World, route: str) -> None:
    call = await ROUTES[route].honest(world)
    reply = await send_honestly(world, call)
    assert reply.status == ROUTES[route].success, reply.body[:300]


@pytest.mark.parametrize(("route", "attack"), AUTH_CASES)
async def test_an_unauthenticated_request_is_refused_and_changes_nothing(
    world: World, route: str, attack: str
) -> None:
    call = await ROUTES[route].honest(world)
    swap = await another_body(world, route, call) if attack in BODY_SWAPS else b""
    before = await snapshot(world)
    reply = await AUTH_ATTACKS[attack](world, call, swap)
    assert_problem(reply, 401, "unauthenticated")
    after = await snapshot(world)
    assert before.changes(after, nonces=False) == []
    # A body that fails its signed Content-Digest is refused after the signature and its nonce
    # were accepted (docs/http-api.md, steps 3 and 4): that nonce is used, nothing else.
    used = attack == "body_altered_after_signing" and call.body is not None
    assert after.nonces == before.nonces + used


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_replayed_request_is_refused_and_changes_nothing(world: World, route: str) -> None:
    call = await ROUTES[route].honest(world)
    headers = signed_call(world, call)
    first = await _send(world, call, headers)
    assert first.status == ROUTES[route].success, first.body[:300]
    before = await snapshot(world)
    replay = await _send(world, call, headers)
    assert_problem(replay, 401, "unauthenticated")
    assert before.changes(await snapshot(world), nonces=True) == []


@pytest.mark.parametrize(("route", "role"), ROLE_CASES)
async def test_a_caller_without_the_role_is_forbidden_and_changes_nothing(
    world: World, route: str, role: Role
) -> None:
    call = await ROUTES[route].honest(world)
    before = await snapshot(world)
    actor = ROLE_ACTORS[role]
    reply = await send_honestly(world, dataclasses.replace(call, caller=actor))
    assert_problem(reply, 403, "forbidden")
    assert before.changes(await snapshot(world), nonces=False) == []


@pytest.mark.parametrize(("route", "attack", "status", "code"), CROSS_CASES)
async def test_another_agencys_envelope_inbox_or_receipts_are_out_of_reach(
    world: World, route: str, attack: CrossAttack, status: int, code: str
) -> None:
    before = await snapshot(world)
    reply = await attack(world)
    if route == "post_receipts":
        # A batch refuses each receipt on its own: the request succeeds, its one result is the
        # refusal (problem details without a request id).
        assert reply.status == 200, reply.body[:300]
        (result,) = reply.json()["results"]
        assert (result["status"], result["code"]) == (status, code), result
        assert result["type"] == f"urn:casebridge:problem:{code}"
    else:
        assert_problem(reply, status, code)
    assert before.changes(await snapshot(world), nonces=False) == []


async def test_listings_show_only_the_callers_own_envelopes_and_receipts(world: World) -> None:
    sent = world.sent.envelope_id.hex()
    recipient = (await _get_as(world, "LA-MOLSW", "/v1/inbox")).json()["items"]
    assert sent in {item["envelope_id"] for item in recipient}
    for outsider in ("LA-LWU", "TH-DSDW"):
        assert (await _get_as(world, outsider, "/v1/inbox")).json()["items"] == []
        assert (await _get_as(world, outsider, "/v1/receipts")).json()["items"] == []
    own_feed = (await _get_as(world, "TH-ATPD", "/v1/receipts")).json()["items"]
    assert sent in {item["envelope_id"] for item in own_feed}
    assert (await _get_as(world, "LA-MOLSW", "/v1/receipts")).json()["items"] == []


async def test_a_websocket_opens_only_for_a_valid_signature(world: World) -> None:
    broker = world.broker
    honest = broker.client("LA-MOLSW")
    socket = await honest.websocket()
    assert not socket.closed
    await socket.close()
    for signer in (None, world.attackers["stranger"], world.attackers["revoked"]):
        key = None if signer is None else signer.signing_key
        client = SignedClient(broker.session, broker.url, broker.settings.authority, key, world.clock.now)
        before = await snapshot(world)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.websocket()
        assert refused.value.status == 401
        assert before.changes(await snapshot(world), nonces=True) == []


@pytest.mark.parametrize(
    "path",
    [
        "/v1/envelopes/{id}",
        "/v1/inbox/{id}/header",
        "/v1/inbox/{id}/parts/1",
        "/v1/audit/envelopes/{id}",
        "/v1/audit/envelopes/{id}/tlog-proof",
    ],
)
async def test_an_outsider_cannot_tell_another_agencys_envelope_from_none(world: World, path: str) -> None:
    answers = []
    for envelope_id in (world.sent.envelope_id.hex(), secrets.token_hex(16)):
        reply = await _get_as(world, "LA-LWU", path.format(id=envelope_id))
        assert_problem(reply, 404, "not_found")
        answers.append({k: v for k, v in reply.problem.items() if k != "request_id"})
    assert answers[0] == answers[1]
