"""What a witness keeps: its key (in a sealed keystore) and, per log, what it last cosigned.

- Keystore: a `keys.keystore` file of kind "witness" whose plaintext is the canonical msgpack
  `["CB-WITNESS-ID", 1, name, seed]`; the key signs type 0x04 cosignatures under `name`.
- State: `witness-state.json` in the witness's state directory, one entry per log origin (size,
  root, checkpoint text, time cosigned), written atomically with mode 0600 before an answer
  leaves; `evidence.jsonl` beside it collects validly signed checkpoints the witness refused as
  inconsistent (proof that a log forked), one JSON object per line, appended and fsynced.

Invariants: a state file that does not parse is refused, never reset (a witness that forgot what
it cosigned could be made to sign a fork); sizes never go down in what is written.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.signing

from clients.audit.witness import LogRecord
from keys.files import PRIVATE_MODE, read_bytes, write_atomic
from keys.keystore import DEFAULT_PROFILE, KdfProfile, KeystoreKind, open_sealed, read_keystore_file, seal
from protocol import codec
from protocol.errors import KeystoreCorrupted, KeystoreError, MalformedInput, NotFound
from protocol.merkle import HASH_SIZE
from protocol.note import SIG_COSIGNATURE_V1, NoteSigner
from protocol.primitives import Random, system_random

STATE_FILE = "witness-state.json"
EVIDENCE_FILE = "evidence.jsonl"
FORMAT = "casebridge-witness-state/v1"
MAGIC = "CB-WITNESS-ID"
SEED_BYTES = 32
MAX_STATE_BYTES = 16 << 20


@dataclass(frozen=True, slots=True)
class WitnessIdentity:
    name: str
    seed: bytes = field(repr=False)

    def signer(self) -> NoteSigner:
        return NoteSigner(self.name, nacl.signing.SigningKey(self.seed), SIG_COSIGNATURE_V1)

    def encode(self) -> bytes:
        return codec.encode([MAGIC, 1, self.name, self.seed])

    @classmethod
    def parse(cls, data: bytes) -> WitnessIdentity:
        items = codec.array(codec.decode(data), "witness identity", 4)
        codec.literal(items[0], "magic", MAGIC)
        codec.literal(items[1], "version", 1)
        identity = cls(codec.str_(items[2], "name", max_len=256), codec.bin_(items[3], "seed", SEED_BYTES))
        identity.signer()
        return identity


def create_witness(name: str, rng: Random = system_random) -> WitnessIdentity:
    identity = WitnessIdentity(codec.nfc(name), rng(SEED_BYTES))
    identity.signer()
    return identity


def save_witness(
    path: str | os.PathLike[str],
    identity: WitnessIdentity,
    passphrase: str,
    profile: KdfProfile = DEFAULT_PROFILE,
    *,
    overwrite: bool = False,
) -> None:
    data = seal(KeystoreKind.WITNESS, identity.encode(), passphrase, profile)
    write_atomic(path, data, mode=PRIVATE_MODE, overwrite=overwrite)


def load_witness(path: str | os.PathLike[str], passphrase: str) -> WitnessIdentity:
    try:
        opened = open_sealed(read_keystore_file(path), passphrase, KeystoreKind.WITNESS)
    except KeystoreError as e:
        raise type(e)(f"{os.fspath(path)}: {e.detail}", reason=e.reason) from e
    try:
        return WitnessIdentity.parse(opened.plaintext)
    except (MalformedInput, ValueError) as e:
        raise KeystoreCorrupted(
            f"{os.fspath(path)}: the witness key inside is not readable.", reason=str(e)
        ) from e


def _record(doc: Any) -> LogRecord:
    if not isinstance(doc, dict):
        raise TypeError("a log record is an object")
    size, cosigned_at = doc["size"], doc["cosigned_at"]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (size, cosigned_at)):
        raise TypeError("size and cosigned_at are non-negative integers")
    root = base64.b64decode(doc["root_hash"], validate=True)
    if len(root) != HASH_SIZE or not isinstance(doc["checkpoint"], str):
        raise ValueError("root_hash is 32 bytes and checkpoint is text")
    return LogRecord(size, root, doc["checkpoint"], cosigned_at)


class WitnessState:
    """The witness's records, one per log origin, in `directory`."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.records: dict[str, LogRecord] = self._load()

    @property
    def path(self) -> Path:
        return self.directory / STATE_FILE

    def _load(self) -> dict[str, LogRecord]:
        try:
            data = read_bytes(self.path, max_bytes=MAX_STATE_BYTES)
        except NotFound:
            return {}
        try:
            doc = json.loads(data.decode("utf-8"))
            if (
                not isinstance(doc, dict)
                or doc.get("format") != FORMAT
                or not isinstance(doc.get("logs"), dict)
            ):
                raise ValueError(f"not a {FORMAT} document")
            return {str(origin): _record(item) for origin, item in doc["logs"].items()}
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, binascii.Error) as e:
            raise MalformedInput(
                f"the witness state {self.path} is damaged ({e}). Restore it from a backup; never delete it, "
                "or the witness may cosign a fork of a log it already witnessed.",
                reason=str(e),
            ) from e

    def save(self, records: Mapping[str, LogRecord]) -> None:
        """Write every record atomically (0600); the caller holds the witness's lock."""
        for origin, record in records.items():
            held = self.records.get(origin)
            if held is not None and record.size < held.size:
                raise ValueError(f"{origin}: would record size {record.size} below {held.size}")
        logs = {
            origin: {
                "size": r.size,
                "root_hash": base64.b64encode(r.root_hash).decode("ascii"),
                "checkpoint": r.checkpoint,
                "cosigned_at": r.cosigned_at,
            }
            for origin, r in sorted(records.items())
        }
        document = json.dumps({"format": FORMAT, "logs": logs}, ensure_ascii=False, indent=1) + "\n"
        write_atomic(self.path, document.encode("utf-8"), mode=PRIVATE_MODE, overwrite=True)
        self.records = dict(records)

    def record_evidence(self, entry: Mapping[str, Any]) -> None:
        """Append one refused-but-validly-signed checkpoint to the evidence file (fsynced)."""
        line = (json.dumps(dict(entry), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.directory / EVIDENCE_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_MODE)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
