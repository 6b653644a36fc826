"""Signed notes, checkpoints and cosignatures (c2sp.org/signed-note, tlog-checkpoint, tlog-cosignature).

Sans-I/O: bytes in, frozen objects out, or an error.

Invariants:
- A note is UTF-8 text in Unicode NFC ending in a newline, with no control character but the
  newline, then a blank line, then 1..100 lines `— <name> base64(key ID || signature)`. The text
  is separated from the signatures by the last blank line. Parsing is strict (canonical base64
  only) and every structural failure is `MalformedInput` with a precise reason.
- A key is known by its (name, 4-byte key ID); the key ID is SHA-256(name || 0x0A || type ||
  public key)[:4], with type 0x01 for Ed25519 note signatures and 0x04 for Ed25519 checkpoint
  cosignatures. Lines from unknown keys are ignored; a line from a known key that fails to verify
  rejects the whole note; a note with no verified signature is rejected (`VerificationError`).
- Type 0x01 signs the note text itself. Type 0x04 signs `cosignature/v1\\ntime <t>\\n` || text and
  carries the u64 big-endian timestamp before the signature. A note text never contains NUL,
  so no note signature can be mistaken for a CaseBridge signature, whose context ends in NUL.
- A checkpoint body is `<origin>\\n<size>\\n<base64 root hash>\\n` and optional non-empty extension
  lines; the size is ASCII decimal without leading zeros, the root hash exactly 32 bytes.
- Signatures use Ed25519 from PyNaCl; key IDs use SHA-256 from hashlib because the specifications
  fix it (it identifies a key, it does not protect anything).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import nacl.exceptions
import nacl.signing

from protocol.codec import nfc
from protocol.errors import InvalidField, MalformedInput, VerificationError
from protocol.merkle import HASH_SIZE, MAX_SIZE

SIG_ED25519 = 0x01
SIG_COSIGNATURE_V1 = 0x04
KEY_ID_SIZE = 4
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 18
EM_DASH = "\u2014"
COSIGNATURE_HEADER = "cosignature/v1\n"
_ED25519_BYTES = 64
_TIMESTAMP_BYTES = 8
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_HEX_KEY_ID = re.compile(r"[0-9a-f]{8}", re.ASCII)


def _malformed(reason: str) -> MalformedInput:
    return MalformedInput(reason=reason)


def strict_b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: padded, no whitespace, and the one canonical spelling."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as e:
        raise _malformed(f"{what}: not base64") from e
    if base64.b64encode(raw).decode("ascii") != text:
        raise _malformed(f"{what}: not canonical base64")
    return raw


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _bad_text(text: str) -> str | None:
    """Why `text` may not appear in a note, or None."""
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        return "contains a control character"
    if not unicodedata.is_normalized("NFC", text):
        return "is not in Unicode NFC"
    return None


def _name_problem(name: str) -> str | None:
    """Why `name` cannot be a key name, or None."""
    if not isinstance(name, str) or not name:
        return "key name is empty"
    if any(c == "+" or c.isspace() for c in name):
        return f"key name {name!r} has a space or '+'"
    reason = _bad_text(name)
    return f"key name {name!r} {reason}" if reason else None


def _parse_name(name: str) -> str:
    reason = _name_problem(name)
    if reason:
        raise _malformed(reason)
    return name


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:KEY_ID_SIZE]


def cosignature_message(text: str, timestamp: int) -> bytes:
    """What a type 0x04 cosignature signs: the header, the time line, then the checkpoint text."""
    return f"{COSIGNATURE_HEADER}time {timestamp}\n{text}".encode()


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: `signature` is everything after the key ID (timestamp first for 0x04)."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{EM_DASH} {self.name} {_b64(self.key_id + self.signature)}\n"

    @classmethod
    def parse(cls, line: str) -> NoteSignature:
        """Parse one line, with or without its final newline."""
        body = line[:-1] if line.endswith("\n") else line
        if not body.startswith(EM_DASH + " ") or "\n" in body:
            raise _malformed("signature line does not start with an em dash and a space")
        parts = body[2:].split(" ")
        if len(parts) != 2:
            raise _malformed("signature line is not '— <name> <base64>'")
        name = _parse_name(parts[0])
        raw = strict_b64decode(parts[1], f"signature of {name!r}")
        if len(raw) <= KEY_ID_SIZE:
            raise _malformed(f"signature of {name!r} is too short")
        return cls(name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:])


@dataclass(frozen=True, slots=True)
class VerifierKey:
    """A public key that verifies note signatures of one type (0x01 or 0x04) under one name."""

    name: str
    sig_type: int
    public_key: bytes

    def __post_init__(self) -> None:
        if _name_problem(self.name):
            raise InvalidField("name", "a non-empty NFC key name without spaces, '+' or control characters")
        if self.sig_type not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise InvalidField("sig_type", "0x01 (Ed25519) or 0x04 (Ed25519 cosignature)")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != 32:
            raise InvalidField("public_key", "a 32-byte Ed25519 public key")

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.sig_type, self.public_key)

    def encode(self) -> str:
        """The vkey: `<name>+<hex key ID>+<base64(type || public key)>`."""
        return f"{self.name}+{self.key_id.hex()}+{_b64(bytes([self.sig_type]) + self.public_key)}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        parts = text.split("+", 2)
        if len(parts) != 3 or not _HEX_KEY_ID.fullmatch(parts[1]):
            raise _malformed("vkey is not '<name>+<8 lowercase hex digits>+<base64>'")
        name = _parse_name(parts[0])
        raw = strict_b64decode(parts[2], "vkey key material")
        if len(raw) != 33 or raw[0] not in (SIG_ED25519, SIG_COSIGNATURE_V1):
            raise _malformed("vkey is not an Ed25519 (0x01) or cosignature (0x04) key")
        vkey = cls(name, raw[0], raw[1:])
        if vkey.key_id.hex() != parts[1]:
            raise _malformed(f"vkey {name!r}: key ID does not match the name and key")
        return vkey

    def verify(self, text: str, signature: NoteSignature) -> int | None:
        """Verify one signature over `text`; return the cosignature timestamp (None for 0x01)."""
        if signature.name != self.name or signature.key_id != self.key_id:
            raise VerificationError(reason=f"signature is not by key {self.name}+{self.key_id.hex()}")
        timestamp: int | None = None
        raw, message = signature.signature, text.encode()
        if self.sig_type == SIG_COSIGNATURE_V1:
            try:
                timestamp = cosignature_timestamp(signature)
            except MalformedInput as e:
                raise VerificationError(reason=e.reason) from e
            raw, message = raw[_TIMESTAMP_BYTES:], cosignature_message(text, timestamp)
        if len(raw) != _ED25519_BYTES:
            raise VerificationError(reason=f"signature by {self.name}: not {_ED25519_BYTES} bytes")
        try:
            nacl.signing.VerifyKey(self.public_key).verify(message, raw)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.CryptoError, ValueError) as e:
            raise VerificationError(reason=f"signature by {self.name}: bad signature") from e
        return timestamp


def cosignature_timestamp(signature: NoteSignature) -> int:
    """The timestamp of a type 0x04 cosignature (u64 big-endian before a 64-byte signature)."""
    if len(signature.signature) != _TIMESTAMP_BYTES + _ED25519_BYTES:
        raise _malformed(f"cosignature by {signature.name!r} is not 8 + 64 bytes")
    timestamp = int.from_bytes(signature.signature[:_TIMESTAMP_BYTES], "big")
    if timestamp > MAX_SIZE:
        raise _malformed(f"cosignature by {signature.name!r}: timestamp above 2**63 - 1")
    return timestamp


class NoteSigner:
    """An Ed25519 signing key under a name: signs notes (0x01) or cosigns checkpoints (0x04)."""

    __slots__ = ("_key", "vkey")

    def __init__(self, name: str, key: nacl.signing.SigningKey, sig_type: int = SIG_ED25519) -> None:
        self._key = key
        self.vkey = VerifierKey(nfc(name), sig_type, bytes(key.verify_key))

    def sign(self, text: str, *, timestamp: int | None = None) -> NoteSignature:
        """Sign `text` (a cosigner needs `timestamp`, Unix seconds; a note signer takes none)."""
        _check_note_text(text)
        message = text.encode()
        prefix = b""
        if self.vkey.sig_type == SIG_COSIGNATURE_V1:
            if (
                isinstance(timestamp, bool)
                or not isinstance(timestamp, int)
                or not 0 <= timestamp <= MAX_SIZE
            ):
                raise InvalidField("timestamp", "Unix seconds in 0..2**63 - 1 for a cosignature")
            prefix = timestamp.to_bytes(_TIMESTAMP_BYTES, "big")
            message = cosignature_message(text, timestamp)
        elif timestamp is not None:
            raise InvalidField("timestamp", "absent for an Ed25519 note signature")
        signed: bytes = self._key.sign(message).signature
        return NoteSignature(self.vkey.name, self.vkey.key_id, prefix + signed)


def _check_note_text(text: str) -> None:
    if not isinstance(text, str) or not text.endswith("\n"):
        raise InvalidField("text", "note text ending in a newline")
    reason = _bad_text(text)
    if reason:
        raise InvalidField("text", f"note text that is NFC without control characters (it {reason})")


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed note: its text (with the final newline) and every signature line, unverified."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def encode(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()


def parse_note(data: bytes) -> Note:
    """Split a signed note into text and signature lines; checks structure only, not signatures."""
    if len(data) > MAX_NOTE_BYTES:
        raise _malformed(f"note of {len(data)} bytes exceeds {MAX_NOTE_BYTES}")
    try:
        whole = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _malformed("note is not UTF-8") from e
    reason = _bad_text(whole)
    if reason:
        raise _malformed(f"note {reason}")
    split = whole.rfind("\n\n")
    if split < 0 or not whole.endswith("\n"):
        raise _malformed("note has no blank line before its signatures, or no final newline")
    lines = whole[split + 2 : -1].split("\n") if len(whole) > split + 2 else []
    if not lines or len(lines) > MAX_SIGNATURES:
        raise _malformed(f"note needs 1..{MAX_SIGNATURES} signature lines, has {len(lines)}")
    return Note(whole[: split + 1], tuple(NoteSignature.parse(line) for line in lines))


@dataclass(frozen=True, slots=True)
class VerifiedSignature:
    key: VerifierKey
    timestamp: int | None


@dataclass(frozen=True, slots=True)
class VerifiedNote:
    """A note whose `verified` signatures were checked; its other lines are by unknown keys."""

    text: str
    verified: tuple[VerifiedSignature, ...]
    note: Note


def sign_note(text: str, signers: Sequence[NoteSigner], *, timestamp: int | None = None) -> bytes:
    """Sign NFC-normalised `text` with each signer (cosigners take `timestamp`)."""
    if not signers:
        raise InvalidField("signers", "at least one signer")
    text = nfc(text)
    sigs = tuple(
        s.sign(text, timestamp=timestamp if s.vkey.sig_type == SIG_COSIGNATURE_V1 else None) for s in signers
    )
    return Note(text, sigs).encode()


def add_signatures(note: bytes, signatures: Sequence[NoteSignature]) -> bytes:
    """Append signature lines (e.g. witness cosignatures) to a signed note, skipping duplicates."""
    parsed = parse_note(note)
    merged = list(parsed.signatures)
    merged.extend(s for s in signatures if s not in merged)
    if len(merged) > MAX_SIGNATURES:
        raise InvalidField("signatures", f"at most {MAX_SIGNATURES} on one note")
    return Note(parsed.text, tuple(merged)).encode()


def open_note(data: bytes, verifiers: Sequence[VerifierKey]) -> VerifiedNote:
    """Parse and verify a note: raise unless a known key verifies and no known key fails."""
    note = parse_note(data)
    known: dict[tuple[str, bytes], VerifierKey] = {}
    for vkey in verifiers:
        if known.setdefault((vkey.name, vkey.key_id), vkey) != vkey:
            raise InvalidField("verifiers", f"one key per name and key ID ({vkey.name}+{vkey.key_id.hex()})")
    verified: dict[tuple[str, bytes], VerifiedSignature] = {}
    for signature in note.signatures:
        signer = known.get((signature.name, signature.key_id))
        if signer is None:
            continue
        timestamp = signer.verify(note.text, signature)
        verified.setdefault((signer.name, signer.key_id), VerifiedSignature(signer, timestamp))
    if not verified:
        raise VerificationError(reason="note has no signature by a known key")
    return VerifiedNote(note.text, tuple(verified.values()), note)


# --- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A log's signed tree head: origin, tree size, RFC 6962 root hash, optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, line in (("origin", self.origin), *(("extension", e) for e in self.extensions)):
            if not isinstance(line, str) or not line or "\n" in line or _bad_text(line):
                raise InvalidField(field, "a non-empty NFC line without control characters")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_SIZE:
            raise InvalidField("size", f"an integer in 0..{MAX_SIZE}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise InvalidField("root_hash", f"{HASH_SIZE} bytes")

    def text(self) -> str:
        lines = [self.origin, str(self.size), _b64(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        reason = _bad_text(text)
        if reason:
            raise _malformed(f"checkpoint {reason}")
        if not text.endswith("\n"):
            raise _malformed("checkpoint does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise _malformed("checkpoint has fewer than three lines")
        origin, size, root, *extensions = lines
        if not origin or any(not line for line in extensions):
            raise _malformed("checkpoint has an empty origin or extension line")
        if not _DECIMAL.fullmatch(size) or int(size) > MAX_SIZE:
            raise _malformed(f"checkpoint size {size[:24]!r} is not a decimal without leading zeros")
        root_hash = strict_b64decode(root, "checkpoint root hash")
        if len(root_hash) != HASH_SIZE:
            raise _malformed(f"checkpoint root hash is {len(root_hash)} bytes, not {HASH_SIZE}")
        return cls(origin, int(size), root_hash, tuple(extensions))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint verified under its log key, with the cosignatures of known cosigners."""

    checkpoint: Checkpoint
    note: bytes
    cosignatures: tuple[VerifiedSignature, ...]


def sign_checkpoint(checkpoint: Checkpoint, log: NoteSigner) -> bytes:
    if log.vkey.sig_type != SIG_ED25519:
        raise InvalidField("log", "an Ed25519 (0x01) note signer")
    return sign_note(checkpoint.text(), [log])


def cosign_checkpoint(note: bytes, cosigner: NoteSigner, timestamp: int) -> NoteSignature:
    """A witness's cosignature line for a checkpoint note (whose signatures it checked itself)."""
    if cosigner.vkey.sig_type != SIG_COSIGNATURE_V1:
        raise InvalidField("cosigner", "an Ed25519 cosignature (0x04) signer")
    text = parse_note(note).text
    Checkpoint.parse(text)
    return cosigner.sign(text, timestamp=timestamp)


def open_checkpoint(
    data: bytes, *, origin: str, log_key: VerifierKey, cosigners: Sequence[VerifierKey] = ()
) -> SignedCheckpoint:
    """Verify a checkpoint note: the expected origin, the log's signature, and known cosignatures."""
    if log_key.sig_type != SIG_ED25519 or any(c.sig_type != SIG_COSIGNATURE_V1 for c in cosigners):
        raise InvalidField("keys", "an Ed25519 (0x01) log key and cosignature (0x04) cosigner keys")
    opened = open_note(data, [log_key, *cosigners])
    checkpoint = Checkpoint.parse(opened.text)
    if checkpoint.origin != origin:
        raise VerificationError(reason=f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    if not any(v.key == log_key for v in opened.verified):
        raise VerificationError(reason=f"checkpoint is not signed by the log key {log_key.name}")
    cosigned = tuple(v for v in opened.verified if v.key != log_key)
    return SignedCheckpoint(checkpoint, bytes(data), cosigned)
