"""The audit log over HTTP: `/v1/audit/...` (docs/audit-log.md, HTTP).

Signed requests like every `/v1` route. Roles (`ROUTE_ROLES`, merged into the authentication
table): auditors and operators read everything; agencies read the checkpoint, consistency proofs,
and inclusion proofs and traces of their own envelopes (`broker.audit.proofs` decides). Bad
sizes, indices and tile paths are problem+json input errors.
"""

from __future__ import annotations

from aiohttp import web

from broker.audit.proofs import EnvelopeTrace
from broker.audit.service import AuditLogService
from broker.web.params import b64, envelope_id
from broker.web.state import caller
from protocol.certificate import Role
from protocol.errors import InvalidField
from protocol.tiles import parse_tile_path

AUDIT = web.AppKey("casebridge_audit", AuditLogService)
TEXT = "text/plain"
BINARY = "application/octet-stream"
LOG_SIZE_HEADER = "CaseBridge-Log-Size"

_WHOLE_LOG = frozenset({Role.AUDITOR, Role.OPERATOR})
_ANY_PARTY = frozenset({Role.AUDITOR, Role.OPERATOR, Role.AGENCY})
ROUTE_ROLES: dict[str, frozenset[Role]] = {
    "audit_checkpoint": _ANY_PARTY,
    "audit_tile": _WHOLE_LOG,
    "audit_inclusion_proof": _ANY_PARTY,
    "audit_consistency_proof": _ANY_PARTY,
    "audit_envelope": _ANY_PARTY,
    "audit_envelope_tlog_proof": _ANY_PARTY,
    "audit_entries": _WHOLE_LOG,
}


def _service(request: web.Request) -> AuditLogService:
    return request.app[AUDIT]


def _required_int(request: web.Request, name: str) -> int:
    text = request.query.get(name)
    if text is None or not text.isascii() or not text.isdigit() or len(text) > 19:
        raise InvalidField(name, "a whole number from 0 to 2**63 - 1")
    return int(text)


async def checkpoint(request: web.Request) -> web.Response:
    published = await _service(request).reader.published()
    return web.Response(body=published.note, content_type=TEXT, charset="utf-8")


async def tile(request: web.Request) -> web.Response:
    path = parse_tile_path("tile/" + request.match_info["tail"])
    data = await _service(request).reader.tile(path)
    return web.Response(body=data, content_type=BINARY)


async def inclusion_proof(request: web.Request) -> web.Response:
    index, size = _required_int(request, "index"), _required_int(request, "size")
    leaf_hash, proof = await _service(request).reader.inclusion(caller(request), index, size)
    return web.json_response(
        {"index": index, "size": size, "leaf_hash": b64(leaf_hash), "proof": [b64(h) for h in proof]}
    )


async def consistency_proof(request: web.Request) -> web.Response:
    first, second = _required_int(request, "from"), _required_int(request, "to")
    proof = await _service(request).reader.consistency(first, second)
    return web.json_response({"from": first, "to": second, "proof": [b64(h) for h in proof]})


def trace_json(trace: EnvelopeTrace) -> dict[str, object]:
    return {
        "checkpoint": trace.published.note.decode("utf-8"),
        "size": trace.published.size,
        "entries": [
            {
                "index": e.index,
                "kind": e.kind,
                "leaf": b64(e.leaf),
                "proof": None if e.proof is None else [b64(h) for h in e.proof],
            }
            for e in trace.entries
        ],
    }


async def envelope(request: web.Request) -> web.Response:
    trace = await _service(request).reader.envelope(caller(request), envelope_id(request))
    return web.json_response(trace_json(trace))


async def envelope_tlog_proof(request: web.Request) -> web.Response:
    proof = await _service(request).reader.tlog_proof(caller(request), envelope_id(request))
    return web.Response(body=proof, content_type=TEXT, charset="utf-8")


async def entries(request: web.Request) -> web.Response:
    start, count = _required_int(request, "start"), _required_int(request, "count")
    data, size = await _service(request).reader.entries(start, count)
    return web.Response(body=data, content_type=BINARY, headers={LOG_SIZE_HEADER: str(size)})


def add_routes(app: web.Application) -> None:
    get = app.router.add_get
    get("/v1/audit/checkpoint", checkpoint, name="audit_checkpoint", allow_head=False)
    get("/v1/audit/tile/{tail:.+}", tile, name="audit_tile", allow_head=False)
    get("/v1/audit/proof/inclusion", inclusion_proof, name="audit_inclusion_proof", allow_head=False)
    get("/v1/audit/proof/consistency", consistency_proof, name="audit_consistency_proof", allow_head=False)
    get("/v1/audit/envelopes/{envelope_id}", envelope, name="audit_envelope", allow_head=False)
    get(
        "/v1/audit/envelopes/{envelope_id}/tlog-proof",
        envelope_tlog_proof,
        name="audit_envelope_tlog_proof",
        allow_head=False,
    )
    get("/v1/audit/entries", entries, name="audit_entries", allow_head=False)
