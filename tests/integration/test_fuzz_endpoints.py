"""Generated malformed requests against every endpoint of a real broker on 127.0.0.1.

Properties, for every request:
- the broker never answers 5xx;
- every refusal the application answers is `application/problem+json` whose `code` is one of
  `protocol.errors.ErrorCode` and whose `status` is the response's; the only other refusals are
  aiohttp's own 400s for requests that are not HTTP (an unknown method), which never reach the
  broker's code;
- a refused request changes nothing (database, blob files, in-memory directory; nonces too when
  the request was not validly signed);
- a request without a valid signature never succeeds on `/v1` and is refused as 401;
- a validly signed request is never refused as 401, so the malformed paths, queries, headers
  and bodies it carries reach the handlers.

Hypothesis runs in a worker thread and sends with the blocking `http.client`, byte for byte as
generated; the broker runs on the test's event loop. Each property runs 150 examples. Long polls
are kept out: a `wait` that would hold a signed request is replaced by 0.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import re
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import pytest_asyncio
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol import httpsig
from protocol.errors import ErrorCode
from tests.integration.attack_requests import (
    PROBLEM_TYPE,
    ROUTES,
    Call,
    Snapshot,
    World,
    open_world,
    sign,
    snapshot,
)
from tests.integration.pki import frame

pytestmark = pytest.mark.asyncio(loop_scope="module")

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
ERROR_CODES = frozenset(str(code) for code in ErrorCode)
# Methods aiohttp's HTTP parser knows; any other token is refused before the application runs.
KNOWN_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "PROPFIND", "MKCOL")
UNKNOWN_METHODS = ("BREW", "FETCH", "get", "SUBMIT")
UNSIGNED_PATHS = ("/healthz", "/readyz", "/metrics")
THAI_LAO = ("สมชาย ใจดี", "ນາງ ສົມພອນ ແກ້ວມະນີ", "เอกสารประกอบ.pdf", "ເອກະສານ.pdf", "๑๒๓", "໑໒໓")
ODD_NUMBERS = ("²", "٣", "๕", "໕", "1e3", "0x10", " 1", "-0", "9" * 4400, "0" * 30 + "1")
SIGNED_HEADERS = ("Signature-Input", "Signature", "Content-Digest", "Content-Type", "Range", "X-Request-Id")
# The profile's components, and others a signature must not cover (or names that are not quoted).
COMPONENT_NAMES = (
    '"@method"',
    '"@authority"',
    '"@path"',
    '"@query"',
    '"content-digest"',
    '"content-type"',
    '"@status"',
    '"x"',
    "@path",
    '"@path";req',
)
# aiohttp refuses a request line over 8190 bytes before the application sees it.
MAX_TARGET = 8000
PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    directory: Path = tmp_path_factory.mktemp("fuzz")
    async with open_world(directory) as opened:
        yield opened


# --- sending from the hypothesis thread -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    """Lowercase names."""
    body: bytes


class Sent:
    """One generated request. Its repr, which Hypothesis prints for a failing example, shortens
    the body (an envelope is 100 kB)."""

    __slots__ = ("body", "headers", "method", "target")

    def __init__(
        self, method: str, target: str, headers: Mapping[str, str | bytes], body: bytes | None
    ) -> None:
        self.method = method
        self.target = target
        self.headers = dict(headers)
        self.body = body

    def __repr__(self) -> str:
        body = "None" if self.body is None else f"<{len(self.body)} bytes {self.body[:64]!r}...>"
        return f"Sent({self.method!r}, {self.target!r}, {self.headers!r}, {body})"


@dataclass(frozen=True, slots=True)
class Probe:
    world: World
    loop: asyncio.AbstractEventLoop

    def send(self, sent: Sent) -> Answer:
        address = urlsplit(self.world.broker.url)
        assert address.hostname == "127.0.0.1"
        assert address.port is not None
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=60)
        try:
            conn.putrequest(sent.method, sent.target, skip_accept_encoding=True)
            for name, value in sent.headers.items():
                conn.putheader(name, value)
            if sent.body is not None:
                conn.putheader("Content-Length", str(len(sent.body)))
            conn.endheaders(sent.body)
            response = conn.getresponse()
            payload = response.read()
            return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, payload)
        finally:
            conn.close()

    def snapshot(self) -> Snapshot:
        return asyncio.run_coroutine_threadsafe(snapshot(self.world), self.loop).result(timeout=60)


def check_answer(answer: Answer, method: str) -> None:
    """No 5xx; every refusal is problem details with a stable code (see the module docstring)."""
    assert answer.status < 500, (answer.status, answer.body[:300])
    assert answer.status != 101
    if answer.status < 400:
        return
    if "x-request-id" not in answer.headers:
        assert method not in KNOWN_METHODS, (answer.status, answer.body[:300])
        assert answer.status == 400
        return
    assert answer.headers.get("content-type", "").startswith(PROBLEM_TYPE), answer.headers
    if method == "HEAD":
        return
    problem = json.loads(answer.body)
    assert problem["code"] in ERROR_CODES, problem
    assert problem["status"] == answer.status, problem


# --- strategies -------------------------------------------------------------------------------


def encoded(text: str) -> str:
    return quote(text, safe="")


hex_ids = st.text("0123456789abcdef", min_size=32, max_size=32)
segments = st.one_of(
    st.sampled_from(THAI_LAO).map(encoded),
    st.text(max_size=30).map(encoded),
    hex_ids,
    st.text("0123456789ABCDEF", min_size=32, max_size=32),
    st.text("0123456789abcdef", min_size=33, max_size=400),
    st.text("0123456789abcdefxyz-_", min_size=1, max_size=40),
    st.sampled_from(ODD_NUMBERS).map(encoded),
    st.integers(-(10**20), 10**20).map(str),
    st.sampled_from(["", ".", "..", "%00", "%2F", "%2e%2e", "%", "%zz", "~", "LA-MOLSW", "TH-ATPD"]),
)
templates = st.sampled_from(sorted({case.path for case in ROUTES.values()}))


def fill(template: str, values: list[str]) -> str:
    parts = iter(values)
    return PLACEHOLDER.sub(lambda _: next(parts, "x"), template)


route_paths = st.builds(fill, templates, st.lists(segments, min_size=2, max_size=2))
v1_paths = st.one_of(route_paths, st.lists(segments, max_size=5).map(lambda s: "/v1/" + "/".join(s)))
query_values = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.text(max_size=30),
    st.sampled_from(THAI_LAO + ODD_NUMBERS),
)
query_keys = st.one_of(st.sampled_from(["after", "limit", "wait", "x", "ສົມ"]), st.text(max_size=8))
query_pairs = st.lists(st.tuples(query_keys, query_values), max_size=4)
numbers = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.text("0123456789", min_size=1, max_size=30),
    st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=4),
    st.sampled_from(ODD_NUMBERS),
)
# The parameters the listing routes take, each present or not, then any others.
listing_queries = st.tuples(
    st.fixed_dictionaries({}, optional={"after": numbers, "limit": numbers, "wait": numbers}), query_pairs
).map(lambda t: [*t[0].items(), *t[1]])


def holds(key: str, value: str) -> bool:
    """Whether the broker would hold a request with this query parameter (a long poll)."""
    return key == "wait" and value.isascii() and value.isdigit() and len(value) < 20 and int(value) > 0


def without_long_polls(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, "0") if holds(k, v) else (k, v) for k, v in pairs]


def query_text(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{encoded(k)}={encoded(v)}" for k, v in pairs)


queries = st.one_of(
    st.just(""), query_pairs.map(query_text), st.sampled_from(["%zz", "a=b=c", "&&", "=", "%"])
)
header_text = st.one_of(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=80),
    st.sampled_from(THAI_LAO),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=80),
)
sf_items = st.one_of(
    st.from_regex(r"[a-z*][a-z0-9_.*-]{0,8}", fullmatch=True),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=16).map(
        lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
    st.integers(-(10**17), 10**17).map(str),
    st.binary(max_size=80).map(lambda b: ":" + base64.b64encode(b).decode() + ":"),
    st.text("ABCabc0123+/=-_", max_size=24).map(lambda t: f":{t}:"),
    st.sampled_from(["?1", "?0", "1.5", '"sig1"', "()", ";", "=", ",", "(", ")"]),
)
sf_params = st.lists(
    st.tuples(st.sampled_from(["created", "expires", "nonce", "keyid", "alg", "tag", "x", ""]), sf_items),
    max_size=7,
)
components = st.lists(st.sampled_from(COMPONENT_NAMES), max_size=7)


def signature_headers(world: World) -> st.SearchStrategy[dict[str, bytes]]:
    """Signature-Input and Signature shaped like the profile, with any part of them wrong; the
    key id is often a registered one and `created` often the broker's now. (A closure: the
    strategy's repr, which Hypothesis prints, must not hold the world.)"""

    @st.composite
    def headers(draw: st.DrawFn) -> dict[str, bytes]:
        label = draw(st.sampled_from(["sig1", "sig2", "Sig1", "", "sig1 "]))
        params = draw(sf_params)
        if draw(st.booleans()):
            agency = draw(st.sampled_from(["TH-ATPD", "LA-MOLSW", "TH-OPERATOR"]))
            params += [
                ("created", str(world.clock.now() + draw(st.integers(-400, 400)))),
                ("nonce", base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")),
                ("keyid", f'"{world.identity(agency).key_id.hex()}"'),
                ("alg", '"ed25519"'),
                ("tag", '"casebridge-v1"'),
            ]
            params = draw(st.permutations(params))
        inner = "(" + " ".join(draw(components)) + ")" + "".join(f";{k}={v}" for k, v in params)
        signature = ":" + base64.b64encode(draw(st.binary(min_size=0, max_size=80))).decode() + ":"
        fields = {
            "Signature-Input": draw(st.sampled_from([f"{label}={inner}", inner, f"{label}={inner}, x=()"])),
            "Signature": draw(st.sampled_from([f"{label}={signature}", signature, f"{label}=:!!:"])),
        }
        return {name: value.encode() for name, value in fields.items()}

    return headers()


garbage_headers = st.dictionaries(
    st.sampled_from(SIGNED_HEADERS), header_text.map(lambda t: t.encode("utf-8")), max_size=6
)


def mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """`base` truncated, with one byte changed, or with bytes appended."""
    return st.one_of(
        st.integers(0, len(base) - 1).map(lambda n: base[:n]),
        st.tuples(st.integers(0, len(base) - 1), st.integers(1, 255)).map(
            lambda t: base[: t[0]] + bytes([base[t[0]] ^ t[1]]) + base[t[0] + 1 :]
        ),
        st.binary(min_size=1, max_size=64).map(lambda extra: base + extra),
    )


def envelope_bodies(world: World) -> st.SearchStrategy[bytes]:
    sent = world.sent
    return st.one_of(
        mutations(sent.body),
        mutations(sent.header).map(lambda header: frame(header, sent.parts)),
        st.tuples(st.binary(max_size=600), st.binary(max_size=300)).map(lambda t: frame(t[0], [t[1]])),
        st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(4, "big") + b"\x92\xa8CB-ENVLP"),
    )


# --- the properties ---------------------------------------------------------------------------


async def run_in_thread(world: World, test: Callable[[Probe], None]) -> None:
    probe = Probe(world, asyncio.get_running_loop())
    await asyncio.to_thread(test, probe)


async def test_requests_without_a_valid_signature_are_refused_cleanly_and_change_nothing(
    world: World,
) -> None:
    bodies = st.one_of(st.none(), st.binary(max_size=2048), envelope_bodies(world))
    methods = st.sampled_from(KNOWN_METHODS + UNKNOWN_METHODS)
    paths = st.one_of(v1_paths, st.sampled_from(UNSIGNED_PATHS))
    headers = st.one_of(garbage_headers, signature_headers(world))
    targets = st.builds(lambda path, query: path + (f"?{query}" if query else ""), paths, queries)

    def test(probe: Probe) -> None:
        @FUZZ
        @given(st.builds(Sent, methods, targets, headers, bodies))
        def request(sent: Sent) -> None:
            assume(len(sent.target) < MAX_TARGET)
            before = probe.snapshot()
            answer = probe.send(sent)
            check_answer(answer, sent.method)
            if sent.target.startswith("/v1/") and sent.method in KNOWN_METHODS:
                assert answer.status == 401, (answer.status, answer.body[:300])
            assert before.changes(probe.snapshot(), nonces=True) == []

        request()

    await run_in_thread(world, test)


def signed_requests(world: World, honest: Mapping[str, Call], *, fuzz_path: bool) -> st.SearchStrategy[Sent]:
    """A request to one of the routes of `honest` (route name -> its honest call), by a caller
    the route allows, validly signed over exactly what is sent, with a fuzzed query, Range,
    Content-Type or body, and a fuzzed path if asked."""

    @st.composite
    def requests(draw: st.DrawFn) -> Sent:
        route = draw(st.sampled_from(sorted(honest)))
        call = honest[route]
        path = call.path
        if fuzz_path and draw(st.booleans()):
            path = fill(ROUTES[route].path, draw(st.lists(segments, min_size=2, max_size=2)))
        query = call.query
        if not fuzz_path or draw(st.booleans()):
            query = query_text(without_long_polls(draw(listing_queries)))
        if call.body is not None:
            base = world.sent.body if route == "submit_envelope" else call.body
            bodies = st.one_of(
                mutations(base), st.binary(max_size=1024), envelope_bodies(world), st.just(call.body)
            )
        else:
            bodies = st.one_of(st.none(), st.none(), st.binary(min_size=1, max_size=256))
        body = draw(bodies)
        headers: dict[str, str] = {}
        if body is not None:
            headers["Content-Digest"] = httpsig.content_digest(body)
            visible = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
            # Mostly the route's own type, so the body reaches its parser.
            fuzz_type = draw(st.integers(0, 3)) == 0
            headers["Content-Type"] = draw(visible) if fuzz_type else call.content_type or "text/plain"
        target = path + (f"?{query}" if query else "")
        assume(len(target) < MAX_TARGET)
        identity = world.identity(call.caller)
        signed = sign(
            world, identity, method=call.method, target=target, headers=headers, has_body=body is not None
        )
        extra = draw(st.dictionaries(st.sampled_from(["Range", "X-Request-Id"]), header_text, max_size=2))
        return Sent(call.method, target, {**signed, **{k: v.encode() for k, v in extra.items()}}, body)

    return requests()


async def check_signed_requests(world: World, routes: Callable[[Call], bool], *, fuzz_path: bool) -> None:
    calls = {name: await case.honest(world) for name, case in ROUTES.items()}
    honest = {name: call for name, call in calls.items() if routes(call)}

    def test(probe: Probe) -> None:
        @FUZZ
        @given(signed_requests(world, honest, fuzz_path=fuzz_path))
        def request(sent: Sent) -> None:
            before = probe.snapshot()
            answer = probe.send(sent)
            check_answer(answer, sent.method)
            assert answer.status != 401, answer.body[:300]
            if answer.status >= 400:
                assert before.changes(probe.snapshot(), nonces=False) == []

        request()

    await run_in_thread(world, test)


async def test_validly_signed_reads_with_malformed_ids_and_ranges_are_refused_cleanly(world: World) -> None:
    await check_signed_requests(world, lambda call: call.method == "GET", fuzz_path=True)


async def test_validly_signed_listings_with_malformed_queries_are_refused_cleanly(world: World) -> None:
    await check_signed_requests(world, lambda call: bool(call.query), fuzz_path=False)


async def test_validly_signed_writes_with_malformed_bodies_are_refused_cleanly_and_change_nothing(
    world: World,
) -> None:
    await check_signed_requests(world, lambda call: call.method == "POST", fuzz_path=False)


@pytest.mark.parametrize("wait", ["²", "፩", "9" * 4400])
async def test_a_wait_in_digits_int_refuses_is_a_400_not_a_crash(world: World, wait: str) -> None:
    """Found by this fuzzing: the time limit of a long poll parsed `wait` with `str.isdigit`,
    which takes "²", and `int`, which refuses it (and more than 4300 digits): a 500."""
    for path in ("/v1/inbox", "/v1/receipts"):
        reply = await world.broker.client("LA-MOLSW").get(path, query={"wait": wait})
        assert reply.status == 400, reply.body[:300]
        assert (reply.problem["code"], reply.problem["field"]) == ("invalid_field", "wait")
