"""The `casebridge keys ...` commands: what a national authority, an agency and a broker
operator run. `keys.cli` wires them to argparse.

Each command reads the clock once (`now`), calls `keys.lifecycle`, and writes files through
`keys.keystore` / `keys.files`. Order of effects: every output name is checked free before any
work; a keystore is checked to be of the right kind before its passphrase is asked for; an
updated keystore is saved *before* what it issued is written, so a serial or list number is
never reused. Passphrases come only from a prompt or an environment variable
(`keys.passphrase`). Failures are `CaseBridgeError`s.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from keys import lifecycle
from keys.bundle import export_public
from keys.describe import agency_lines, describe_file, identity_lines, key_lines, revocation_lines
from keys.files import PUBLIC_MODE, read_bytes, write_atomic
from keys.fingerprint import fingerprint
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from keys.keystore import (
    KDF_PROFILES,
    KeystoreKind,
    Unlocked,
    load_agency,
    load_broker,
    load_root,
    peek_kind,
    save_identity,
)
from keys.passphrase import DEFAULT_ENV, ROOT_ENV, read_passphrase
from keys.request import parse_request
from protocol.certificate import RootCertificate
from protocol.errors import Conflict, InvalidField, VerificationError


def _now() -> int:
    return int(time.time())


def _say(*lines: str) -> None:
    print("\n".join(lines))


def _free(*paths: str, force: bool = False) -> None:
    for p in paths:
        if not force and Path(p).exists():
            raise Conflict(f"{p} already exists; choose another name or pass --force to replace it.")


def _write_public(path: str, data: bytes, *, overwrite: bool) -> None:
    write_atomic(path, data, mode=PUBLIC_MODE, overwrite=overwrite)


def _root_cert(path: str) -> RootCertificate:
    return RootCertificate.parse(read_bytes(path))


def _passphrase(args: argparse.Namespace, default_env: str, what: str, *, new: bool = False) -> str:
    return read_passphrase(args.passphrase_env, default_env, what=what, new=new)


def _env_for(kind: KeystoreKind) -> str:
    return ROOT_ENV if kind == KeystoreKind.ROOT else DEFAULT_ENV


def _secret(args: argparse.Namespace, path: str, kind: KeystoreKind) -> str:
    """Check the file is a keystore of `kind` (before asking anything), then get its passphrase."""
    peek_kind(path, kind)
    return _passphrase(args, _env_for(kind), f"the {kind} keystore {path}")


def _unlock_root(args: argparse.Namespace, path: str) -> tuple[Unlocked[RootIdentity], str]:
    secret = _secret(args, path, KeystoreKind.ROOT)
    return load_root(path, secret), secret


def _unlock_agency(args: argparse.Namespace, path: str) -> tuple[Unlocked[AgencyIdentity], str]:
    secret = _secret(args, path, KeystoreKind.AGENCY)
    return load_agency(path, secret), secret


def _unlock_broker(args: argparse.Namespace, path: str) -> tuple[Unlocked[BrokerIdentity], str]:
    secret = _secret(args, path, KeystoreKind.BROKER)
    return load_broker(path, secret), secret


def _unlock_any(args: argparse.Namespace, path: str) -> tuple[Unlocked[Any], str]:
    kind = peek_kind(path).kind
    if kind == KeystoreKind.ROOT:
        return _unlock_root(args, path)
    if kind == KeystoreKind.BROKER:
        return _unlock_broker(args, path)
    return _unlock_agency(args, path)


# --- commands ---------------------------------------------------------------------------------


def root_create(args: argparse.Namespace) -> int:
    _free(args.out, args.cert_out, force=args.force)
    root = lifecycle.create_root(args.country, args.name, _now(), args.valid_days)
    passphrase = _passphrase(args, ROOT_ENV, f"the new root keystore {args.out}", new=True)
    save_identity(args.out, root, passphrase, KDF_PROFILES[args.kdf_profile], overwrite=args.force)
    _write_public(args.cert_out, root.certificate.raw, overwrite=args.force)
    _say(
        f"wrote root keystore {args.out} and root certificate {args.cert_out}",
        *identity_lines(root, _now()),
        "Keep the keystore offline. Read the root fingerprint aloud to every partner who pins it.",
    )
    return 0


def agency_create(args: argparse.Namespace) -> int:
    _free(args.out, args.request_out, force=args.force)
    agency = lifecycle.create_agency(args.id, args.name, _now(), args.enc_valid_days)
    passphrase = _passphrase(args, DEFAULT_ENV, f"the new agency keystore {args.out}", new=True)
    save_identity(args.out, agency, passphrase, KDF_PROFILES[args.kdf_profile], overwrite=args.force)
    _write_public(args.request_out, lifecycle.agency_request(agency), overwrite=args.force)
    _say(
        f"wrote agency keystore {args.out} and certification request {args.request_out}",
        *key_lines("signing", agency.public_key),
        "Give the request to your national authority and read this fingerprint to them by phone.",
    )
    return 0


def broker_create(args: argparse.Namespace) -> int:
    _free(args.out, args.request_out, force=args.force)
    broker = lifecycle.create_broker(args.id, args.name)
    passphrase = _passphrase(args, DEFAULT_ENV, f"the new broker keystore {args.out}", new=True)
    save_identity(args.out, broker, passphrase, KDF_PROFILES[args.kdf_profile], overwrite=args.force)
    _write_public(args.request_out, lifecycle.broker_request(broker), overwrite=args.force)
    _say(
        f"wrote broker keystore {args.out} and certification request {args.request_out}",
        *identity_lines(broker, _now()),
        "Have the request certified with --role broker; publish the checkpoint fingerprint.",
    )
    return 0


def certify(args: argparse.Namespace) -> int:
    _free(args.out, force=args.force)
    request = parse_request(read_bytes(args.request))
    if args.expect_fingerprint is not None:
        heard = "".join(args.expect_fingerprint.split())
        if heard != fingerprint(request.public_key).replace(" ", ""):
            raise VerificationError(
                "the request's key fingerprint differs from the one the agency read to you; "
                "do not certify it.",
                reason="certification request fingerprint mismatch",
            )
    unlocked, secret = _unlock_root(args, args.root)
    root, cert = lifecycle.certify(unlocked.identity, request, args.role, _now(), args.valid_days)
    save_identity(args.root, root, secret, unlocked.profile, overwrite=True)
    _write_public(args.out, cert.raw, overwrite=args.force)
    _say(f"wrote certificate {args.out}", *agency_lines(cert))
    return 0


def agency_import_cert(args: argparse.Namespace) -> int:
    root = _root_cert(args.root_cert)
    cert_bytes = read_bytes(args.cert)
    unlocked, secret = _unlock_agency(args, args.keystore)
    agency = lifecycle.import_certificate(unlocked.identity, cert_bytes, root, _now())
    save_identity(args.keystore, agency, secret, unlocked.profile, overwrite=True)
    _say(f"imported the certificate into {args.keystore}", *identity_lines(agency, _now()))
    return 0


def broker_import_cert(args: argparse.Namespace) -> int:
    root = _root_cert(args.root_cert)
    cert_bytes = read_bytes(args.cert)
    unlocked, secret = _unlock_broker(args, args.keystore)
    broker = lifecycle.import_broker_certificate(unlocked.identity, cert_bytes, root, _now())
    save_identity(args.keystore, broker, secret, unlocked.profile, overwrite=True)
    _say(f"imported the certificate into {args.keystore}", *identity_lines(broker, _now()))
    return 0


def request(args: argparse.Namespace) -> int:
    _free(args.out, force=args.force)
    if peek_kind(args.keystore).kind == KeystoreKind.BROKER:
        data = lifecycle.broker_request(_unlock_broker(args, args.keystore)[0].identity)
    else:
        data = lifecycle.agency_request(_unlock_agency(args, args.keystore)[0].identity)
    _write_public(args.out, data, overwrite=args.force)
    _say(f"wrote certification request {args.out}", *describe_file(data, root=None, now=_now()))
    return 0


def rotate(args: argparse.Namespace) -> int:
    unlocked, secret = _unlock_agency(args, args.keystore)
    now = _now()
    agency = lifecycle.rotate_encryption_key(unlocked.identity, now, args.valid_days)
    save_identity(args.keystore, agency, secret, unlocked.profile, overwrite=True)
    new = agency.current_encryption_key(now)
    _say(
        f"added a new encryption key to {args.keystore}; {len(agency.encryption_keys) - 1} older kept",
        *key_lines("encryption", new.public_key),
        f"Publish it to the broker: casebridge publish-keys --keystore {args.keystore} (the next client "
        "command that reaches the broker does it too); export the public bundle again (keys export).",
    )
    return 0


def prune(args: argparse.Namespace) -> int:
    if args.retention_days < 0:
        raise InvalidField("--retention-days", "zero or more days")
    unlocked, secret = _unlock_agency(args, args.keystore)
    retention = args.retention_days * lifecycle.DAY_SECONDS
    agency = lifecycle.prune_encryption_keys(unlocked.identity, _now(), retention)
    dropped = len(unlocked.identity.encryption_keys) - len(agency.encryption_keys)
    save_identity(args.keystore, agency, secret, unlocked.profile, overwrite=True)
    _say(f"dropped {dropped} expired encryption keys; {len(agency.encryption_keys)} kept")
    return 0


def revoke(args: argparse.Namespace) -> int:
    now = _now()
    key_id: bytes | None = None
    if args.key_id is not None:
        try:
            key_id = bytes.fromhex(args.key_id)
        except ValueError as e:
            raise InvalidField("--key-id", "the key id in hex, as keys fingerprint shows it") from e
        if args.reason is None:
            raise InvalidField("--reason", "a reason for the revocation")
    unlocked, secret = _unlock_root(args, args.root)
    if key_id is None:
        root, crl = lifecycle.issue_revocation_list(unlocked.identity, now)
    else:
        at = now if args.at is None else args.at
        root, crl = lifecycle.revoke(unlocked.identity, key_id, at, args.reason, now)
    save_identity(args.root, root, secret, unlocked.profile, overwrite=True)
    _write_public(args.out, crl.raw, overwrite=True)
    _say(f"wrote revocation list {args.out}", *revocation_lines(crl))
    return 0


def fingerprint_file(args: argparse.Namespace) -> int:
    now = _now()
    root = None if args.root_cert is None else _root_cert(args.root_cert)
    if args.unlock:
        _say(*identity_lines(_unlock_any(args, args.file)[0].identity, now))
        return 0
    _say(*describe_file(read_bytes(args.file), root=root, now=now))
    return 0


def export(args: argparse.Namespace) -> int:
    _free(args.out, force=args.force)
    now = _now()
    data = export_public(_unlock_agency(args, args.keystore)[0].identity, now)
    _write_public(args.out, data, overwrite=args.force)
    _say(f"wrote public bundle {args.out}", *describe_file(data, root=None, now=now))
    return 0


def change_passphrase(args: argparse.Namespace) -> int:
    unlocked, _ = _unlock_any(args, args.keystore)
    new = read_passphrase(
        args.new_passphrase_env,
        "CASEBRIDGE_NEW_PASSPHRASE",
        what=args.keystore,
        new=True,
        option="--new-passphrase-env",
    )
    profile = unlocked.profile if args.kdf_profile is None else KDF_PROFILES[args.kdf_profile]
    save_identity(args.keystore, unlocked.identity, new, profile, overwrite=True)
    _say(f"{args.keystore} is now sealed under the new passphrase")
    return 0
