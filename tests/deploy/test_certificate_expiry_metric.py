"""`casebridge_certificate_expiry_timestamp_seconds{kind}`, which the certificate alerts of
deploy/prometheus read, scraped from a real broker: the broker's own certificate, the root
that expires first, and the first agency left without a valid certificate, moving on once a
certificate has expired."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from keys import lifecycle
from protocol.certificate import Role
from tests.integration.broker_harness import ManualClock, RunningBroker, start_broker
from tests.integration.pki import Pki
from tests.integration.storage_engines import START_TIME

DAY = 86400
METRIC = "casebridge_certificate_expiry_timestamp_seconds"


def certify_for(pki: Pki, agency_id: str, name: str, valid_days: int) -> None:
    agency = lifecycle.create_agency(agency_id, name, pki.now)
    cert = pki.certify(lifecycle.agency_request(agency), (Role.AGENCY,), agency_id[:2], valid_days=valid_days)
    pki.agencies[agency_id] = lifecycle.import_certificate(
        agency, cert, pki.root_cert(agency_id[:2]), pki.now
    )


async def expiries(broker: RunningBroker) -> dict[str, float]:
    reply = await broker.client(None).get("/metrics")
    assert reply.status == 200
    (family,) = (f for f in text_string_to_metric_families(reply.body.decode()) if f.name == METRIC)
    return {sample.labels["kind"]: sample.value for sample in family.samples}


async def test_the_expiry_gauge_names_the_certificate_that_runs_out_first(tmp_path: Path) -> None:
    clock = ManualClock(START_TIME)
    pki = Pki.create(clock.now())
    certify_for(pki, "TH-SHORT", "ศูนย์ทดลอง สมชาย ใจดี", valid_days=30)
    broker_cert = pki.broker_identity().certificate
    assert broker_cert is not None
    async with start_broker(tmp_path, pki, clock) as broker:
        await broker.enroll("TH-ATPD", "LA-MOLSW", "TH-SHORT")
        found = await expiries(broker)
        assert found["broker"] == broker_cert.not_after
        assert found["root"] == min(r.certificate.not_after for r in pki.roots.values())
        assert found["agency"] == START_TIME + 30 * DAY
        clock.advance(31 * DAY)
        later = await expiries(broker)
        year = pki["TH-ATPD"].certificate
        assert year is not None
        assert later["agency"] == year.not_after > START_TIME + 30 * DAY
