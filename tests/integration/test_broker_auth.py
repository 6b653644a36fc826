"""Who may do what: signatures, replay, altered bodies, revoked keys, roles, rate limits,
problem details, and the unsigned operational endpoints."""

from __future__ import annotations

import re

from prometheus_client.parser import text_string_to_metric_families

from protocol import httpsig
from tests.integration.broker_harness import (
    CERTIFICATE_TYPE,
    ENCRYPTION_KEY_TYPE,
    ENVELOPE_TYPE,
    REVOCATION_LIST_TYPE,
    BrokerFactory,
    RunningBroker,
)
from tests.integration.signed_http import SignedClient

PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id"}


async def test_an_unsigned_request_is_refused_and_changes_nothing(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    audit_size = await broker.store.audit.size()
    reply = await broker.client(None).post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)
    assert reply.status == 401
    problem = reply.problem
    assert set(problem) >= PROBLEM_KEYS
    assert (problem["code"], problem["type"]) == ("unauthenticated", "urn:casebridge:problem:unauthenticated")
    assert problem["request_id"] == reply.headers["X-Request-Id"]
    assert await broker.store.audit.size() == audit_size
    assert await broker.store.delivery.envelope(sealed.envelope_id) is None
    for path in ("/v1/directory", "/v1/inbox", "/v1/receipts", "/v1/no-such-route"):
        assert (await broker.client(None).get(path)).status == 401


async def test_a_replayed_request_is_refused(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    client = broker.client("TH-ATPD")
    url, headers = client.prepare("POST", "/v1/envelopes", body=sealed.body, content_type=ENVELOPE_TYPE)
    first = await client.raw_request("POST", url, headers, sealed.body)
    replay = await client.raw_request("POST", url, headers, sealed.body)
    assert (first.status, replay.status) == (201, 401)
    url, headers = client.prepare("GET", "/v1/inbox")
    assert (await client.raw_request("GET", url, headers)).status == 200
    assert (await client.raw_request("GET", url, headers)).status == 401


async def test_a_valid_envelope_swapped_in_after_signing_is_refused_before_commit(
    broker: RunningBroker,
) -> None:
    signed_for = broker.seal("TH-ATPD", ["LA-MOLSW"])
    swapped_in = broker.seal("TH-ATPD", ["LA-MOLSW"])
    assert len(swapped_in.body) == len(signed_for.body)
    client = broker.client("TH-ATPD")
    url, headers = client.prepare("POST", "/v1/envelopes", body=signed_for.body, content_type=ENVELOPE_TYPE)
    reply = await client.raw_request("POST", url, headers, swapped_in.body)
    assert (reply.status, reply.problem["code"]) == (401, "unauthenticated")
    assert await broker.store.delivery.envelope(swapped_in.envelope_id) is None
    assert (await broker.client("LA-MOLSW").get("/v1/inbox")).json()["items"] == []


async def test_a_small_body_must_match_its_content_digest(broker: RunningBroker) -> None:
    key = broker.pki["TH-ATPD"].encryption_keys[0].statement.raw
    client = broker.client("TH-ATPD")
    url, headers = client.prepare(
        "POST", "/v1/directory/encryption-keys", body=key, content_type=ENCRYPTION_KEY_TYPE
    )
    headers["Content-Digest"] = httpsig.content_digest(key + b"x")
    assert (await client.raw_request("POST", url, headers, key)).status == 401


async def test_a_signature_for_another_authority_or_time_is_refused(broker: RunningBroker) -> None:
    identity = broker.pki["TH-ATPD"]
    elsewhere = SignedClient(
        broker.session, broker.url, "broker.example:8443", identity.signing_key, broker.clock.now
    )
    assert (await elsewhere.get("/v1/directory")).status == 401
    stale = SignedClient(
        broker.session,
        broker.url,
        broker.settings.authority,
        identity.signing_key,
        lambda: broker.clock.now() - 301,
    )
    assert (await stale.get("/v1/directory")).status == 401
    future = SignedClient(
        broker.session,
        broker.url,
        broker.settings.authority,
        identity.signing_key,
        lambda: broker.clock.now() + 301,
    )
    assert (await future.get("/v1/directory")).status == 401


async def test_an_unregistered_or_expired_key_is_refused(broker: RunningBroker) -> None:
    stranger = broker.pki.new_agency("TH-STRANGER", "หน่วยงานที่ไม่รู้จัก")
    assert (await broker.client(stranger).get("/v1/directory")).status == 401
    broker.clock.advance(366 * 86_400)
    reply = await broker.client("TH-ATPD").get("/v1/directory")
    assert (reply.status, reply.problem["code"]) == (401, "unauthenticated")


async def test_a_revoked_key_is_refused_from_its_revocation_time(broker: RunningBroker) -> None:
    revoked_at = broker.clock.now() + 10
    crl = broker.pki.revoke("TH-DSDW", revoked_at)
    operator = broker.client("TH-OPERATOR")
    reply = await operator.post("/v1/directory/revocations", crl.raw, REVOCATION_LIST_TYPE)
    assert (reply.status, reply.json()["number"]) == (201, crl.number)
    assert (await operator.post("/v1/directory/revocations", crl.raw, REVOCATION_LIST_TYPE)).status == 200
    assert (await broker.client("TH-DSDW").get("/v1/inbox")).status == 200
    broker.clock.advance(10)
    assert (await broker.client("TH-DSDW").get("/v1/inbox")).status == 401
    assert (await broker.client("TH-ATPD").get("/v1/inbox")).status == 200
    sealed = broker.seal("TH-ATPD", ["TH-DSDW"])
    assert (await broker.submit("TH-ATPD", sealed)).status == 400
    directory = (await broker.client("TH-ATPD").get("/v1/directory")).json()
    assert len(directory["revocations"]) == 1


async def test_an_older_revocation_list_cannot_replace_a_newer_one(broker: RunningBroker) -> None:
    first = broker.pki.revoke("TH-DSDW", broker.clock.now() + 100)
    second = broker.pki.revoke("TH-ATPD", broker.clock.now() + 100)
    operator = broker.client("TH-OPERATOR")
    assert (await operator.post("/v1/directory/revocations", second.raw, REVOCATION_LIST_TYPE)).status == 201
    reply = await operator.post("/v1/directory/revocations", first.raw, REVOCATION_LIST_TYPE)
    assert (reply.status, reply.problem["code"]) == (409, "conflict")


async def test_roles_decide_who_registers_and_who_sends(broker: RunningBroker) -> None:
    newcomer = broker.pki.new_agency("LA-NEWCOMER", "ອົງການໃໝ່")
    assert newcomer.certificate is not None
    by_agency = await broker.client("TH-ATPD").post(
        "/v1/directory/certificates", newcomer.certificate.raw, CERTIFICATE_TYPE
    )
    assert (by_agency.status, by_agency.problem["code"]) == (403, "forbidden")
    operator = broker.client("TH-OPERATOR")
    first = await operator.post("/v1/directory/certificates", newcomer.certificate.raw, CERTIFICATE_TYPE)
    again = await operator.post("/v1/directory/certificates", newcomer.certificate.raw, CERTIFICATE_TYPE)
    assert (first.status, again.status) == (201, 200)
    assert first.json()["agency_id"] == "LA-NEWCOMER"
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    assert (await operator.post("/v1/envelopes", sealed.body, ENVELOPE_TYPE)).status == 403
    statement = newcomer.encryption_keys[0].statement.raw
    by_other = await broker.client("TH-ATPD").post(
        "/v1/directory/encryption-keys", statement, ENCRYPTION_KEY_TYPE
    )
    assert by_other.status == 403
    own = await broker.client(newcomer).post("/v1/directory/encryption-keys", statement, ENCRYPTION_KEY_TYPE)
    assert own.status == 201
    listed = (await broker.client("TH-ATPD").get("/v1/directory/agencies/LA-NEWCOMER")).json()
    assert listed["certificate"]
    assert len(listed["encryption_keys"]) == 1
    assert (await broker.client("TH-ATPD").get("/v1/directory/agencies/LA-NOBODY")).status == 404


async def test_a_certificate_from_an_unpinned_root_is_refused(broker: RunningBroker) -> None:
    from keys import lifecycle
    from protocol.certificate import Role

    rogue_root = lifecycle.create_root("TH", "ราก ปลอม", broker.clock.now())
    agency = lifecycle.create_agency("TH-ROGUE", "หน่วยงานปลอม", broker.clock.now())
    _, cert = lifecycle.certify(
        rogue_root, lifecycle.agency_request(agency), [Role.AGENCY], broker.clock.now()
    )
    reply = await broker.client("TH-OPERATOR").post("/v1/directory/certificates", cert.raw, CERTIFICATE_TYPE)
    assert (reply.status, reply.problem["code"]) == (422, "untrusted_certificate")
    assert "rogue" not in reply.problem["detail"].lower()


async def test_an_agency_over_its_rate_limit_is_told_when_to_retry(broker_factory: BrokerFactory) -> None:
    async with broker_factory(enroll=(), rate_limit_per_minute=6, rate_limit_burst=2) as broker:
        client = broker.client("TH-OPERATOR")
        statuses = [(await client.get("/v1/directory")).status for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = await client.get("/v1/directory")
        assert limited.problem["code"] == "rate_limited"
        assert int(limited.headers["Retry-After"]) >= 1


async def test_problem_details_name_the_field_at_fault(broker: RunningBroker) -> None:
    client = broker.client("TH-ATPD")
    bad_id = await client.get("/v1/envelopes/not-hex")
    assert (bad_id.status, bad_id.problem["field"], bad_id.problem["code"]) == (
        400,
        "envelope_id",
        "invalid_field",
    )
    bad_wait = await client.get("/v1/inbox", query={"wait": 61})
    assert (bad_wait.status, bad_wait.problem["field"]) == (400, "wait")
    missing = await client.get("/v1/no-such-route")
    assert (missing.status, missing.problem["code"]) == (404, "not_found")
    reply = await client.request("GET", "/v1/inbox", headers={"X-Request-Id": "case-2026-ทดสอบ"})
    assert re.fullmatch(r"[0-9a-f]{24}", reply.headers["X-Request-Id"])
    echoed = await client.request("GET", "/v1/inbox", headers={"X-Request-Id": "trace-0001-abcd"})
    assert echoed.headers["X-Request-Id"] == "trace-0001-abcd"


async def test_health_readiness_and_metrics_need_no_signature(broker: RunningBroker) -> None:
    sealed = broker.seal("TH-ATPD", ["LA-MOLSW"])
    await broker.submit("TH-ATPD", sealed)
    await broker.client(None).get("/v1/inbox")
    unsigned = broker.client(None)
    assert (await unsigned.get("/healthz")).json() == {"status": "ok"}
    assert (await unsigned.get("/readyz")).json() == {"status": "ready"}
    text = (await unsigned.get("/metrics")).body.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("casebridge_envelopes_submitted_total", ())] == 1
    assert samples[("casebridge_receipts_total", (("kind", "accepted"),))] == 1
    assert samples[("casebridge_inbox_depth", ())] == 1
    assert samples[("casebridge_authentication_failures_total", ())] >= 1
    assert samples[("casebridge_refusals_total", (("code", "unauthenticated"),))] >= 1
    assert any(name == "casebridge_request_duration_seconds_count" for name, _ in samples)
