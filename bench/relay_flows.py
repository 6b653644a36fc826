"""The per-envelope request pattern of the relay benchmark, done two ways.

`CaseBridgeFlow` is the real thing, built from the client library's parts: requests signed by
`clients.transport.BrokerTransport`, the directory verified against the pinned roots by
`clients.directory.VerifiedDirectory`, envelopes sealed and opened with `protocol.envelope`,
receipts signed and verified with `protocol.receipt`. Per envelope:

    sender     POST /v1/envelopes           (verify the accepted receipt in the answer)
    recipient  <- WebSocket hint "inbox"
    recipient  GET /v1/inbox/{id}/header    (verify the accepted receipt in its header)
    recipient  GET /v1/inbox/{id}/parts/0
    recipient  open the envelope (chain, signature, unwrap, commitment, manifest)
    recipient  POST /v1/receipts/batch delivered + verified (as `clients.inbox` does for an
               envelope this small); with `batch_receipts` False, the pattern before batches:
               POST /v1/receipts delivered before opening, POST /v1/receipts verified after
    sender     <- WebSocket hints "receipt"; GET /v1/receipts?after=... (verify each receipt)

`BareFlow` makes the same requests with the same sizes against the bare aiohttp relay
(`bench.relay_baseline`): no signature, no sealing, no verification, no storage. The difference
between the two is what CaseBridge's per-envelope work costs.

Both answer `Outgoing` items (sealed before the timed phase) and report what they saw; timing is
the caller's (`bench.relay_workers`).
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench.small_envelopes import referral_body
from clients.agency import load_pinned_roots
from clients.directory import VerifiedDirectory, b64decode
from clients.outbox import LocalState
from clients.receipts import ReceiptPoster, receipt_batch
from clients.transport import Body, BrokerTransport, RetryPolicy
from keys.identity import AgencyIdentity
from keys.keystore import load_agency
from protocol.envelope import EnvelopeHeader, EnvelopeOpener, EnvelopeSealer
from protocol.receipt import Receipt, ReceiptKind, ReceiptSubject

ENVELOPE_TYPE = "application/vnd.casebridge.envelope"
ENCRYPTION_KEY_TYPE = "application/vnd.casebridge.encryption-key"
FEED_LIMIT = 500
BENCH_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.05, max_delay_seconds=0.5)


@dataclass(frozen=True, slots=True)
class Outgoing:
    envelope_id: str
    body: bytes


@dataclass(frozen=True, slots=True)
class FeedItem:
    envelope_id: str
    kind: str


@dataclass(frozen=True, slots=True)
class FeedPage:
    items: list[FeedItem]
    """This phase's receipts on the page (receipts of earlier phases are left out)."""
    next: int
    full: bool
    """The broker's page held `FEED_LIMIT` receipts (counting left-out ones): there may be more."""


class Flow(Protocol):
    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def seal(self, count: int, recipient: str) -> list[Outgoing]: ...
    async def submit(self, item: Outgoing) -> None: ...
    async def feed(self, after: int) -> FeedPage: ...
    async def receive(self, envelope_id: str) -> None: ...
    async def open_events(self) -> aiohttp.ClientWebSocketResponse: ...


def _now() -> int:
    return int(time.time())


class CaseBridgeFlow:
    """One agency's side of the pattern, with the client library's transport and checks."""

    def __init__(
        self, url: str, keystore: Path, passphrase: str, roots: list[Path], *, batch_receipts: bool = True
    ) -> None:
        self.identity: AgencyIdentity = load_agency(keystore, passphrase).identity
        self.me = self.identity.agency_id
        self._transport = BrokerTransport(url, self.identity.signing_key, clock=_now, retry=BENCH_RETRY)
        self._poster = ReceiptPoster(self._transport)
        self._batch_receipts = batch_receipts
        self._state_dir = tempfile.TemporaryDirectory(prefix="casebridge-bench-")
        self._state = LocalState(self._state_dir.name)
        self._directory = VerifiedDirectory(load_pinned_roots(roots), self._state)
        self._keys = self.identity.recipient_keys()
        self._body = referral_body()
        self._headers: dict[str, EnvelopeHeader] = {}

    async def start(self) -> None:
        for held in self.identity.encryption_keys:
            body = Body.of(held.statement.raw, ENCRYPTION_KEY_TYPE)
            await self._transport.request("POST", "/v1/directory/encryption-keys", body=body)
        await self.refresh()

    async def refresh(self) -> None:
        answer = (await self._transport.request("GET", "/v1/directory")).json()
        self._directory.absorb(answer, _now())

    async def close(self) -> None:
        await self._transport.close()
        self._state.close()
        self._state_dir.cleanup()

    def seal(self, count: int, recipient: str) -> list[Outgoing]:
        now = _now()
        cert = self.identity.certificate
        assert cert is not None
        key = self._directory.encryption_key_for(recipient, now)
        out = []
        for _ in range(count):
            sealer = EnvelopeSealer(
                sender=cert,
                signing_key=self.identity.signing_key,
                recipients=[key],
                content_type="application/json",
                body=self._body,
                now=now,
            )
            part = sealer.manifest_ciphertext()
            header = sealer.finish().raw
            parsed = EnvelopeHeader.parse(header)
            envelope_id = parsed.envelope_id.hex()
            self._headers[envelope_id] = parsed
            out.append(Outgoing(envelope_id, len(header).to_bytes(4, "big") + header + part))
        return out

    async def submit(self, item: Outgoing) -> None:
        body = Body.of(item.body, ENVELOPE_TYPE)
        answer = (await self._transport.request("POST", "/v1/envelopes", body=body)).json()
        header = self._headers[item.envelope_id]
        for value in answer["accepted"]:
            raw = b64decode(value, "accepted")
            subject = ReceiptSubject(
                header.envelope_hash, header.envelope_id, self.me, Receipt.parse(raw).subject.recipient_id
            )
            self._directory.verify_receipt(raw, subject=subject, kinds=[ReceiptKind.ACCEPTED])

    async def feed(self, after: int) -> FeedPage:
        query = {"after": after, "limit": FEED_LIMIT}
        answer = (await self._transport.request("GET", "/v1/receipts", query=query)).json()
        items = []
        for value in answer["items"]:
            envelope_id = value["envelope_id"]
            header = self._headers.get(envelope_id)
            if header is None:
                continue  # Sent in an earlier phase.
            raw = b64decode(value["receipt"], "receipt")
            subject = ReceiptSubject(header.envelope_hash, header.envelope_id, self.me, value["recipient_id"])
            receipt = self._directory.verify_receipt(raw, subject=subject)
            items.append(FeedItem(envelope_id, str(receipt.kind)))
        return FeedPage(items, int(answer["next"]), len(answer["items"]) >= FEED_LIMIT)

    async def receive(self, envelope_id: str) -> None:
        response = await self._transport.request("GET", f"/v1/inbox/{envelope_id}/header")
        header_raw = response.body
        header = EnvelopeHeader.parse(header_raw)
        subject = ReceiptSubject(header.envelope_hash, header.envelope_id, header.sender_id, self.me)
        accepted_raw = b64decode(response.headers["CaseBridge-Accepted-Receipt"], "accepted receipt")
        accepted = self._directory.verify_receipt(accepted_raw, subject=subject, kinds=[ReceiptKind.ACCEPTED])
        part = (await self._transport.request("GET", f"/v1/inbox/{envelope_id}/parts/0")).body
        verifier = header.part_verifier(0)
        verifier.update(part)
        verifier.finish()
        delivered = self._receipt(ReceiptKind.DELIVERED, subject)
        if not self._batch_receipts:
            await self._post([delivered])
        sender = self._directory.certificate_by_key_id(header.sender_key_id)
        if sender is None:
            await self.refresh()
            sender = self._directory.certificate_by_key_id(header.sender_key_id)
        assert sender is not None, "the sender is not in the verified directory"
        opener = EnvelopeOpener(
            header_raw,
            trust=self._directory.trust,
            sender_certificate=sender,
            recipient_id=self.me,
            keys=self._keys,
            now=_now(),
            at=accepted.time,
        )
        opener.open_manifest(part)
        opener.finish()
        verified = self._receipt(ReceiptKind.VERIFIED, subject)
        await self._post([delivered, verified] if self._batch_receipts else [verified])

    def _receipt(self, kind: ReceiptKind, subject: ReceiptSubject) -> bytes:
        cert = self.identity.certificate
        assert cert is not None
        return Receipt.issue(
            kind, signing_key=self.identity.signing_key, signer=cert, subject=subject, time=_now()
        ).raw

    async def _post(self, receipts: list[bytes]) -> None:
        errors = [e for e in await self._poster.post(receipts) if e is not None]
        if errors:
            raise errors[0]

    async def open_events(self) -> aiohttp.ClientWebSocketResponse:
        return await self._transport.websocket("/v1/events")


BARE_RECEIPT_BYTES = 260
"""About the size of a signed recipient receipt, so the bare pattern moves the same bytes."""


class BareFlow:
    """The same requests, unsigned, with opaque bytes of the same sizes (see the module doc)."""

    def __init__(
        self, url: str, agency_id: str, header_bytes: int, part_bytes: int, *, batch_receipts: bool = True
    ) -> None:
        self.me = agency_id
        self._batch_receipts = batch_receipts
        self._sizes = (header_bytes, part_bytes)
        self._url = url
        self._headers = {"X-Agency": agency_id}
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None
        return self._session

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(headers=self._headers)

    async def close(self) -> None:
        await self.session.close()

    def seal(self, count: int, recipient: str) -> list[Outgoing]:
        out = []
        for _ in range(count):
            envelope_id = os.urandom(16)
            header_bytes, part_bytes = self._sizes
            # id, recipient, the rest of a header's length, then the part: the baseline relay
            # splits the body at the same offset as the broker's header length.
            filler = os.urandom(4 + header_bytes - 32 + part_bytes)
            body = envelope_id + recipient.encode().ljust(16) + filler
            out.append(Outgoing(envelope_id.hex(), body))
        return out

    async def _read(self, method: str, path: str, **kwargs: Any) -> tuple[bytes, Any]:
        async with self.session.request(method, self._url + path, **kwargs) as response:
            response.raise_for_status()
            return await response.read(), response.headers

    async def submit(self, item: Outgoing) -> None:
        data, _ = await self._read("POST", "/v1/envelopes", data=item.body)
        json.loads(data)

    async def feed(self, after: int) -> FeedPage:
        data, _ = await self._read("GET", "/v1/receipts", params={"after": after, "limit": FEED_LIMIT})
        answer = json.loads(data)
        items = []
        for value in answer["items"]:
            base64.b64decode(value["receipt"])
            items.append(FeedItem(value["envelope_id"], value["kind"]))
        return FeedPage(items, int(answer["next"]), len(answer["items"]) >= FEED_LIMIT)

    async def receive(self, envelope_id: str) -> None:
        await self._read("GET", f"/v1/inbox/{envelope_id}/header")
        await self._read("GET", f"/v1/inbox/{envelope_id}/parts/0")
        receipts = [
            bytes.fromhex(envelope_id) + kind.ljust(16) + os.urandom(BARE_RECEIPT_BYTES - 32)
            for kind in (b"delivered", b"verified")
        ]
        if self._batch_receipts:
            await self._read("POST", "/v1/receipts/batch", data=receipt_batch(receipts))
            return
        for receipt in receipts:
            await self._read("POST", "/v1/receipts", data=receipt)

    async def open_events(self) -> aiohttp.ClientWebSocketResponse:
        return await self.session.ws_connect(self._url + "/v1/events")
