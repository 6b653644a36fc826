"""Envelope v1 manifest: part 0 of an envelope, the referral body and the attachments' names,
media types and lengths (byte-exact in docs/protocol.md). Sans-I/O.

Invariants: `Manifest.parse` raises `MalformedInput` naming the first problem; the fast reading
of the common shape (`well_formed_manifest`) returns what the checked reading returns, or None.
A file name a recipient writes passes `check_filename` (NFC, no path, no control characters).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from protocol import codec
from protocol.certificate import AGENCY_ID
from protocol.envelope_header import ID_BYTES, MAX_ATTACHMENTS, MAX_MANIFEST_BYTES, MAX_RECIPIENTS, VERSION
from protocol.errors import InvalidField, MalformedInput
from protocol.stream import MAX_PADDED

MANIFEST_LIMITS = codec.Limits(max_bytes=MAX_MANIFEST_BYTES + 4096, max_bin_len=MAX_MANIFEST_BYTES)
MEDIA_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}(;[ -~]{1,200})?")
FILENAME_FORBIDDEN = frozenset("/\\\x00")


def check_filename(name: str) -> str:
    """A file name a recipient can safely write: NFC, no path, no control characters."""
    name = codec.nfc(name)
    if not name or len(name) > 255 or name in {".", ".."}:
        raise InvalidField("filename", "1 to 255 characters, not '.' or '..'")
    if any(c in FILENAME_FORBIDDEN or ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise InvalidField("filename", "no '/', '\\' or control characters")
    return name


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    filename: str
    media_type: str
    length: int


@dataclass(frozen=True, slots=True)
class Manifest:
    envelope_id: bytes
    sender_id: str
    recipients: tuple[str, ...]
    content_type: str
    body: bytes
    attachments: tuple[AttachmentInfo, ...]

    def encode(self) -> bytes:
        return codec.encode(
            [
                "CB-MANIFEST",
                VERSION,
                self.envelope_id,
                self.sender_id,
                list(self.recipients),
                self.content_type,
                self.body,
                [[i + 1, a.filename, a.media_type, a.length] for i, a in enumerate(self.attachments)],
            ],
            limits=MANIFEST_LIMITS,
        )

    @classmethod
    def parse(cls, data: bytes) -> Manifest:
        value = codec.decode(data, limits=MANIFEST_LIMITS)
        manifest = well_formed_manifest(value)
        return manifest if manifest is not None else cls._from_checked(value)

    @classmethod
    def _from_checked(cls, value: object) -> Manifest:
        items = codec.array(value, "manifest", 8)
        codec.literal(items[0], "manifest.magic", "CB-MANIFEST")
        codec.literal(items[1], "manifest.version", VERSION)
        recipients = tuple(
            codec.str_(r, "manifest.recipients", pattern=AGENCY_ID)
            for r in codec.array(items[4], "manifest.recipients", max_len=MAX_RECIPIENTS)
        )
        attachments = []
        for i, raw in enumerate(codec.array(items[7], "manifest.attachments", max_len=MAX_ATTACHMENTS)):
            a = codec.array(raw, f"manifest.attachments[{i}]", 4)
            if codec.int_(a[0], "part_no") != i + 1:
                raise MalformedInput(reason="manifest attachments out of order")
            attachments.append(
                AttachmentInfo(
                    filename=codec.str_(a[1], "filename", max_len=255),
                    media_type=codec.str_(a[2], "media_type", max_len=300, pattern=MEDIA_TYPE),
                    length=codec.int_(a[3], "length", 0, MAX_PADDED),
                )
            )
        return cls(
            envelope_id=codec.bin_(items[2], "manifest.envelope_id", ID_BYTES),
            sender_id=codec.str_(items[3], "manifest.sender_id", pattern=AGENCY_ID),
            recipients=recipients,
            content_type=codec.str_(items[5], "manifest.content_type", max_len=300, pattern=MEDIA_TYPE),
            body=codec.bin_(items[6], "manifest.body", max_len=MAX_MANIFEST_BYTES),
            attachments=tuple(attachments),
        )


def well_formed_manifest(value: object) -> Manifest | None:
    """The manifest `Manifest.parse` reads from a decoded value of the common shape (exact types,
    lengths and ranges, checked inline); None on any doubt, for the checked reading to name."""
    if not (type(value) is list and len(value) == 8):
        return None
    magic, version, envelope_id, sender_id, recipients, content_type, body, attachments = value
    if not (
        type(magic) is str
        and magic == "CB-MANIFEST"
        and type(version) is int
        and version == VERSION
        and type(envelope_id) is bytes
        and len(envelope_id) == ID_BYTES
        and type(sender_id) is str
        and AGENCY_ID.fullmatch(sender_id)
        and type(recipients) is list
        and len(recipients) <= MAX_RECIPIENTS
        and all(type(r) is str and AGENCY_ID.fullmatch(r) for r in recipients)
        and type(content_type) is str
        and len(content_type) <= 300
        and MEDIA_TYPE.fullmatch(content_type)
        and type(body) is bytes
        and len(body) <= MAX_MANIFEST_BYTES
        and type(attachments) is list
        and len(attachments) <= MAX_ATTACHMENTS
    ):
        return None
    infos = []
    for i, a in enumerate(attachments):
        if not (
            type(a) is list
            and len(a) == 4
            and type(a[0]) is int
            and a[0] == i + 1
            and type(a[1]) is str
            and len(a[1]) <= 255
            and type(a[2]) is str
            and len(a[2]) <= 300
            and MEDIA_TYPE.fullmatch(a[2])
            and type(a[3]) is int
            and 0 <= a[3] <= MAX_PADDED
        ):
            return None
        infos.append(AttachmentInfo(a[1], a[2], a[3]))
    return Manifest(envelope_id, sender_id, tuple(recipients), content_type, body, tuple(infos))
