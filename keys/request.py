"""Certification requests: what an agency (or broker) hands its national authority.

A request is `[bin body, bin signature]` with body `["CB-CSR", 1, agency_id, name,
signing_public_key]`, signed by that very key under its own context, so it proves possession
of the key being certified. It carries no secret and no time: the authority decides validity
and roles, and confirms the key's fingerprint with the agency out of band before certifying.

`parse_request` verifies the signature; nothing here returns a bool.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import nacl.signing

from protocol import codec
from protocol.certificate import AGENCY_ID, MAX_NAME, join_signed, split_signed
from protocol.errors import InvalidField, UnsupportedVersion
from protocol.primitives import PUBLIC_KEY_BYTES, key_id, sign, verify

MAGIC = "CB-CSR"
VERSION = 1
CTX_REQUEST = b"casebridge/certification-request-v1\x00"


@dataclass(frozen=True, slots=True)
class CertificationRequest:
    agency_id: str
    name: str
    public_key: bytes
    raw: bytes = field(repr=False)

    @property
    def key_id(self) -> bytes:
        return key_id(self.public_key)


def check_agency_id(agency_id: str) -> str:
    if not AGENCY_ID.fullmatch(agency_id):
        raise InvalidField("agency id", "a country code, a dash and capitals or digits, such as TH-ATPD")
    return agency_id


def check_name(name: str) -> str:
    name = codec.nfc(name).strip()
    if not name or len(name) > MAX_NAME:
        raise InvalidField("name", f"1 to {MAX_NAME} characters")
    return name


def create_request(signing_key: nacl.signing.SigningKey, *, agency_id: str, name: str) -> bytes:
    """A signed certification request for `signing_key`."""
    body = codec.encode(
        [MAGIC, VERSION, check_agency_id(agency_id), check_name(name), bytes(signing_key.verify_key)]
    )
    return join_signed(body, sign(signing_key, CTX_REQUEST, body))


def parse_request(data: bytes) -> CertificationRequest:
    """Parse a request and verify its proof of possession; raises `MalformedInput` or
    `VerificationError`."""
    body, signature = split_signed(data, "certification request")
    items = codec.array(codec.decode(body), "certification request", 5)
    codec.literal(items[0], "magic", MAGIC)
    version = codec.int_(items[1], "version")
    if version != VERSION:
        raise UnsupportedVersion(reason=f"certification request version {version}")
    request = CertificationRequest(
        agency_id=codec.str_(items[2], "agency_id", pattern=AGENCY_ID),
        name=codec.str_(items[3], "name", max_len=MAX_NAME),
        public_key=codec.bin_(items[4], "public_key", PUBLIC_KEY_BYTES),
        raw=bytes(data),
    )
    verify(request.public_key, CTX_REQUEST, body, signature, what="certification request")
    return request
