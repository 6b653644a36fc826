"""Unsigned operational endpoints: `/healthz` (the process answers), `/readyz` (storage answers
and its schema is current; 503 otherwise), `/metrics` (Prometheus text, this app's registry)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from broker.web.state import handlers
from protocol.errors import CaseBridgeError, StorageUnavailable


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    try:
        await handlers(request).services.store.check_ready()
    except CaseBridgeError as e:
        raise StorageUnavailable(reason=f"not ready: {e.reason}") from e
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    registry = handlers(request).services.metrics.registry
    response = web.Response(body=generate_latest(registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/healthz", healthz, name="healthz", allow_head=False)
    app.router.add_get("/readyz", readyz, name="readyz", allow_head=False)
    app.router.add_get("/metrics", metrics, name="metrics", allow_head=False)
