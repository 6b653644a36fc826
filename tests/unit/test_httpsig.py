"""Signed requests (RFC 9421 with Ed25519) and Content-Digest (RFC 9530).

Round trips for the requests CaseBridge makes, one refusal per tampering or policy breach,
strict structured-field parsing (with a hypothesis fuzz), and known answers from the RFCs.
Signatures that are valid but break the profile are made by hand with `signature_base`, so each
test fails for exactly the reason it names.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import nacl.bindings as sodium
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import structured_fields as sf
from protocol.errors import AuthError, CaseBridgeError, InvalidField, MalformedInput
from protocol.httpsig import (
    MAX_AGE_SECONDS,
    MAX_SKEW_SECONDS,
    ContentDigest,
    VerifiedRequest,
    content_digest,
    content_digest_header,
    normalize_authority,
    parse_signature,
    sign_request,
    signature_base,
    verify_content_digest,
    verify_request,
)
from protocol.primitives import key_id

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
KEY = nacl.signing.SigningKey(hashlib.sha256(b"httpsig test agency key").digest())
OTHER_KEY = nacl.signing.SigningKey(hashlib.sha256(b"httpsig another agency key").digest())
PUBLIC = bytes(KEY.verify_key)
NONCE = bytes(range(16))
BODY = "ส่งต่อกรณี ນາງ ສົມພອນ แก้วมะนี".encode() * 100
ENVELOPE_TYPE = "application/vnd.casebridge.envelope"
THAI_QUERY = f"recipient={quote('สมชาย ใจดี')}&file={quote('เอกสารประกอบ.pdf')}"
LAO_QUERY = f"recipient={quote('ນາງ ສົມພອນ ແກ້ວມະນີ')}&file={quote('ເອກະສານ.pdf')}"


@dataclass(frozen=True)
class Request:
    """A request as the client sends it and, unless a test alters it, as the broker receives it."""

    method: str = "GET"
    authority: str = "broker.casebridge.example:8443"
    path: str = "/v1/inbox"
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    has_body: bool = False


def post(body: bytes = BODY, query: str = "") -> Request:
    headers = {"Content-Type": ENVELOPE_TYPE, "Content-Digest": content_digest(body)}
    return Request("POST", path="/v1/envelopes", query=query, headers=headers, has_body=True)


def signed(request: Request, key: nacl.signing.SigningKey = KEY, **options: Any) -> Request:
    options = {"created": NOW, "nonce": NONCE, **options}
    signature = sign_request(
        key,
        method=request.method,
        authority=request.authority,
        path=request.path,
        query=request.query,
        headers=request.headers,
        has_body=request.has_body,
        **options,
    )
    return replace(request, headers={**request.headers, **signature.as_dict()})


def verify(request: Request, public_key: bytes = PUBLIC, **options: Any) -> VerifiedRequest:
    options = {"now": NOW, **options}
    return verify_request(
        parse_signature(request.headers),
        method=request.method,
        authority=request.authority,
        path=request.path,
        query=request.query,
        headers=request.headers,
        has_body=request.has_body,
        public_key=public_key,
        **options,
    )


def refused(request: Request, reason: str, **options: Any) -> None:
    with pytest.raises(AuthError) as caught:
        verify(request, **options)
    assert reason in caught.value.reason


def params(**overrides: sf.BareItem | None) -> sf.Params:
    """The profile's parameters for KEY, with some replaced or (given None) left out."""
    values: dict[str, sf.BareItem | None] = {
        "created": NOW,
        "nonce": base64.urlsafe_b64encode(NONCE).decode().rstrip("="),
        "keyid": key_id(PUBLIC).hex(),
        "alg": "ed25519",
        "tag": "casebridge-v1",
        **overrides,
    }
    return tuple((name, value) for name, value in values.items() if value is not None)


def crafted(request: Request, components: dict[str, str], parameters: sf.Params) -> Request:
    """A request carrying a valid signature by KEY over exactly these components and parameters."""
    base = signature_base(list(components.items()), parameters)
    inner = sf.InnerList(tuple(sf.Item(name) for name in components), parameters)
    headers = {
        **request.headers,
        "Signature-Input": sf.serialize_dictionary({"sig1": inner}),
        "Signature": sf.serialize_dictionary({"sig1": sf.Item(KEY.sign(base).signature)}),
    }
    return replace(request, headers=headers)


def get_components(**extra: str) -> dict[str, str]:
    base = {"@method": "GET", "@authority": "broker.casebridge.example:8443", "@path": "/v1/inbox"}
    return {**base, **extra}


# --- round trips -------------------------------------------------------------------------


def test_get_without_body_round_trips_and_covers_no_content_digest() -> None:
    request = signed(Request())
    verified = verify(request)
    assert parse_signature(request.headers).components == ("@method", "@authority", "@path")
    assert verified.key_id == key_id(PUBLIC)
    assert verified.nonce == NONCE
    assert verified.created == NOW
    assert verified.replay_window_end == NOW + MAX_AGE_SECONDS
    assert verified.content_digest is None


def test_post_with_body_round_trips_and_the_body_matches_the_signed_digest() -> None:
    request = signed(post())
    verified = verify(request)
    assert parse_signature(request.headers).components == (
        "@method",
        "@authority",
        "@path",
        "content-digest",
        "content-type",
    )
    digester = ContentDigest()
    for start in range(0, len(BODY), 1000):
        digester.update(BODY[start : start + 1000])
    verify_content_digest(verified.content_digest, digester.finish())


@pytest.mark.parametrize("query", [THAI_QUERY, LAO_QUERY], ids=["thai", "lao"])
def test_query_with_percent_encoded_thai_or_lao_text_round_trips(query: str) -> None:
    request = signed(post(query=query))
    verify(request)
    assert "@query" in parse_signature(request.headers).components


def test_signature_input_carries_the_profile_parameters() -> None:
    parsed = parse_signature(signed(Request(), expires=NOW + 60).headers)
    assert parsed.label == "sig1"
    assert (parsed.alg, parsed.tag, parsed.expires) == ("ed25519", "casebridge-v1", NOW + 60)
    assert [name for name, _ in parsed.params] == ["created", "expires", "nonce", "keyid", "alg", "tag"]


def test_header_names_are_case_insensitive() -> None:
    request = signed(post())
    shouted = {name.upper(): value for name, value in request.headers.items()}
    verified = verify(replace(request, headers=shouted))
    assert verified.content_digest == request.headers["Content-Digest"]


def test_authority_is_normalised_on_both_sides() -> None:
    verify(
        replace(
            signed(Request(authority="Broker.CaseBridge.Example:443")), authority="broker.casebridge.example"
        )
    )
    http = signed(Request(authority="BROKER:80"), scheme="http")
    verify(replace(http, authority="broker"), scheme="http")
    assert normalize_authority("[::1]:8443") == "[::1]:8443"
    assert normalize_authority("[::1]:443") == "[::1]"


@pytest.mark.parametrize(
    "authority", ["user@broker", "broker:0", "broker:70000", "broker:", "bröker", "broker/x", "[::1"]
)
def test_bad_authorities_are_refused(authority: str) -> None:
    with pytest.raises(MalformedInput):
        normalize_authority(authority)


def test_a_signature_at_the_edges_of_the_window_is_accepted() -> None:
    verify(signed(Request()), now=NOW + MAX_AGE_SECONDS)
    verify(signed(Request(), created=NOW + MAX_SKEW_SECONDS))
    verify(signed(Request(), expires=NOW + 10), now=NOW + 10)


def test_several_signatures_verify_only_sig1() -> None:
    request = signed(Request())
    proxy = 'proxy=("@method");created=1;keyid="x"'
    headers = {
        **request.headers,
        "Signature-Input": f"{proxy}, {request.headers['Signature-Input']}",
        "Signature": f"proxy=:AAAA:, {request.headers['Signature']}",
    }
    assert verify(replace(request, headers=headers)).nonce == NONCE


def test_the_only_signature_is_verified_whatever_its_label() -> None:
    request = signed(Request())
    headers = {name: value.replace("sig1=", "agency=") for name, value in request.headers.items()}
    assert parse_signature(headers).label == "agency"
    verify(replace(request, headers=headers))


# --- tampering and policy ----------------------------------------------------------------

BAD_SIGNATURE = "bad signature"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"method": "PUT"}, BAD_SIGNATURE),
        ({"path": "/v1/envelopes/other"}, BAD_SIGNATURE),
        ({"query": "recipient=LA-MOLSW"}, "does not cover @query"),
        ({"authority": "evil.example:8443"}, BAD_SIGNATURE),
        ({"authority": "broker.casebridge.example"}, BAD_SIGNATURE),
    ],
    ids=["method", "path", "query-added", "authority", "authority-port"],
)
def test_tampered_get_is_refused(change: dict[str, Any], reason: str) -> None:
    refused(replace(signed(Request()), **change), reason)


def test_tampered_query_is_refused() -> None:
    request = signed(post(query=THAI_QUERY))
    refused(replace(request, query=LAO_QUERY), BAD_SIGNATURE)
    refused(replace(request, query=""), BAD_SIGNATURE)


@pytest.mark.parametrize(
    ("header", "value", "reason"),
    [
        ("Content-Digest", content_digest(b"another body"), BAD_SIGNATURE),
        ("Content-Type", "application/json", BAD_SIGNATURE),
        ("Content-Type", None, "covers 'content-type' but the request has no such field"),
        ("Content-Digest", None, "request has a body but no Content-Digest header"),
    ],
    ids=["content-digest", "content-type", "content-type-removed", "content-digest-removed"],
)
def test_tampered_post_headers_are_refused(header: str, value: str | None, reason: str) -> None:
    request = signed(post())
    headers = {name: v for name, v in request.headers.items() if name != header}
    if value is not None:
        headers[header] = value
    refused(replace(request, headers=headers), reason)


def test_content_type_added_to_an_unsigned_field_is_refused() -> None:
    request = signed(Request())
    refused(replace(request, headers={**request.headers, "Content-Type": "text/html"}), "does not cover")


def test_altered_body_is_refused_by_its_digest() -> None:
    verified = verify(signed(post()))
    with pytest.raises(AuthError) as caught:
        verify_content_digest(verified.content_digest, hashlib.sha256(BODY + b"!").digest())
    assert "the body was altered" in caught.value.reason


def test_a_body_smuggled_into_a_get_is_refused() -> None:
    refused(replace(signed(Request()), has_body=True), "request has a body but no Content-Digest")


def test_created_too_old_is_refused() -> None:
    refused(signed(Request()), "too old", now=NOW + MAX_AGE_SECONDS + 1)


def test_created_in_the_future_is_refused() -> None:
    refused(signed(Request(), created=NOW + MAX_SKEW_SECONDS + 1), "in the future")


def test_expired_signature_is_refused() -> None:
    refused(signed(Request(), expires=NOW + 10), "expired", now=NOW + 11)


def test_signature_by_another_key_claiming_our_keyid_is_refused() -> None:
    request = signed(Request(), key=OTHER_KEY)
    forged = request.headers["Signature-Input"].replace(
        key_id(bytes(OTHER_KEY.verify_key)).hex(), key_id(PUBLIC).hex()
    )
    refused(replace(request, headers={**request.headers, "Signature-Input": forged}), BAD_SIGNATURE)


def test_keyid_that_does_not_name_the_verifying_key_is_refused() -> None:
    refused(
        signed(Request()), "keyid does not name the verifying key", public_key=bytes(OTHER_KEY.verify_key)
    )


def test_signature_bytes_altered_is_refused() -> None:
    request = signed(Request())
    parsed = sf.parse_dictionary(request.headers["Signature"], field="Signature")["sig1"]
    assert isinstance(parsed, sf.Item)
    assert isinstance(parsed.value, bytes)
    flipped = bytes([parsed.value[0] ^ 1]) + parsed.value[1:]
    headers = {**request.headers, "Signature": sf.serialize_dictionary({"sig1": sf.Item(flipped)})}
    refused(replace(request, headers=headers), BAD_SIGNATURE)


@pytest.mark.parametrize(
    ("components", "parameters", "reason"),
    [
        (get_components(), params(tag="web-bot-auth"), "tag 'web-bot-auth'"),
        (get_components(), params(tag=None), "tag None"),
        (get_components(), params(alg="rsa-pss-sha512"), "alg 'rsa-pss-sha512' is not supported"),
        (get_components(), params(alg=None), "alg None"),
        (get_components(date="Thu, 01 Jan 2026 00:00:00 GMT"), params(), "outside the CaseBridge profile"),
        ({"@method": "GET", "@path": "/v1/inbox"}, params(), "does not cover @authority"),
    ],
    ids=["wrong-tag", "no-tag", "other-alg", "no-alg", "extra-component", "no-authority"],
)
def test_valid_signature_outside_the_profile_is_refused(
    components: dict[str, str], parameters: sf.Params, reason: str
) -> None:
    refused(crafted(Request(), components, parameters), reason)


def test_signature_omitting_content_digest_on_a_request_with_a_body_is_refused() -> None:
    request = post()
    components = {
        "@method": "POST",
        "@authority": request.authority,
        "@path": request.path,
        "content-type": ENVELOPE_TYPE,
    }
    refused(crafted(request, components, params()), "does not cover content-digest")


def test_profile_signature_made_by_hand_verifies() -> None:
    verify(crafted(Request(), get_components(), params()))


def test_signing_a_body_without_content_digest_is_refused() -> None:
    with pytest.raises(InvalidField):
        signed(replace(post(), headers={"Content-Type": ENVELOPE_TYPE}))


@pytest.mark.parametrize(
    "options", [{"nonce": b"short"}, {"created": -1}, {"expires": NOW}], ids=["nonce", "created", "expires"]
)
def test_signing_with_bad_parameters_is_refused(options: dict[str, Any]) -> None:
    with pytest.raises(InvalidField):
        signed(Request(), **options)


def test_raw_non_ascii_query_cannot_be_signed() -> None:
    with pytest.raises(MalformedInput):
        signed(Request(query="recipient=สมชาย"))


# --- missing and malformed headers -------------------------------------------------------


def _with(request: Request, **headers: str | None) -> dict[str, str]:
    names = {name.replace("_", "-").lower(): value for name, value in headers.items()}
    kept = {name: value for name, value in request.headers.items() if name.lower() not in names}
    return {**kept, **{name: value for name, value in names.items() if value is not None}}


GOOD_INPUT = signed(Request()).headers["Signature-Input"]
GOOD_SIGNATURE = signed(Request()).headers["Signature"]


@pytest.mark.parametrize(
    ("signature_input", "signature", "reason"),
    [
        (None, GOOD_SIGNATURE, "no Signature-Input header"),
        (GOOD_INPUT, None, "no Signature header"),
        ("", GOOD_SIGNATURE, "no Signature-Input header"),
        (GOOD_INPUT, GOOD_SIGNATURE.replace("sig1", "sig2"), "no Signature for label 'sig1'"),
        (f"a={GOOD_INPUT[5:]}, b={GOOD_INPUT[5:]}", GOOD_SIGNATURE, "2 signatures and none labelled"),
        (GOOD_INPUT + ",", GOOD_SIGNATURE, "trailing ','"),
        (f'sig1="@method";created={NOW}', GOOD_SIGNATURE, "not an inner list"),
        (GOOD_INPUT.replace('"@path"', '"@path";req'), GOOD_SIGNATURE, "has parameters"),
        (GOOD_INPUT.replace('"@path"', '"@method"'), GOOD_SIGNATURE, "covered twice"),
        (GOOD_INPUT.replace('"@path"', "path"), GOOD_SIGNATURE, "not a lowercase string identifier"),
        (GOOD_INPUT.replace('"@path"', '"@Path"'), GOOD_SIGNATURE, "not a lowercase string identifier"),
        (GOOD_INPUT.replace(f"created={NOW}", "created=1.5"), GOOD_SIGNATURE, "decimals are not supported"),
        (GOOD_INPUT.replace(f"created={NOW}", f'created="{NOW}"'), GOOD_SIGNATURE, "non-negative integer"),
        (GOOD_INPUT.replace(f"created={NOW};", ""), GOOD_SIGNATURE, "'created' is missing"),
        (GOOD_INPUT + ";created=1", GOOD_SIGNATURE, "duplicate parameter"),
        (GOOD_INPUT + ";context=1", GOOD_SIGNATURE, "not in the CaseBridge profile"),
        (GOOD_INPUT + f";expires={NOW}", GOOD_SIGNATURE, "expires is not after created"),
        (GOOD_INPUT.replace('nonce="', 'nonce="AA'), GOOD_SIGNATURE, "nonce is not 16 bytes"),
        (GOOD_INPUT.replace("nonce=", "x="), GOOD_SIGNATURE, "not in the CaseBridge profile"),
        (GOOD_INPUT.replace('keyid="', 'keyid="A'), GOOD_SIGNATURE, "keyid is not 16 bytes"),
        (GOOD_INPUT, "sig1=:AAAA:", "is not 64 bytes"),
        (GOOD_INPUT, GOOD_SIGNATURE.rstrip(":"), "unterminated byte sequence"),
        (GOOD_INPUT, GOOD_SIGNATURE.replace("==:", ":"), "not padded base64"),
        (GOOD_INPUT, GOOD_SIGNATURE + ";x", "not a plain byte sequence"),
        (GOOD_INPUT, f"{GOOD_SIGNATURE}, {GOOD_SIGNATURE}", "duplicate key 'sig1'"),
        (GOOD_INPUT.replace('"@path"', '"@pa\u0e01th"'), GOOD_SIGNATURE, "non-ASCII"),
    ],
)
def test_missing_or_malformed_signature_headers_are_refused(
    signature_input: str | None, signature: str | None, reason: str
) -> None:
    headers = _with(Request(), signature_input=signature_input, signature=signature)
    with pytest.raises(AuthError) as caught:
        parse_signature(headers)
    assert reason in caught.value.reason


@given(st.text(max_size=300), st.text(max_size=120))
@settings(max_examples=300, deadline=None)
def test_random_signature_headers_raise_only_casebridge_errors(signature_input: str, signature: str) -> None:
    try:
        parse_signature({"Signature-Input": signature_input, "Signature": signature})
    except CaseBridgeError:
        return


@given(st.text(alphabet=st.sampled_from('sig1=()";:*?- ,@abc09+/=\t'), max_size=200))
@settings(max_examples=300, deadline=None)
def test_near_miss_structured_fields_raise_only_casebridge_errors(text: str) -> None:
    for call in (
        lambda: parse_signature({"Signature-Input": text, "Signature": text}),
        lambda: parse_signature({"Signature-Input": GOOD_INPUT, "Signature": text}),
        lambda: verify_content_digest(text, bytes(32)),
    ):
        with contextlib.suppress(CaseBridgeError):
            call()


BARE_ITEMS = st.one_of(
    st.booleans(),
    st.integers(-999_999_999_999_999, 999_999_999_999_999),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20),
    st.binary(max_size=40),
    st.from_regex(r"[A-Za-z*][A-Za-z0-9:/!#$%&'*+.^_`|~-]{0,10}", fullmatch=True).map(sf.Token),
)
KEYS = st.from_regex(r"[a-z*][a-z0-9_.*-]{0,8}", fullmatch=True)
PARAMS = st.dictionaries(KEYS, BARE_ITEMS, max_size=4).map(lambda d: tuple(d.items()))
ITEMS = st.builds(sf.Item, BARE_ITEMS, PARAMS)
MEMBERS = st.one_of(ITEMS, st.builds(sf.InnerList, st.lists(ITEMS, max_size=4).map(tuple), PARAMS))


@given(st.dictionaries(KEYS, MEMBERS, max_size=5))
@settings(max_examples=200, deadline=None)
def test_structured_dictionaries_round_trip(members: dict[str, sf.Member]) -> None:
    text = sf.serialize_dictionary(members)
    assert sf.parse_dictionary(text, field="test") == members
    assert sf.serialize_dictionary(sf.parse_dictionary(text, field="test")) == text


# --- Content-Digest ----------------------------------------------------------------------


def test_content_digest_matches_the_rfc_9530_example() -> None:
    # RFC 9530 (Digest Fields), the examples over the body {"hello": "world"}.
    assert content_digest(b'{"hello": "world"}') == "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"


def test_streamed_digest_equals_libsodium_sha256_of_the_whole_body() -> None:
    digester = ContentDigest()
    for start in range(0, len(BODY), 7):
        digester.update(BODY[start : start + 7])
    digest = digester.finish()
    assert digest == sodium.crypto_hash_sha256(BODY)
    assert content_digest_header(digest) == content_digest(BODY)
    with pytest.raises(ValueError, match="already finished"):
        digester.update(b"more")


def test_content_digest_ignores_other_algorithms_but_needs_sha256() -> None:
    digest = hashlib.sha256(BODY).digest()
    sha512 = base64.b64encode(hashlib.sha512(BODY).digest()).decode()
    verify_content_digest(f"sha-512=:{sha512}:, {content_digest(BODY)}", digest)
    with pytest.raises(AuthError) as caught:
        verify_content_digest(f"sha-512=:{sha512}:", digest)
    assert "no sha-256" in caught.value.reason


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "no Content-Digest header"),
        ("sha-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=", "expected ',' between members"),
        ("sha-256=:AAAA:", "not 32 bytes"),
        ('sha-256="X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="', "not a plain byte sequence"),
        ("sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE:", "not padded base64"),
        ("SHA-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:", "expected a key"),
    ],
)
def test_malformed_content_digest_is_refused(value: str | None, reason: str) -> None:
    with pytest.raises(AuthError) as caught:
        verify_content_digest(value, hashlib.sha256(b'{"hello": "world"}').digest())
    assert reason in caught.value.reason


# --- known answer: RFC 9421 Appendix B.2.6 -----------------------------------------------

# RFC 9421 (HTTP Message Signatures), Appendix B.1.4 "Example Ed25519 Test Key"
# (test-key-ed25519, the JWK "d" value) and Appendix B.2.6 "Signing a Request Using ed25519":
# its covered components, signature base and signature, copied from the RFC text.
RFC_KEY = nacl.signing.SigningKey(base64.urlsafe_b64decode("n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU="))
RFC_COMPONENTS = [
    ("date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("@method", "POST"),
    ("@path", "/foo"),
    ("@authority", "example.com"),
    ("content-type", "application/json"),
    ("content-length", "18"),
]
RFC_PARAMS: sf.Params = (("created", 1618884473), ("keyid", "test-key-ed25519"))
RFC_BASE = (
    '"date": Tue, 20 Apr 2021 02:07:55 GMT\n'
    '"@method": POST\n'
    '"@path": /foo\n'
    '"@authority": example.com\n'
    '"content-type": application/json\n'
    '"content-length": 18\n'
    '"@signature-params": ("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_SIGNATURE_INPUT = (
    'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
    ';created=1618884473;keyid="test-key-ed25519"'
)
RFC_SIGNATURE = (
    "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:"
)


def test_rfc_9421_b26_signature_base_and_signature_match_byte_for_byte() -> None:
    base = signature_base(RFC_COMPONENTS, RFC_PARAMS)
    assert base == RFC_BASE.encode("ascii")
    assert bytes(RFC_KEY.verify_key) == base64.urlsafe_b64decode(
        "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs="
    )
    expected = sf.parse_dictionary(RFC_SIGNATURE, field="Signature")["sig-b26"]
    assert isinstance(expected, sf.Item)
    assert RFC_KEY.sign(base).signature == expected.value


def test_rfc_9421_b26_headers_round_trip_through_structured_fields() -> None:
    for text, field_name in ((RFC_SIGNATURE_INPUT, "Signature-Input"), (RFC_SIGNATURE, "Signature")):
        assert sf.serialize_dictionary(sf.parse_dictionary(text, field=field_name)) == text
    member = sf.parse_dictionary(RFC_SIGNATURE_INPUT, field="Signature-Input")["sig-b26"]
    assert isinstance(member, sf.InnerList)
    assert [item.value for item in member.items] == [name for name, _ in RFC_COMPONENTS]
    assert member.params == RFC_PARAMS
