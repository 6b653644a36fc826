"""docs/openapi.yaml agrees with the broker it describes.

The broker's app is built with `broker.app.create_app` (on a real, empty SQLite store) and its
router is compared with the document both ways: every registered route is documented with the
same method, path and operation id (the route's name), and every documented operation is a
route. Each signed operation lists the roles the broker enforces and requires the signature
headers; request media types and the error codes are the broker's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.app import create_app
from broker.storage.sqlite import open_sqlite_store
from broker.web import delivery_routes, directory_routes
from broker.web.auth import ROUTE_ROLES
from protocol.errors import ErrorCode
from tests.integration.broker_harness import ManualClock, broker_settings
from tests.integration.pki import Pki
from tests.integration.storage_engines import START_TIME

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.yaml"
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
REQUEST_MEDIA_TYPES = {
    "submit_envelope": delivery_routes.ENVELOPE_TYPE,
    "post_receipt": delivery_routes.RECEIPT_TYPE,
    "post_receipts": delivery_routes.RECEIPT_BATCH_TYPE,
    "register_certificate": directory_routes.CERTIFICATE_TYPE,
    "register_revocations": directory_routes.REVOCATION_LIST_TYPE,
    "register_encryption_key": directory_routes.ENCRYPTION_KEY_TYPE,
}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    with DOCUMENT.open(encoding="utf-8") as f:
        loaded: dict[str, Any] = yaml.safe_load(f)
    return loaded


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[web.Application]:
    clock = ManualClock(START_TIME)
    pki = Pki.create(clock.now())
    settings = broker_settings(tmp_path, pki, 0)
    store = await open_sqlite_store(settings.database_file, settings.blob_dir, now=clock.now())
    try:
        yield create_app(
            settings,
            store=store,
            clock=clock,
            registry=CollectorRegistry(),
            broker_identity=pki.broker_identity(),
        )
    finally:
        await store.close()


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def resolve(document: dict[str, Any], node: Any) -> Any:
    """Follow a local `$ref` ("#/components/...")."""
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        node = document
        for part in ref[2:].split("/"):
            node = node[part]
    return node


def all_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from all_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_refs(value)


def header_parameters(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, dict[str, Any]]:
    params = (resolve(document, p) for p in operation.get("parameters", []))
    return {p["name"].lower(): p for p in params if p["in"] == "header"}


async def test_every_broker_route_is_documented_with_its_method_and_name(
    app: web.Application, document: dict[str, Any]
) -> None:
    registered = {
        (route.method, route.resource.canonical): route.name
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }
    documented = {(method, path): op.get("operationId") for method, path, op in operations(document)}
    assert sorted(set(registered) - set(documented)) == [], "routes missing from docs/openapi.yaml"
    assert sorted(set(documented) - set(registered)) == [], "documented operations the broker lacks"
    assert documented == registered


def test_the_document_is_openapi_3_1_and_every_reference_resolves(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1.")
    for ref in set(all_refs(document)):
        assert resolve(document, {"$ref": ref}) is not None, ref
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids))


def test_signed_operations_require_the_signature_headers_and_name_the_broker_s_roles(
    document: dict[str, Any],
) -> None:
    for method, path, op in operations(document):
        name = op["operationId"]
        headers = header_parameters(document, op)
        if path.startswith("/v1/"):
            assert op.get("security", document["security"]) == [{"httpMessageSignature": []}], name
            for header in ("signature", "signature-input"):
                assert headers.get(header, {}).get("required") is True, (name, header)
            if "requestBody" in op:
                assert headers.get("content-digest", {}).get("required") is True, name
            assert sorted(op["x-casebridge-roles"]) == sorted(str(r) for r in ROUTE_ROLES[name]), name
        else:
            assert op.get("security") == [], name
            assert "signature" not in headers, name
            assert "x-casebridge-roles" not in op, name
        assert method in ("GET", "POST"), name


def test_request_bodies_carry_the_media_types_the_broker_requires(document: dict[str, Any]) -> None:
    bodies = {
        op["operationId"]: op["requestBody"] for _, _, op in operations(document) if "requestBody" in op
    }
    assert set(bodies) == set(REQUEST_MEDIA_TYPES)
    for name, body in bodies.items():
        assert body["required"] is True, name
        assert list(body["content"]) == [REQUEST_MEDIA_TYPES[name]], name


def test_problem_details_list_exactly_the_stable_error_codes(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["ErrorCode"]["enum"] == [str(code) for code in ErrorCode]
    assert resolve(document, schemas["Problem"]["properties"]["code"]) is schemas["ErrorCode"]
    for name, response in document["components"]["responses"].items():
        assert list(response["content"]) == ["application/problem+json"], name
    for _, _, op in operations(document):
        for status, response in op["responses"].items():
            if status == "default" or int(status) >= 400:
                content = resolve(document, response)["content"]
                assert list(content) == ["application/problem+json"], (op["operationId"], status)
