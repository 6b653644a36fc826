"""What `casebridge audit witness init|show|serve` run.

`init` makes the witness's Ed25519 key in a sealed keystore (kind "witness") and prints its vkey
(type 0x04, the cosignature key) for the broker operator to configure; `serve` runs the
tlog-witness for the logs given by their checkpoint vkeys, printing its URL once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from clients.agency import system_clock
from clients.audit.witness import Witness
from clients.audit.witness_server import WitnessService
from clients.audit.witness_server import serve as serve_witness
from clients.audit.witness_state import WitnessState, create_witness, load_witness, save_witness
from keys.files import FileAccessError
from keys.keystore import KDF_PROFILES, KeystoreKind, peek_kind
from keys.passphrase import read_passphrase
from protocol.errors import InvalidField, MalformedInput
from protocol.note import SIG_ED25519, VerifierKey


def _passphrase(args: argparse.Namespace, *, new: bool = False) -> str:
    what = f"the {'new ' if new else ''}witness keystore {args.keystore}"
    return read_passphrase(args.passphrase_env, args.default_env, what=what, new=new)


def init(args: argparse.Namespace) -> int:
    identity = create_witness(args.name)
    secret = _passphrase(args, new=True)
    save_witness(args.keystore, identity, secret, KDF_PROFILES[args.kdf_profile], overwrite=args.force)
    print(f"wrote witness keystore {args.keystore} for {identity.name}")
    print("Give this witness key (vkey) to the broker operator, with this witness's URL:")
    print(identity.signer().vkey.encode())
    return 0


def show(args: argparse.Namespace) -> int:
    peek_kind(args.keystore, KeystoreKind.WITNESS)
    print(load_witness(args.keystore, _passphrase(args)).signer().vkey.encode())
    return 0


def _logs(texts: list[str]) -> dict[str, VerifierKey]:
    if not texts:
        raise InvalidField(
            "--log", "at least one log checkpoint vkey to witness (or set CASEBRIDGE_WITNESS_LOGS)"
        )
    logs: dict[str, VerifierKey] = {}
    for text in texts:
        try:
            key = VerifierKey.parse(text.strip())
        except MalformedInput as e:
            raise InvalidField("--log", f"a log checkpoint vkey ({e.reason})") from e
        if key.sig_type != SIG_ED25519:
            raise InvalidField("--log", "a log's Ed25519 (type 0x01) checkpoint key, not a cosignature key")
        if logs.setdefault(key.name, key) != key:
            raise InvalidField("--log", f"one key per log origin ({key.name} is given twice)")
    return logs


def serve(args: argparse.Namespace) -> int:
    logs = _logs(args.log if args.log is not None else args.env_logs)
    peek_kind(args.keystore, KeystoreKind.WITNESS)
    identity = load_witness(args.keystore, _passphrase(args))
    state = WitnessState(args.state)
    witness = Witness(identity.signer(), logs)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")

    def announce(url: str) -> None:
        print(f"witness {witness.name} for {', '.join(sorted(logs))} listening on {url}", flush=True)

    try:
        asyncio.run(
            serve_witness(
                WitnessService(witness, state, system_clock),
                host=args.host,
                port=args.port,
                announce=announce,
            )
        )
    except OSError as e:
        raise FileAccessError(
            f"cannot serve on {args.host}:{args.port}: {e.strerror or type(e).__name__}."
        ) from e
    return 0
