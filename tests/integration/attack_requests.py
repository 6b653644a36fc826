"""A broker world for attack tests, the honest request of every `/v1` route, and state snapshots.

- `open_world(directory)`: a real broker on 127.0.0.1 (SQLite, manual clock) with the PKI's
  agencies enrolled, an auditor registered, one envelope TH-ATPD -> LA-MOLSW already accepted
  (its attachment stored as a blob file) and covered by a signed audit checkpoint, and four
  attacker keys, each certified with every role so that only authentication can stop them:
  `stranger` (certified by a pinned root, never registered), `rogue` (registered while its root
  was pinned; the broker was then restarted without that root), `revoked` (registered, then
  revoked by its root's list) and `future` (registered, its certificate valid from tomorrow).
- `ROUTES`: per route name (as the broker's router names it), its method, path, the roles
  docs/http-api.md gives it, and a builder of an honest request that would succeed. Builders of
  state-changing routes make fresh content each time (a new agency, envelope, receipt, key or
  revocation list), so an attack that wrongly succeeded would show in the state snapshot.
- `snapshot(world)`: what the broker holds, read from outside the handlers: every table of the
  SQLite file (opened read-only) but those written in the background (`nonces`, whose row count
  is kept apart, after a flush: requests that pass authentication use a nonce by design; and
  the audit checkpoints, signed on the checkpointer's own cadence), the blob directory listing
  (temporary files included) and the in-memory directory.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from broker.storage.sqlite.store import SqliteStore
from broker.web.audit_routes import AUDIT
from keys import lifecycle
from keys.identity import AgencyIdentity
from protocol import httpsig
from protocol.certificate import Role
from protocol.receipt import ReceiptKind
from tests.integration.broker_harness import (
    CERTIFICATE_TYPE,
    ENCRYPTION_KEY_TYPE,
    ENVELOPE_TYPE,
    OPERATOR,
    RECEIPT_BATCH_TYPE,
    RECEIPT_TYPE,
    REVOCATION_LIST_TYPE,
    ManualClock,
    RunningBroker,
    start_broker,
)
from tests.integration.pki import Pki, Sealed, recipient_receipt
from tests.integration.signed_http import Reply
from tests.integration.storage_engines import START_TIME

ALL_ROLES = (Role.AGENCY, Role.OPERATOR, Role.AUDITOR)
ANY_ROLE = frozenset(ALL_ROLES)
AGENCY = frozenset({Role.AGENCY})
OPERATOR_ROLE = frozenset({Role.OPERATOR})
WHOLE_LOG = frozenset({Role.AUDITOR, Role.OPERATOR})
AGENCIES = ("TH-ATPD", "TH-DSDW", "LA-MOLSW", "LA-LWU")
AUDITOR = "LA-AUDITOR"
DAY_SECONDS = 86_400
# One actor per role, for calling routes with a role they lack.
ROLE_ACTORS = {Role.AGENCY: "TH-DSDW", Role.OPERATOR: OPERATOR, Role.AUDITOR: AUDITOR}
# Rate limits high enough that hundreds of requests by one agency are never throttled.
UNTHROTTLED_PER_MINUTE = 10_000_000
UNTHROTTLED_BURST = 1_000_000
BLOB_ATTACHMENT_BYTES = 100_000  # above inline_part_max_bytes: stored as a blob file
UNSIGNED_ROUTES = frozenset({"healthz", "readyz", "metrics"})
PROBLEM_TYPE = "application/problem+json"
# Tables no request writes: request nonces (counted apart) and what the audit checkpointer signs
# on its own cadence (driven by the clock, which some attacks move).
BACKGROUND_TABLES = frozenset({"nonces", "audit_checkpoints", "audit_cosignatures"})


@dataclass(repr=False)
class World:
    broker: RunningBroker
    pki: Pki
    clock: ManualClock
    sent: Sealed
    """TH-ATPD -> LA-MOLSW, accepted; part 1 is a blob file."""
    attackers: dict[str, AgencyIdentity]
    serial: itertools.count[int] = field(default_factory=itertools.count)

    def __repr__(self) -> str:
        return f"World({self.broker.url})"

    @property
    def skew(self) -> int:
        return self.broker.settings.clock_skew_seconds

    def identity(self, agency_id: str) -> AgencyIdentity:
        return self.pki[agency_id]


@dataclass(frozen=True, slots=True)
class Call:
    """One request: `query` is percent-encoded text after '?', `caller` an agency id."""

    method: str
    path: str
    caller: str
    query: str = ""
    body: bytes | None = field(default=None, repr=False)
    content_type: str | None = None
    websocket: bool = False

    @property
    def target(self) -> str:
        return self.path + (f"?{self.query}" if self.query else "")

    def body_headers(self, body: bytes | None = None) -> dict[str, str]:
        """Content-Digest (of `body`, default this call's) and Content-Type, for a call with a body."""
        sent = self.body if body is None else body
        if sent is None:
            return {}
        headers = {"Content-Digest": httpsig.content_digest(sent)}
        if self.content_type is not None:
            headers["Content-Type"] = self.content_type
        return headers


def sign(
    world: World,
    identity: AgencyIdentity,
    *,
    method: str,
    target: str,
    headers: Mapping[str, str],
    has_body: bool,
    created: int | None = None,
    nonce: bytes | None = None,
    authority: str | None = None,
) -> dict[str, str]:
    """`headers` plus the signature of `identity` over this request."""
    path, _, query = target.partition("?")
    signed = httpsig.sign_request(
        identity.signing_key,
        method=method,
        authority=authority or world.broker.settings.authority,
        path=path,
        query=query,
        headers=headers,
        has_body=has_body,
        created=world.clock.now() if created is None else created,
        nonce=nonce or secrets.token_bytes(httpsig.NONCE_BYTES),
        scheme=world.broker.settings.scheme,
    )
    return {**headers, **signed.as_dict()}


def signed_call(world: World, call: Call, identity: AgencyIdentity | None = None) -> dict[str, str]:
    """The headers an honest client sends for `call` (signed by its caller unless told)."""
    who = identity or world.identity(call.caller)
    headers = call.body_headers()
    return sign(
        world, who, method=call.method, target=call.target, headers=headers, has_body=call.body is not None
    )


def websocket_headers() -> dict[str, str]:
    key = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
    return {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": key,
        "Sec-WebSocket-Version": "13",
    }


async def transmit(
    world: World,
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
    *,
    websocket: bool = False,
) -> Reply:
    """Send exactly this (target percent-encoded as given). A WebSocket upgrade that the broker
    accepts answers 101 and is closed at once."""
    sent = {**headers, **(websocket_headers() if websocket else {})}
    url = URL(world.broker.url + target, encoded=True)
    async with world.broker.session.request(
        method, url, headers=sent, data=body, skip_auto_headers=("Content-Type",)
    ) as response:
        payload = b"" if response.status == 101 else await response.read()
        return Reply(response.status, response.headers, payload)


async def send_honestly(world: World, call: Call) -> Reply:
    return await transmit(
        world, call.method, call.target, signed_call(world, call), call.body, websocket=call.websocket
    )


# --- the honest request of every route ----------------------------------------------------


def _sealed(broker: RunningBroker, *, blob: bool) -> Sealed:
    """A fresh envelope TH-ATPD -> LA-MOLSW; with `blob`, an attachment stored as a blob file."""
    attachments = [("เอกสารประกอบ.pdf", secrets.token_bytes(BLOB_ATTACHMENT_BYTES))] if blob else []
    return broker.seal("TH-ATPD", ["LA-MOLSW"], attachments=attachments)


async def _register_certificate(world: World) -> Call:
    newcomer = world.pki.new_agency(f"TH-NEWCOMER-{next(world.serial)}", "หน่วยงานใหม่", ALL_ROLES)
    assert newcomer.certificate is not None
    cert = newcomer.certificate.raw
    return Call("POST", "/v1/directory/certificates", OPERATOR, body=cert, content_type=CERTIFICATE_TYPE)


async def _register_revocations(world: World) -> Call:
    root, crl = lifecycle.revoke(
        world.pki.roots["TH"], secrets.token_bytes(16), world.clock.now(), "กุญแจสูญหาย", world.clock.now()
    )
    world.pki.roots["TH"] = root
    return Call(
        "POST", "/v1/directory/revocations", OPERATOR, body=crl.raw, content_type=REVOCATION_LIST_TYPE
    )


async def _register_encryption_key(world: World) -> Call:
    rotated = lifecycle.rotate_encryption_key(world.identity("TH-ATPD"), world.clock.now())
    statement = rotated.encryption_keys[-1].statement.raw
    path = "/v1/directory/encryption-keys"
    return Call("POST", path, "TH-ATPD", body=statement, content_type=ENCRYPTION_KEY_TYPE)


async def _submit_envelope(world: World) -> Call:
    sealed = _sealed(world.broker, blob=True)
    return Call("POST", "/v1/envelopes", "TH-ATPD", body=sealed.body, content_type=ENVELOPE_TYPE)


async def _post_receipt(world: World) -> Call:
    """A `delivered` receipt for an envelope accepted just now (so it would change its state)."""
    sealed = _sealed(world.broker, blob=False)
    accepted = await world.broker.submit("TH-ATPD", sealed)
    assert accepted.status == 201, accepted.body
    receipt = recipient_receipt(world.identity("LA-MOLSW"), sealed, ReceiptKind.DELIVERED, world.clock.now())
    return Call("POST", "/v1/receipts", "LA-MOLSW", body=receipt, content_type=RECEIPT_TYPE)


def receipt_batch(*receipts: bytes) -> bytes:
    """A `POST /v1/receipts/batch` body (docs/protocol.md, section 5)."""
    return b"".join(len(r).to_bytes(2, "big") + r for r in receipts)


async def _post_receipts(world: World) -> Call:
    """`delivered` then `verified` for an envelope accepted just now, in one batch."""
    sealed = _sealed(world.broker, blob=False)
    accepted = await world.broker.submit("TH-ATPD", sealed)
    assert accepted.status == 201, accepted.body
    recipient = world.identity("LA-MOLSW")
    body = receipt_batch(
        recipient_receipt(recipient, sealed, ReceiptKind.DELIVERED, world.clock.now()),
        recipient_receipt(recipient, sealed, ReceiptKind.VERIFIED, world.clock.now()),
    )
    return Call("POST", "/v1/receipts/batch", "LA-MOLSW", body=body, content_type=RECEIPT_BATCH_TYPE)


def _get(
    path: str, caller: str, query: str = "", *, websocket: bool = False
) -> Callable[[World], Awaitable[Call]]:
    """A builder of a GET by `caller`; `{sent}` in `path` is the world's envelope id."""

    async def build(world: World) -> Call:
        return Call("GET", path.format(sent=world.sent.envelope_id.hex()), caller, query, websocket=websocket)

    return build


@dataclass(frozen=True, slots=True)
class RouteCase:
    method: str
    path: str
    """The router's canonical path (with `{placeholders}`)."""
    roles: frozenset[Role]
    """Who may call it, as docs/http-api.md says."""
    honest: Callable[[World], Awaitable[Call]]
    success: int
    """The status the honest request gets (101 for the WebSocket upgrade)."""


ROUTES: dict[str, RouteCase] = {
    "directory": RouteCase("GET", "/v1/directory", ANY_ROLE, _get("/v1/directory", "TH-ATPD"), 200),
    "directory_agency": RouteCase(
        "GET", "/v1/directory/agencies/{agency_id}", ANY_ROLE,
        _get("/v1/directory/agencies/LA-MOLSW", "TH-ATPD"), 200,
    ),
    "register_certificate": RouteCase(
        "POST", "/v1/directory/certificates", OPERATOR_ROLE, _register_certificate, 201
    ),
    "register_revocations": RouteCase(
        "POST", "/v1/directory/revocations", OPERATOR_ROLE, _register_revocations, 201
    ),
    "register_encryption_key": RouteCase(
        "POST", "/v1/directory/encryption-keys", AGENCY, _register_encryption_key, 201
    ),
    "submit_envelope": RouteCase("POST", "/v1/envelopes", AGENCY, _submit_envelope, 201),
    "envelope_status": RouteCase(
        "GET", "/v1/envelopes/{envelope_id}", AGENCY, _get("/v1/envelopes/{sent}", "TH-ATPD"), 200
    ),
    "inbox": RouteCase("GET", "/v1/inbox", AGENCY, _get("/v1/inbox", "LA-MOLSW", "after=0&limit=10"), 200),
    "inbox_header": RouteCase(
        "GET", "/v1/inbox/{envelope_id}/header", AGENCY, _get("/v1/inbox/{sent}/header", "LA-MOLSW"), 200
    ),
    "inbox_part": RouteCase(
        "GET", "/v1/inbox/{envelope_id}/parts/{part_no}", AGENCY,
        _get("/v1/inbox/{sent}/parts/1", "LA-MOLSW"), 200,
    ),
    "post_receipt": RouteCase("POST", "/v1/receipts", AGENCY, _post_receipt, 201),
    "post_receipts": RouteCase("POST", "/v1/receipts/batch", AGENCY, _post_receipts, 200),
    "receipt_feed": RouteCase(
        "GET", "/v1/receipts", AGENCY, _get("/v1/receipts", "TH-ATPD", "after=0&limit=10"), 200
    ),
    "events": RouteCase("GET", "/v1/events", AGENCY, _get("/v1/events", "LA-MOLSW", websocket=True), 101),
    "audit_checkpoint": RouteCase(
        "GET", "/v1/audit/checkpoint", ANY_ROLE, _get("/v1/audit/checkpoint", "TH-ATPD"), 200
    ),
    "audit_tile": RouteCase(
        "GET", "/v1/audit/tile/{tail}", WHOLE_LOG, _get("/v1/audit/tile/0/000.p/1", AUDITOR), 200
    ),
    "audit_inclusion_proof": RouteCase(
        "GET", "/v1/audit/proof/inclusion", ANY_ROLE,
        _get("/v1/audit/proof/inclusion", AUDITOR, "index=0&size=1"), 200,
    ),
    "audit_consistency_proof": RouteCase(
        "GET", "/v1/audit/proof/consistency", ANY_ROLE,
        _get("/v1/audit/proof/consistency", "LA-MOLSW", "from=1&to=1"), 200,
    ),
    "audit_envelope": RouteCase(
        "GET", "/v1/audit/envelopes/{envelope_id}", ANY_ROLE,
        _get("/v1/audit/envelopes/{sent}", "LA-MOLSW"), 200,
    ),
    "audit_envelope_tlog_proof": RouteCase(
        "GET", "/v1/audit/envelopes/{envelope_id}/tlog-proof", ANY_ROLE,
        _get("/v1/audit/envelopes/{sent}/tlog-proof", "TH-ATPD"), 200,
    ),
    "audit_entries": RouteCase(
        "GET", "/v1/audit/entries", WHOLE_LOG, _get("/v1/audit/entries", OPERATOR, "start=0&count=2"), 200
    ),
}  # fmt: skip


# --- state snapshots ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    tables: tuple[tuple[str, int, str], ...]
    """(table, rows, SHA-256 over its sorted rows) for every table but `BACKGROUND_TABLES`."""
    blobs: tuple[tuple[str, int], ...]
    directory: str
    nonces: int

    def changes(self, later: Snapshot, *, nonces: bool) -> list[str]:
        """What differs in `later` (nonces only if asked)."""
        found = [
            f"table {a[0]}: {a[1]} -> {b[1]} rows"
            for a, b in zip(self.tables, later.tables, strict=False)
            if a != b
        ]
        if [t[0] for t in self.tables] != [t[0] for t in later.tables]:
            found.append("the set of tables changed")
        if self.blobs != later.blobs:
            found.append(f"blob files: {sorted(set(self.blobs) ^ set(later.blobs))}")
        if self.directory != later.directory:
            found.append("the in-memory directory changed")
        if nonces and self.nonces != later.nonces:
            found.append(f"nonces: {self.nonces} -> {later.nonces}")
        return found


def _read_tables(database: Path) -> tuple[tuple[tuple[str, int, str], ...], int]:
    conn = sqlite3.connect(database.as_uri() + "?mode=ro", uri=True)
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "ORDER BY name"
            )
        ]
        tables = []
        nonces = 0
        for name in names:
            # Table names come from sqlite_master, not from any input.
            rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()  # noqa: S608
            if name == "nonces":
                nonces = len(rows)
            if name in BACKGROUND_TABLES:
                continue
            digest = hashlib.sha256(repr(sorted(repr(r) for r in rows)).encode()).hexdigest()
            tables.append((name, len(rows), digest))
        return tuple(tables), nonces
    finally:
        conn.close()


def _blob_listing(root: Path) -> tuple[tuple[str, int], ...]:
    if not root.exists():
        return ()
    return tuple(sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file()))


async def snapshot(world: World) -> Snapshot:
    """The broker's observable state now (nonces written to the database first)."""
    store = world.broker.store
    assert isinstance(store, SqliteStore), "snapshots read the SQLite engine's file"
    await store.nonces.flush()
    # The writer runs jobs in order: once a job queued now has committed, so has every nonce
    # batch a background flush had already taken.
    await store.db.write(lambda conn: None, durable=False)
    settings = world.broker.settings
    tables, nonces = _read_tables(settings.database_file)
    directory = world.broker.handlers.services.directory
    held = [
        *(c.raw for c in directory.certificates()),
        *(k.raw for k in directory.encryption_keys(world.clock.now())),
        *(crl.raw for crl in directory.revocation_lists()),
    ]
    return Snapshot(
        tables, _blob_listing(settings.blob_dir), hashlib.sha256(b"".join(held)).hexdigest(), nonces
    )


# --- the world ------------------------------------------------------------------------------


async def _register(broker: RunningBroker, identity: AgencyIdentity) -> None:
    assert identity.certificate is not None
    cert = identity.certificate.raw
    reply = await broker.client(OPERATOR).post("/v1/directory/certificates", cert, CERTIFICATE_TYPE)
    assert reply.status == 201, reply.body


@asynccontextmanager
async def open_world(directory: Path) -> AsyncIterator[World]:
    clock = ManualClock(START_TIME)
    pki = Pki.create(clock.now())
    now = clock.now()
    unpinned = lifecycle.create_root("TH", "รากที่เลิกปักหมุดแล้ว", now)
    rogue = lifecycle.create_agency("TH-ROGUE", "หน่วยงานนอกราก", now)
    unpinned, rogue_cert = lifecycle.certify(unpinned, lifecycle.agency_request(rogue), ALL_ROLES, now)
    rogue = lifecycle.import_certificate(rogue, rogue_cert.raw, unpinned.certificate, now)
    pinned = pki.write_roots(directory / "roots")
    unpinned_file = directory / "roots" / "th-unpinned-root.cert"
    unpinned_file.write_bytes(unpinned.certificate.raw)
    # First the extra TH root is pinned and an agency it certified is registered; then the broker
    # is restarted on the same data without that root, as an operator un-pinning a root would.
    roots = [str(p) for p in [*pinned, unpinned_file]]
    async with start_broker(directory, pki, clock, root_cert_files=roots) as first:
        await _register(first, rogue)
    async with start_broker(
        directory,
        pki,
        clock,
        rate_limit_per_minute=UNTHROTTLED_PER_MINUTE,
        rate_limit_burst=UNTHROTTLED_BURST,
    ) as broker:
        await broker.enroll(*AGENCIES)
        await _register(broker, pki[AUDITOR])
        attackers = {"rogue": rogue}
        attackers["stranger"] = pki.new_agency("TH-STRANGER", "หน่วยงานที่ไม่รู้จัก", ALL_ROLES)
        revoked = pki.agencies["TH-REVOKED"] = pki.new_agency("TH-REVOKED", "หน่วยงานที่ถูกเพิกถอน", ALL_ROLES)
        await broker.enroll("TH-REVOKED")
        crl = pki.revoke("TH-REVOKED", clock.now())
        reply = await broker.client(OPERATOR).post("/v1/directory/revocations", crl.raw, REVOCATION_LIST_TYPE)
        assert reply.status == 201, reply.body
        attackers["revoked"] = revoked
        tomorrow = clock.now() + DAY_SECONDS
        future = lifecycle.create_agency("LA-FUTURE", "ອົງການໃນອະນາຄົດ", tomorrow)
        root, future_cert = lifecycle.certify(
            pki.roots["LA"], lifecycle.agency_request(future), ALL_ROLES, tomorrow
        )
        pki.roots["LA"] = root
        attackers["future"] = lifecycle.import_certificate(
            future, future_cert.raw, root.certificate, tomorrow
        )
        clock.advance(DAY_SECONDS)
        await _register(broker, attackers["future"])
        # Back to one second after TH-REVOKED's revocation time.
        clock.advance(-DAY_SECONDS + 1)
        world = World(broker, pki, clock, _sealed(broker, blob=True), attackers)
        accepted = await broker.submit("TH-ATPD", world.sent)
        assert accepted.status == 201, accepted.body
        # A checkpoint covering that envelope, so the audit routes have something to prove.
        assert broker.app is not None
        assert await broker.app[AUDIT].checkpointer.tick(force=True) is not None
        yield world
