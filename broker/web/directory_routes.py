"""Directory handlers: everything public, and the registrations operators and agencies make."""

from __future__ import annotations

from aiohttp import web

from broker.web.params import b64, require_content_type
from broker.web.state import body, caller, handlers
from protocol.certificate import AGENCY_ID
from protocol.errors import NotFound

CERTIFICATE_TYPE = "application/vnd.casebridge.certificate"
REVOCATION_LIST_TYPE = "application/vnd.casebridge.revocation-list"
ENCRYPTION_KEY_TYPE = "application/vnd.casebridge.encryption-key"


async def directory(request: web.Request) -> web.Response:
    s = handlers(request).services
    now = s.clock.now()
    d = s.directory
    return web.json_response(
        {
            "roots": [b64(r.raw) for r in d.roots],
            "certificates": [b64(c.raw) for c in d.certificates()],
            "encryption_keys": [b64(k.raw) for k in d.encryption_keys(now)],
            "revocations": [b64(crl.raw) for crl in d.revocation_lists()],
            "broker": b64(s.signer.certificate.raw),
        }
    )


async def directory_agency(request: web.Request) -> web.Response:
    s = handlers(request).services
    now = s.clock.now()
    agency_id = request.match_info["agency_id"]
    cert = s.directory.current_certificate(agency_id, now) if AGENCY_ID.fullmatch(agency_id) else None
    if cert is None:
        raise NotFound(reason="no agency with a valid certificate under this id")
    keys = s.directory.encryption_keys_of(agency_id, now)
    return web.json_response({"certificate": b64(cert.raw), "encryption_keys": [b64(k.raw) for k in keys]})


async def register_certificate(request: web.Request) -> web.Response:
    require_content_type(request, CERTIFICATE_TYPE)
    s = handlers(request).services
    cert, created = await s.directory.register_certificate(
        body(request), s.clock.now(), by=caller(request).agency_id
    )
    return web.json_response(
        {"agency_id": cert.agency_id, "key_id": cert.key_id.hex(), "roles": [str(r) for r in cert.roles]},
        status=201 if created else 200,
    )


async def register_revocations(request: web.Request) -> web.Response:
    require_content_type(request, REVOCATION_LIST_TYPE)
    s = handlers(request).services
    crl, created = await s.directory.register_revocation_list(
        body(request), s.clock.now(), by=caller(request).agency_id
    )
    return web.json_response(
        {"country": crl.country, "number": crl.number, "revoked": len(crl.entries)},
        status=201 if created else 200,
    )


async def register_encryption_key(request: web.Request) -> web.Response:
    require_content_type(request, ENCRYPTION_KEY_TYPE)
    s = handlers(request).services
    statement, created = await s.directory.register_encryption_key(
        body(request), caller(request), s.clock.now()
    )
    return web.json_response(
        {
            "agency_id": statement.agency_id,
            "key_id": statement.key_id.hex(),
            "not_after": statement.not_after,
        },
        status=201 if created else 200,
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/directory", directory, name="directory", allow_head=False)
    app.router.add_get(
        "/v1/directory/agencies/{agency_id}", directory_agency, name="directory_agency", allow_head=False
    )
    app.router.add_post("/v1/directory/certificates", register_certificate, name="register_certificate")
    app.router.add_post("/v1/directory/revocations", register_revocations, name="register_revocations")
    app.router.add_post(
        "/v1/directory/encryption-keys", register_encryption_key, name="register_encryption_key"
    )
