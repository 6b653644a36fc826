"""Signed requests: HTTP Message Signatures (RFC 9421, Ed25519) and Content-Digest (RFC 9530).

Sans-I/O: the caller passes the request's parts, the time and the nonce; nothing here reads a
clock, a socket or a random source.

The CaseBridge request profile:
- One signature, label `sig1`, by the caller's certified agency signing key: `alg="ed25519"`,
  `tag="casebridge-v1"` (RFC 9421 Section 2.3), `created`, an optional `expires`, `nonce` (16
  random bytes, base64url without padding) and `keyid` (lowercase hex of the 16-byte protocol
  key id of the signing public key, `protocol.primitives.key_id`). No other parameter.
- Covered components, in this order: "@method" "@authority" "@path"; "@query" when the request
  has a query; "content-digest" when it has a Content-Digest field; "content-type" when it has a
  Content-Type field. Every request that has a body, even an empty one, carries Content-Digest
  and covers it; the broker then checks the body it received against that value. A verifier
  also accepts "@query" covered on a request without a query (its value is then "?", RFC 9421
  Section 2.2.7). Nothing else may be covered.
- Ed25519 signs the signature base exactly as RFC 9421 Section 3.3.6 says, with no CaseBridge
  signing context, so independent RFC 9421 implementations interoperate; the `tag` and the
  covered method and path keep these signatures apart from any other use.
- "@authority" is normalised (RFC 9421 Section 2.2.3): lowercase host, the scheme's default port
  omitted. "@path" and "@query" are signed as sent, percent-encoded: Thai or Lao text in a query
  is percent-encoded UTF-8, never raw. Every component value is visible ASCII.
- When a request carries several signatures, only the one labelled `sig1` is verified, or the
  only one present; any other is ignored.
- Verification rebuilds the signature base from what the server received and raises
  `AuthError` with a precise `reason` (for our logs; the caller sees the generic remedy).
  Replay is the broker's part: it remembers `(key_id, nonce)` through
  `VerifiedRequest.replay_window_end`, after which the request is refused as too old anyway.
- Content-Digest uses SHA-256 from `hashlib`: RFC 9530 needs SHA-256 and libsodium, through
  PyNaCl, has no incremental SHA-256 for bodies of gigabytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from protocol import structured_fields as sf
from protocol.errors import AuthError, InputError, InvalidField, MalformedInput
from protocol.primitives import KEY_ID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, equal, key_id

LABEL = "sig1"
TAG = "casebridge-v1"
ALG = "ed25519"
NONCE_BYTES = 16
MAX_SKEW_SECONDS = 300
MAX_AGE_SECONDS = 300
DIGEST_ALGORITHM = "sha-256"
SHA256_BYTES = 32

PROFILE_COMPONENTS = ("@method", "@authority", "@path", "@query", "content-digest", "content-type")
_ALWAYS_COVERED = ("@method", "@authority", "@path")
_PARAMETERS = frozenset({"created", "expires", "nonce", "keyid", "alg", "tag"})
_DEFAULT_PORTS = {"http": 80, "https": 443}

_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(r"/[\x21\x22\x24-\x3e\x40-\x7e]*")
_QUERY = re.compile(r"[\x21\x22\x24-\x7e]*")
_HOST = re.compile(r"[a-z0-9._~-]+|\[[0-9a-f:.]+\]")
_PORT = re.compile(r"[0-9]{1,5}")
_VALUE = re.compile(r"[\x20-\x7e\t]*")
_COMPONENT = re.compile(r"@?[a-z0-9!#$%&'*+\-.^_`|~]+")
_KEYID = re.compile(r"[0-9a-f]{32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


# --- Content-Digest (RFC 9530) -----------------------------------------------------------


class ContentDigest:
    """SHA-256 of a body fed in chunks of any size; `finish` once, then feed no more."""

    __slots__ = ("_finished", "_hash")

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self._finished = False

    def update(self, chunk: bytes) -> None:
        if self._finished:
            raise ValueError("ContentDigest already finished")
        self._hash.update(chunk)

    def finish(self) -> bytes:
        """The 32-byte SHA-256 digest of everything fed in."""
        if self._finished:
            raise ValueError("ContentDigest already finished")
        self._finished = True
        return self._hash.digest()


def content_digest_header(digest: bytes) -> str:
    """The Content-Digest field value for a SHA-256 digest: `sha-256=:<base64>:`."""
    if len(digest) != SHA256_BYTES:
        raise InvalidField("digest", f"{SHA256_BYTES} bytes of SHA-256")
    return sf.serialize_dictionary({DIGEST_ALGORITHM: sf.Item(digest)})


def content_digest(body: bytes) -> str:
    """The Content-Digest field value of a body held in memory."""
    digester = ContentDigest()
    digester.update(body)
    return content_digest_header(digester.finish())


def verify_content_digest(header_value: str | None, digest: bytes) -> None:
    """Check a received body's SHA-256 `digest` against a Content-Digest field value.

    Only `sha-256` counts; other algorithms present are ignored; a value without `sha-256`
    is refused. Raises `AuthError`; a mismatch means the body was altered on the way.
    """
    if not header_value:
        raise AuthError(reason="no Content-Digest header")
    with _refused_as_auth():
        members = sf.parse_dictionary(header_value, field="Content-Digest")
    member = members.get(DIGEST_ALGORITHM)
    if member is None:
        raise AuthError(reason="Content-Digest has no sha-256 member")
    if not isinstance(member, sf.Item) or not isinstance(member.value, bytes) or member.params:
        raise AuthError(reason="Content-Digest sha-256 member is not a plain byte sequence")
    if len(member.value) != SHA256_BYTES:
        raise AuthError(reason="Content-Digest sha-256 value is not 32 bytes")
    if not equal(member.value, digest):
        raise AuthError(reason="Content-Digest does not match the body: the body was altered")


# --- components and the signature base (RFC 9421 Section 2) ------------------------------


@contextmanager
def _refused_as_auth() -> Iterator[None]:
    """Turn an input error met while authenticating into `AuthError`, keeping its reason."""
    try:
        yield
    except InputError as e:
        raise AuthError(reason=e.reason) from e


def _malformed(reason: str) -> MalformedInput:
    return MalformedInput(reason=reason)


def normalize_authority(authority: str, *, scheme: str = "https") -> str:
    """The "@authority" value: lowercase host, and the port unless it is `scheme`'s default.

    Refuses user info, non-ASCII hosts (use the A-label) and bad ports with `MalformedInput`.
    """
    default_port = _DEFAULT_PORTS.get(scheme.lower())
    if default_port is None:
        raise _malformed(f"scheme {scheme!r} is neither http nor https")
    if not authority.isascii():
        raise _malformed("authority is not ASCII; give an internationalised host as its A-label")
    text = authority.lower()
    if text.startswith("["):
        end = text.find("]")
        host, rest = (text, "") if end < 0 else (text[: end + 1], text[end + 1 :])
    else:
        host, colon, port_text = text.partition(":")
        rest = colon + port_text
    if not _HOST.fullmatch(host):
        raise _malformed(f"authority host {host!r} is not a host name or IP literal")
    if not rest:
        return host
    if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]):
        raise _malformed(f"authority port {rest!r} is not a port number")
    port = int(rest[1:])
    if not 0 < port <= 65535:
        raise _malformed(f"authority port {port} is out of range")
    return host if port == default_port else f"{host}:{port}"


_SIGNATURE_FIELDS = frozenset({"signature-input", "signature"})
_COVERED_FIELDS = frozenset({"content-digest", "content-type"})


def _header_fields(headers: Mapping[str, str], wanted: frozenset[str]) -> dict[str, str]:
    """The values of the `wanted` fields by lowercase name; repeated lines joined
    with ", " in their order (RFC 9421 Section 2.1)."""
    fields: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key not in wanted:
            continue
        value = value.strip(" \t")
        held = fields.get(key)
        fields[key] = value if held is None else f"{held}, {value}"
    return fields


def _component_values(
    *, method: str, authority: str, path: str, query: str, fields: Mapping[str, str], scheme: str
) -> dict[str, str]:
    """The value of every profile component this request has."""
    if not _METHOD.fullmatch(method):
        raise _malformed(f"method {method!r} is not an HTTP token")
    path = path or "/"
    if not _PATH.fullmatch(path):
        raise _malformed("path is not an absolute, percent-encoded path without '?' or '#'")
    if not _QUERY.fullmatch(query):
        raise _malformed("query is not percent-encoded visible ASCII without '#'")
    values = {
        "@method": method,
        "@authority": normalize_authority(authority, scheme=scheme),
        "@path": path,
        "@query": "?" + query,
    }
    for name in ("content-digest", "content-type"):
        if name in fields:
            values[name] = fields[name]
    return values


def signature_base(components: Sequence[tuple[str, str]], params: sf.Params) -> bytes:
    """The RFC 9421 Section 2.5 signature base for any covered components and parameters.

    `components` are `(identifier, value)` pairs in covered order (identifiers without
    parameters); `params` are the signature parameters in their order. Raises `MalformedInput`.
    """
    names = [name for name, _ in components]
    if len(set(names)) != len(names):
        raise _malformed("a component is covered twice")
    lines: list[str] = []
    for name, value in components:
        if not _COMPONENT.fullmatch(name):
            raise _malformed(f"component identifier {name!r} is not a lowercase name")
        if not _VALUE.fullmatch(value):
            raise _malformed(f"component {name!r} has characters outside visible ASCII")
        # A name `_COMPONENT` matches holds no quote or backslash: as an RFC 8941 String it is
        # itself in quotes, as `sf.serialize_bare_item` would give it.
        lines.append(f'"{name}": {value}')
    covered = " ".join(f'"{name}"' for name in names)
    lines.append(f'"@signature-params": ({covered}){sf.serialize_params(params)}')
    return "\n".join(lines).encode("ascii")


# --- signing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignatureHeaders:
    """The two header values that carry one request signature."""

    signature_input: str
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {"Signature-Input": self.signature_input, "Signature": self.signature}


def _encode_nonce(nonce: bytes) -> str:
    return base64.urlsafe_b64encode(nonce).decode("ascii").rstrip("=")


def sign_request(
    signing_key: nacl.signing.SigningKey,
    *,
    method: str,
    authority: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    has_body: bool,
    created: int,
    nonce: bytes,
    expires: int | None = None,
    scheme: str = "https",
) -> SignatureHeaders:
    """Sign a request under the CaseBridge profile; returns the two header values to add.

    `authority` is host[:port] as the client addresses the broker; `path` is percent-encoded;
    `query` is the text after '?' (empty when there is none); `headers` are the request's
    fields and hold Content-Digest when `has_body`. `nonce` is 16 bytes from the caller's
    random source. Raises `InvalidField` or `MalformedInput` for a request it cannot sign.
    """
    if len(nonce) != NONCE_BYTES:
        raise InvalidField("nonce", f"{NONCE_BYTES} random bytes")
    if created < 0:
        raise InvalidField("created", "Unix seconds")
    if expires is not None and expires <= created:
        raise InvalidField("expires", "a time after created")
    fields = _header_fields(headers, _COVERED_FIELDS)
    if has_body and "content-digest" not in fields:
        raise InvalidField("Content-Digest", "a header on every request with a body")
    values = _component_values(
        method=method, authority=authority, path=path, query=query, fields=fields, scheme=scheme
    )
    covered = [name for name in PROFILE_COMPONENTS if name in values and (name != "@query" or query)]
    params: list[tuple[str, sf.BareItem]] = [("created", created)]
    if expires is not None:
        params.append(("expires", expires))
    params += [
        ("nonce", _encode_nonce(nonce)),
        ("keyid", key_id(bytes(signing_key.verify_key)).hex()),
        ("alg", ALG),
        ("tag", TAG),
    ]
    base = signature_base([(name, values[name]) for name in covered], tuple(params))
    signature: bytes = signing_key.sign(base).signature
    signature_params = sf.InnerList(tuple(sf.Item(name) for name in covered), tuple(params))
    return SignatureHeaders(
        signature_input=sf.serialize_dictionary({LABEL: signature_params}),
        signature=sf.serialize_dictionary({LABEL: sf.Item(signature)}),
    )


# --- parsing and verification ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ParsedSignature:
    """One signature from Signature-Input and Signature, well-formed but not yet verified."""

    label: str
    components: tuple[str, ...]
    created: int
    expires: int | None
    nonce: bytes
    key_id: bytes
    alg: str | None
    tag: str | None
    signature: bytes
    params: sf.Params
    """The signature parameters as received, in order: the "@signature-params" line needs them."""


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    """What a verified signature proves, and what the broker must remember against replay."""

    key_id: bytes
    nonce: bytes
    created: int
    replay_window_end: int
    """Remember `(key_id, nonce)` through this time (inclusive); later the request is too old."""
    content_digest: str | None
    """The signed Content-Digest value the body must match (`verify_content_digest`), if any."""


def _choose_label(labels: Sequence[str]) -> str:
    if LABEL in labels:
        return LABEL
    if len(labels) == 1:
        return labels[0]
    raise AuthError(reason=f"{len(labels)} signatures and none labelled {LABEL!r}")


def _decode_nonce(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise AuthError(reason="nonce is not unpadded base64url")
    try:
        nonce = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as e:
        raise AuthError(reason="nonce is not base64url") from e
    if len(nonce) != NONCE_BYTES or _encode_nonce(nonce) != text:
        raise AuthError(reason=f"nonce is not {NONCE_BYTES} bytes in canonical base64url")
    return nonce


def _typed_params(params: sf.Params) -> tuple[dict[str, int], dict[str, str]]:
    """Split the signature parameters into integers and strings, refusing any other."""
    integers: dict[str, int] = {}
    strings: dict[str, str] = {}
    for name, value in params:
        if name not in _PARAMETERS:
            raise AuthError(reason=f"signature parameter {name!r} is not in the CaseBridge profile")
        if name in ("created", "expires"):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise AuthError(reason=f"signature parameter {name!r} is not a non-negative integer")
            integers[name] = value
        elif isinstance(value, str):
            strings[name] = value
        else:
            raise AuthError(reason=f"signature parameter {name!r} is not a string")
    for required, present in (("created", integers), ("nonce", strings), ("keyid", strings)):
        if required not in present:
            raise AuthError(reason=f"signature parameter {required!r} is missing")
    return integers, strings


def _covered_components(member: sf.InnerList) -> tuple[str, ...]:
    components: list[str] = []
    for item in member.items:
        if not isinstance(item.value, str) or not _COMPONENT.fullmatch(item.value):
            raise AuthError(reason="a covered component is not a lowercase string identifier")
        if item.params:
            raise AuthError(reason=f"component {item.value!r} has parameters; none are supported")
        if item.value in components:
            raise AuthError(reason=f"component {item.value!r} is covered twice")
        components.append(item.value)
    return tuple(components)


def parse_signature(headers: Mapping[str, str]) -> ParsedSignature:
    """Parse the Signature-Input and Signature headers (names in any case) strictly.

    Picks the signature labelled `sig1`, or the only one. Raises `AuthError`.
    """
    fields = _header_fields(headers, _SIGNATURE_FIELDS)
    if not fields.get("signature-input"):
        raise AuthError(reason="no Signature-Input header")
    if not fields.get("signature"):
        raise AuthError(reason="no Signature header")
    with _refused_as_auth():
        inputs = sf.parse_dictionary(fields["signature-input"], field="Signature-Input")
        signatures = sf.parse_dictionary(fields["signature"], field="Signature")
    label = _choose_label(list(inputs))
    member = inputs[label]
    if not isinstance(member, sf.InnerList):
        raise AuthError(reason=f"Signature-Input {label!r} is not an inner list")
    components = _covered_components(member)
    integers, strings = _typed_params(member.params)
    created, expires, keyid = integers["created"], integers.get("expires"), strings["keyid"]
    if expires is not None and expires <= created:
        raise AuthError(reason="expires is not after created")
    if not _KEYID.fullmatch(keyid):
        raise AuthError(reason=f"keyid is not {KEY_ID_BYTES} bytes in lowercase hex")
    signature = signatures.get(label)
    if signature is None:
        raise AuthError(reason=f"no Signature for label {label!r}")
    if not isinstance(signature, sf.Item) or not isinstance(signature.value, bytes) or signature.params:
        raise AuthError(reason=f"Signature {label!r} is not a plain byte sequence")
    if len(signature.value) != SIGNATURE_BYTES:
        raise AuthError(reason=f"Signature {label!r} is not {SIGNATURE_BYTES} bytes")
    return ParsedSignature(
        label=label,
        components=components,
        created=created,
        expires=expires,
        nonce=_decode_nonce(strings["nonce"]),
        key_id=bytes.fromhex(keyid),
        alg=strings.get("alg"),
        tag=strings.get("tag"),
        signature=signature.value,
        params=member.params,
    )


def _check_coverage(
    components: tuple[str, ...], values: Mapping[str, str], *, query: str, has_body: bool
) -> None:
    if has_body and "content-digest" not in values:
        raise AuthError(reason="request has a body but no Content-Digest header")
    for name in components:
        if name not in PROFILE_COMPONENTS:
            raise AuthError(reason=f"signature covers {name!r}, outside the CaseBridge profile")
        if name not in values:
            raise AuthError(reason=f"signature covers {name!r} but the request has no such field")
    required = [*_ALWAYS_COVERED, *(["@query"] if query else [])]
    required += [name for name in ("content-digest", "content-type") if name in values]
    missing = [name for name in required if name not in components]
    if missing:
        raise AuthError(reason=f"signature does not cover {', '.join(missing)}")


def verify_request(
    parsed: ParsedSignature,
    *,
    method: str,
    authority: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    has_body: bool,
    public_key: bytes,
    now: int,
    scheme: str = "https",
    max_skew_seconds: int = MAX_SKEW_SECONDS,
    max_age_seconds: int = MAX_AGE_SECONDS,
) -> VerifiedRequest:
    """Verify `parsed` against the request as the server received it, at time `now`.

    `authority` is the broker's configured public authority or the Host header; `path` is the
    raw, still percent-encoded path and `query` the raw text after '?'; `has_body` says whether
    the request carries a body (aiohttp's `body_exists`). Raises `AuthError`.
    """
    if parsed.tag != TAG:
        raise AuthError(reason=f"tag {parsed.tag!r} is not {TAG!r}")
    if parsed.alg != ALG:
        raise AuthError(reason=f"alg {parsed.alg!r} is not supported; CaseBridge signs with {ALG!r}")
    with _refused_as_auth():
        values = _component_values(
            method=method,
            authority=authority,
            path=path,
            query=query,
            fields=_header_fields(headers, _COVERED_FIELDS),
            scheme=scheme,
        )
    _check_coverage(parsed.components, values, query=query, has_body=has_body)
    if parsed.created > now + max_skew_seconds:
        raise AuthError(reason=f"created {parsed.created} is in the future (now {now})")
    if now - parsed.created > max_age_seconds:
        raise AuthError(reason=f"created {parsed.created} is too old (now {now})")
    if parsed.expires is not None and now > parsed.expires:
        raise AuthError(reason=f"signature expired at {parsed.expires} (now {now})")
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise AuthError(reason="verifying key is not an Ed25519 public key")
    if not equal(parsed.key_id, key_id(public_key)):
        raise AuthError(reason="keyid does not name the verifying key")
    with _refused_as_auth():
        base = signature_base([(name, values[name]) for name in parsed.components], parsed.params)
    try:
        nacl.signing.VerifyKey(public_key).verify(base, parsed.signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError, TypeError) as e:
        raise AuthError(reason="bad signature: the request was altered or signed by another key") from e
    return VerifiedRequest(
        key_id=parsed.key_id,
        nonce=parsed.nonce,
        created=parsed.created,
        replay_window_end=parsed.created + max_age_seconds,
        content_digest=values.get("content-digest"),
    )
