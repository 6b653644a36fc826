"""`casebridge keys ...`: argument parsing for the commands in `keys.commands`.

No option ever takes a passphrase: only `--passphrase-env NAME`, the name of a variable, and
abbreviations are off so `--passphrase X` cannot silently match it. Errors are
`CaseBridgeError`s that the dispatcher prints as one line; keystore permission warnings are
printed as `casebridge: warning: ...`.
"""

from __future__ import annotations

import argparse
import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any

from keys import commands, lifecycle
from keys.keystore import KDF_PROFILES, LooseKeystorePermissions
from keys.passphrase import DEFAULT_ENV, ROOT_ENV
from protocol.certificate import Role
from protocol.errors import VerificationError

Run = Callable[[argparse.Namespace], int]


def _command(fn: Run) -> Run:
    """Show keystore warnings on stderr and give local verification failures their reason."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LooseKeystorePermissions)
            try:
                return fn(args)
            except VerificationError as e:
                if e.reason in e.detail:
                    raise
                raise type(e)(f"{e.detail} ({e.reason})", reason=e.reason) from e
            finally:
                for message in dict.fromkeys(str(w.message) for w in caught):
                    print(f"casebridge: warning: {message}", file=sys.stderr)

    return run


# --- argument parsing -------------------------------------------------------------------------


def _parser(
    sub: argparse._SubParsersAction[Any], name: str, run: Run, help_text: str
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, allow_abbrev=False
    )
    p.set_defaults(run=_command(run))
    return p


def _group(
    sub: argparse._SubParsersAction[Any], name: str, help_text: str
) -> argparse._SubParsersAction[Any]:
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, description=help_text, allow_abbrev=False
    )
    group: argparse._SubParsersAction[Any] = p.add_subparsers(
        dest=f"{name}_command", required=True, metavar="COMMAND"
    )
    return group


def _secret_options(p: argparse.ArgumentParser, default_env: str) -> None:
    p.add_argument(
        "--passphrase-env",
        metavar="NAME",
        help=f"read the passphrase from environment variable NAME (default: {default_env} if set, else ask)",
    )


def _new_file_options(p: argparse.ArgumentParser, default_env: str) -> None:
    _secret_options(p, default_env)
    p.add_argument("--kdf-profile", choices=sorted(KDF_PROFILES), default="moderate")
    p.add_argument("--force", action="store_true", help="replace existing files")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `casebridge keys ...` to the `casebridge` command."""
    keys = _group(sub, "keys", "National roots, agency keys, certification, rotation and revocation.")

    root = _group(keys, "root", "A country's national root key.")
    p = _parser(root, "create", commands.root_create, "Create a national root keystore and its certificate.")
    p.add_argument("--country", required=True, help="two-letter code, such as TH or LA")
    p.add_argument("--name", required=True, help="the national authority's name")
    p.add_argument("--out", required=True, help="the root keystore to write (keep it offline)")
    p.add_argument("--cert-out", required=True, help="the public root certificate to write")
    p.add_argument("--valid-days", type=int, default=lifecycle.DEFAULT_ROOT_DAYS)
    _new_file_options(p, ROOT_ENV)

    agency = _group(keys, "agency", "An agency's signing and encryption keys.")
    p = _parser(
        agency, "create", commands.agency_create, "Create an agency keystore and its certification request."
    )
    p.add_argument("--id", required=True, help="agency id, such as TH-ATPD")
    p.add_argument("--name", required=True, help="display name, in any script")
    p.add_argument("--out", required=True)
    p.add_argument("--request-out", required=True)
    p.add_argument("--enc-valid-days", type=int, default=lifecycle.DEFAULT_ENCRYPTION_DAYS)
    _new_file_options(p, DEFAULT_ENV)
    p = _parser(
        agency, "import-cert", commands.agency_import_cert, "Verify and store the agency's certificate."
    )
    _import_options(p)

    broker = _group(keys, "broker", "A broker's receipt and audit checkpoint keys.")
    p = _parser(
        broker, "create", commands.broker_create, "Create a broker keystore and its certification request."
    )
    p.add_argument("--id", required=True, help="broker id, such as TH-CASEBRIDGE")
    p.add_argument("--name", default="CaseBridge broker")
    p.add_argument("--out", required=True)
    p.add_argument("--request-out", required=True)
    _new_file_options(p, DEFAULT_ENV)
    p = _parser(
        broker, "import-cert", commands.broker_import_cert, "Verify and store the broker's certificate."
    )
    _import_options(p)

    p = _parser(
        keys, "certify", commands.certify, "Certify an agency's (or broker's) request with the root key."
    )
    p.add_argument("--root", required=True, help="the root keystore")
    p.add_argument("--request", required=True)
    p.add_argument("--role", required=True, action="append", choices=[r.value for r in Role])
    p.add_argument("--valid-days", type=int, default=lifecycle.DEFAULT_AGENCY_DAYS)
    p.add_argument(
        "--expect-fingerprint", metavar="DIGITS", help="refuse unless the key has this fingerprint"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    _secret_options(p, ROOT_ENV)

    p = _parser(keys, "request", commands.request, "Write a new certification request (e.g. for renewal).")
    p.add_argument("--keystore", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    _secret_options(p, DEFAULT_ENV)

    p = _parser(keys, "rotate", commands.rotate, "Add a new encryption key; older keys are kept.")
    p.add_argument("--keystore", required=True)
    p.add_argument("--valid-days", type=int, default=lifecycle.DEFAULT_ENCRYPTION_DAYS)
    _secret_options(p, DEFAULT_ENV)

    p = _parser(
        keys, "prune", commands.prune, "Drop encryption keys expired longer ago than the retention time."
    )
    p.add_argument("--keystore", required=True)
    p.add_argument("--retention-days", type=int, required=True)
    _secret_options(p, DEFAULT_ENV)

    p = _parser(keys, "revoke", commands.revoke, "Revoke a key and write the new revocation list.")
    p.add_argument("--root", required=True, help="the root keystore")
    p.add_argument("--key-id", help="hex key id to revoke; without it, reissue the current list")
    p.add_argument("--reason")
    p.add_argument("--at", type=int, metavar="UNIX", help="revoked from this time (default: now)")
    p.add_argument("--out", required=True, help="the revocation list to write (replaced)")
    _secret_options(p, ROOT_ENV)

    p = _parser(
        keys, "fingerprint", commands.fingerprint_file, "Show what a key file is, its ids and fingerprints."
    )
    p.add_argument("file")
    p.add_argument("--root-cert", help="verify the file's chain against this pinned root")
    p.add_argument("--unlock", action="store_true", help="open a keystore to show its public keys")
    _secret_options(p, DEFAULT_ENV)

    p = _parser(
        keys, "export", commands.export, "Write the agency's public bundle (certificate and encryption keys)."
    )
    p.add_argument("--keystore", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--force", action="store_true")
    _secret_options(p, DEFAULT_ENV)

    p = _parser(
        keys, "change-passphrase", commands.change_passphrase, "Seal a keystore under a new passphrase."
    )
    p.add_argument("--keystore", required=True)
    p.add_argument("--new-passphrase-env", metavar="NAME", help="default: CASEBRIDGE_NEW_PASSPHRASE if set")
    p.add_argument("--kdf-profile", choices=sorted(KDF_PROFILES))
    _secret_options(p, DEFAULT_ENV)


def _import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keystore", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--root-cert", required=True, help="the pinned root certificate")
    _secret_options(p, DEFAULT_ENV)
