"""Sending, receiving and receipts: `/v1/envelopes`, `/v1/inbox`, `/v1/receipts`.

A receipt batch (`POST /v1/receipts/batch`, docs/protocol.md section 5) is
`u16be(len) || receipt`, one to `MAX_BATCH_RECEIPTS` times, nothing after the last; a body that
is not exactly that is refused whole (400, nothing recorded). Each receipt then gets the answer
`POST /v1/receipts` would give it, or its problem details, in the body's order.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from broker.service.inbox import MAX_LIMIT, MAX_WAIT_SECONDS
from broker.service.receipts import PostedReceipt
from broker.storage.records import Acceptance, InboxEntry, ReceiptRecord
from broker.web.body import StreamedBody
from broker.web.params import b64, byte_range, envelope_id, query_int, require_content_type
from broker.web.problems import RangeNotSatisfiable, problem_details
from broker.web.state import CONTENT_DIGEST, STREAM_STARTED, body, caller, handlers
from protocol.errors import InvalidField, MalformedInput, TooLarge

ENVELOPE_TYPE = "application/vnd.casebridge.envelope"
HEADER_TYPE = "application/vnd.casebridge.envelope-header"
RECEIPT_TYPE = "application/vnd.casebridge.receipt"
RECEIPT_BATCH_TYPE = "application/vnd.casebridge.receipt-batch"
PART_TYPE = "application/octet-stream"
ACCEPTED_RECEIPT_HEADER = "CaseBridge-Accepted-Receipt"
DEFAULT_LIMIT = 100
MAX_BATCH_RECEIPTS = 64
BATCH_LENGTH_BYTES = 2

log = logging.getLogger("casebridge.broker.http")


def acceptance_json(accepted: Acceptance) -> dict[str, Any]:
    return {
        "envelope_id": accepted.envelope.envelope_id.hex(),
        "envelope_hash": accepted.envelope.envelope_hash.hex(),
        "accepted": [b64(r.raw) for r in accepted.receipts],
    }


def inbox_item(entry: InboxEntry) -> dict[str, Any]:
    env = entry.envelope
    return {
        "cursor": entry.cursor,
        "envelope_id": env.envelope_id.hex(),
        "envelope_hash": env.envelope_hash.hex(),
        "sender_id": env.sender_id,
        "accepted_at": env.accepted_at,
        "expires_at": env.expires_at,
        "header_length": env.header_length,
        "part_lengths": [p.length for p in env.parts],
        "state": str(entry.state),
    }


def feed_item(record: ReceiptRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "envelope_id": record.envelope_id.hex(),
        "recipient_id": record.recipient_id,
        "kind": record.kind,
        "receipt": b64(record.raw),
    }


async def submit_envelope(request: web.Request) -> web.Response:
    require_content_type(request, ENVELOPE_TYPE)
    h = handlers(request)
    settings = h.services.settings
    declared = request.content_length
    if declared is not None and declared > settings.max_envelope_bytes:
        raise TooLarge(reason=f"the envelope is larger than {settings.max_envelope_bytes} bytes")
    source = StreamedBody(
        request.content, request.get(CONTENT_DIGEST), float(settings.request_timeout_seconds)
    )
    accepted = await h.submission.submit(caller(request), source, declared)
    return web.json_response(acceptance_json(accepted), status=201 if accepted.created else 200)


async def envelope_status(request: web.Request) -> web.Response:
    status = await handlers(request).inbox.status(caller(request).agency_id, envelope_id(request))
    env = status.envelope
    recipients: dict[str, Any] = {
        e.recipient_id: {
            "state": str(e.state),
            "receipts": [b64(r.raw) for r in status.receipts if r.recipient_id == e.recipient_id],
        }
        for e in status.entries
    }
    return web.json_response(
        {
            "envelope_id": env.envelope_id.hex(),
            "envelope_hash": env.envelope_hash.hex(),
            "sender_id": env.sender_id,
            "accepted_at": env.accepted_at,
            "expires_at": env.expires_at,
            "purged": env.purged,
            "recipients": recipients,
        }
    )


async def inbox(request: web.Request) -> web.Response:
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    wait = query_int(request, "wait", 0, 0, MAX_WAIT_SECONDS)
    entries = await handlers(request).inbox.listing(caller(request).agency_id, after, limit, wait)
    return web.json_response(
        {"items": [inbox_item(e) for e in entries], "next": entries[-1].cursor if entries else after}
    )


async def inbox_header(request: web.Request) -> web.Response:
    header, accepted = await handlers(request).inbox.header(caller(request).agency_id, envelope_id(request))
    return web.Response(
        body=header, content_type=HEADER_TYPE, headers={ACCEPTED_RECEIPT_HEADER: b64(accepted)}
    )


async def inbox_part(request: web.Request) -> web.StreamResponse:
    text = request.match_info["part_no"]
    part_no = int(text) if text.isascii() and text.isdigit() and len(text) <= 4 else -1
    download = await handlers(request).inbox.part(caller(request).agency_id, envelope_id(request), part_no)
    try:
        wanted = byte_range(request.headers.get("Range"), download.length)
    except ValueError as e:
        raise RangeNotSatisfiable(download.length) from e
    start, end = wanted if wanted is not None else (0, download.length)
    response = web.StreamResponse(status=206 if wanted is not None else 200)
    response.content_type = PART_TYPE
    response.content_length = end - start
    response.headers["ETag"] = f'"{download.digest.hex()}"'
    response.headers["Accept-Ranges"] = "bytes"
    if wanted is not None:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{download.length}"
    request[STREAM_STARTED] = True
    await response.prepare(request)
    async for chunk in download.read(start, end):
        await response.write(chunk)
    await response.write_eof()
    return response


def posted_json(posted: PostedReceipt) -> dict[str, Any]:
    outcome = posted.outcome
    subject = posted.receipt.subject
    return {
        "envelope_id": subject.envelope_id.hex(),
        "recipient_id": subject.recipient_id,
        "kind": str(posted.receipt.kind),
        "state": str(outcome.state),
        "recorded": outcome.recorded is not None,
        "seq": None if outcome.recorded is None else outcome.recorded.seq,
    }


async def post_receipt(request: web.Request) -> web.Response:
    require_content_type(request, RECEIPT_TYPE)
    posted = await handlers(request).receipts.post(caller(request), body(request))
    return web.json_response(posted_json(posted), status=201 if posted.created else 200)


def receipt_batch(data: bytes) -> list[bytes]:
    """The receipts of a batch body (see the module doc); raises `MalformedInput` or
    `InvalidField` for anything else."""
    receipts: list[bytes] = []
    at = 0
    while at < len(data):
        if len(receipts) == MAX_BATCH_RECEIPTS:
            raise InvalidField("receipts", f"at most {MAX_BATCH_RECEIPTS} receipts in one batch")
        length = int.from_bytes(data[at : at + BATCH_LENGTH_BYTES], "big")
        at += BATCH_LENGTH_BYTES
        if at > len(data) or length == 0 or at + length > len(data):
            raise MalformedInput(reason=f"receipt {len(receipts)} of the batch is empty or cut short")
        receipts.append(data[at : at + length])
        at += length
    if not receipts:
        raise MalformedInput(reason="a receipt batch holds at least one receipt")
    return receipts


async def post_receipts(request: web.Request) -> web.Response:
    require_content_type(request, RECEIPT_BATCH_TYPE)
    receipts = receipt_batch(body(request))
    h = handlers(request)
    results: list[dict[str, Any]] = []
    for index, outcome in enumerate(await h.receipts.post_many(caller(request), receipts)):
        if isinstance(outcome, PostedReceipt):
            results.append({**posted_json(outcome), "status": 201 if outcome.created else 200})
            continue
        h.services.metrics.refusals.labels(code=str(outcome.code)).inc()
        level = logging.ERROR if outcome.status >= 500 else logging.INFO
        log.log(
            level,
            "receipt_refused",
            extra={
                "index": index,
                "code": str(outcome.code),
                "status": outcome.status,
                "reason": outcome.reason,
            },
        )
        results.append(problem_details(outcome))
    return web.json_response({"results": results})


async def receipt_feed(request: web.Request) -> web.Response:
    after = query_int(request, "after", 0, 0, 2**62)
    limit = query_int(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    wait = query_int(request, "wait", 0, 0, MAX_WAIT_SECONDS)
    records = await handlers(request).receipts.feed(caller(request).agency_id, after, limit, wait)
    return web.json_response(
        {"items": [feed_item(r) for r in records], "next": records[-1].seq if records else after}
    )


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_post("/v1/envelopes", submit_envelope, name="submit_envelope")
    router.add_get("/v1/envelopes/{envelope_id}", envelope_status, name="envelope_status", allow_head=False)
    router.add_get("/v1/inbox", inbox, name="inbox", allow_head=False)
    router.add_get("/v1/inbox/{envelope_id}/header", inbox_header, name="inbox_header", allow_head=False)
    router.add_get("/v1/inbox/{envelope_id}/parts/{part_no}", inbox_part, name="inbox_part", allow_head=False)
    router.add_post("/v1/receipts", post_receipt, name="post_receipt")
    router.add_post("/v1/receipts/batch", post_receipts, name="post_receipts")
    router.add_get("/v1/receipts", receipt_feed, name="receipt_feed", allow_head=False)
