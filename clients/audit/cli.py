"""`casebridge audit ...`: the security officer's commands (argument parsing only).

- `verify`: recompute and check the whole log (a live broker or an export) and remember the
  checkpoint as trusted when everything verified;
- `trace ENVELOPE_ID`: one referral's whole life, each step proven;
- `search`: leaves by agency, kind, envelope and time;
- `export`: JSON Lines, CSV or an HTML report, or `--raw DIR` for offline verification;
- `witness init|show|serve`: a tlog-witness for a partner country's log.

Configuration comes from options or `CASEBRIDGE_*` variables: the log key (`--log-key`, a vkey
the broker operator gives out of band), witness keys and the cosignature policy, the state
directory holding the trusted checkpoint, and either `--broker` with an auditor keystore or
`--from` an export directory. Passphrases come only from variables or a prompt.

Exit status: 0 when everything verified; 1 when something did not (one line per problem) or the
command was refused (one plain line, from the dispatcher); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from clients.audit.leaf_records import KINDS
from keys.keystore import KDF_PROFILES
from keys.passphrase import DEFAULT_ENV

WITNESS_ENV = "CASEBRIDGE_WITNESS_PASSPHRASE"
DEFAULT_WITNESS_PORT = 7380
# The same values as `clients.audit.broker_log.FETCH_MODES` and `clients.audit.export.FORMATS`,
# which load the HTTP client and are imported only when a command runs (start-up stays quick;
# tests/unit/test_cli_startup.py checks they agree).
FETCH_MODES = ("tiles", "entries")
FORMATS = ("jsonl", "csv", "html")


def _verify(args: argparse.Namespace) -> int:
    from clients.audit import commands

    return commands.verify(args)


def _trace(args: argparse.Namespace) -> int:
    from clients.audit import commands

    return commands.trace(args)


def _search(args: argparse.Namespace) -> int:
    from clients.audit import commands

    return commands.search(args)


def _export(args: argparse.Namespace) -> int:
    from clients.audit import commands

    return commands.export(args)


def _witness_init(args: argparse.Namespace) -> int:
    from clients.audit import witness_commands

    return witness_commands.init(args)


def _witness_show(args: argparse.Namespace) -> int:
    from clients.audit import witness_commands

    return witness_commands.show(args)


def _witness_serve(args: argparse.Namespace) -> int:
    from clients.audit import witness_commands

    return witness_commands.serve(args)


def _env_list(name: str) -> list[str]:
    return [item for item in os.environ.get(name, "").replace(",", " ").split() if item]


def _log_options(p: argparse.ArgumentParser, *, trust: bool = False) -> None:
    env = os.environ.get
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--broker", default=env("CASEBRIDGE_BROKER"), help="a live broker's URL (env CASEBRIDGE_BROKER)"
    )
    where.add_argument(
        "--from", dest="from_dir", metavar="DIR", help="an export directory (from `export --raw`)"
    )
    p.add_argument(
        "--keystore",
        default=env("CASEBRIDGE_KEYSTORE"),
        help="the auditor's keystore, for --broker (env CASEBRIDGE_KEYSTORE)",
    )
    p.add_argument(
        "--passphrase-env",
        metavar="NAME",
        help=f"the NAME of the variable holding the keystore passphrase (default {DEFAULT_ENV})",
    )
    p.add_argument(
        "--log-key",
        default=env("CASEBRIDGE_AUDIT_LOG_KEY"),
        metavar="VKEY",
        help="the log's checkpoint key, as the broker operator gave it (env CASEBRIDGE_AUDIT_LOG_KEY)",
    )
    p.add_argument("--origin", help="the checkpoint origin (default: the log key's name)")
    p.add_argument(
        "--witness-key",
        action="append",
        default=None,
        metavar="VKEY",
        help="a witness whose cosignatures count; repeatable (env CASEBRIDGE_AUDIT_WITNESS_KEYS)",
    )
    p.add_argument(
        "--min-cosignatures",
        type=int,
        default=0,
        metavar="N",
        help="witness cosignatures required (default 0)",
    )
    p.add_argument(
        "--state",
        default=env("CASEBRIDGE_AUDIT_STATE"),
        metavar="DIR",
        help="where the last trusted checkpoint is kept (env CASEBRIDGE_AUDIT_STATE)",
    )
    p.add_argument(
        "--incremental", action="store_true", help="continue from the trusted checkpoint instead of leaf 0"
    )
    p.add_argument(
        "--fetch", choices=FETCH_MODES, default="tiles", help="how to read a live log (default tiles)"
    )
    p.add_argument(
        "--progress", action="store_true", help="draw a progress bar on stderr even when not a terminal"
    )
    if trust:
        p.add_argument(
            "--trust",
            action="append",
            default=None,
            metavar="ROOT_CERT",
            help="a pinned national root certificate; repeatable "
            f"(env CASEBRIDGE_TRUST, '{os.pathsep}'-separated)",
        )
        p.add_argument("--broker-cert", metavar="FILE", help="the broker's certificate, if not in the export")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", metavar="ID", help="leaves naming this agency")
    p.add_argument("--kind", choices=KINDS, help="leaves of this kind")
    p.add_argument("--envelope", metavar="ENVELOPE_ID", help="leaves naming this envelope (hex)")
    p.add_argument("--since", metavar="WHEN", help="Unix seconds, 2026-01-31 or 2026-01-31T09:30:00+07:00")
    p.add_argument("--until", metavar="WHEN", help="inclusive; a date means the whole day (UTC)")


def register_audit(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `casebridge audit ...` to the `casebridge` command."""
    audit = sub.add_parser(
        "audit", help="Verify the audit log, trace referrals, export reports, run a witness."
    )
    actions = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")

    p = actions.add_parser("verify", help="Recompute and check the whole log; remember it as trusted.")
    _log_options(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON document")
    p.set_defaults(run=_verify)

    p = actions.add_parser("trace", help="Prove what happened to one referral, step by step.")
    _log_options(p, trust=True)
    p.add_argument("envelope_id", help="the envelope id (hex)")
    p.add_argument(
        "--tlog-proof-out", metavar="FILE", help="also save the broker's tlog-proof of the acceptance"
    )
    p.add_argument("--json", action="store_true", help="print the trace as one JSON document")
    p.set_defaults(run=_trace)

    p = actions.add_parser("search", help="List leaves by agency, kind, envelope and time.")
    _log_options(p)
    _filters(p)
    p.add_argument("--json", action="store_true", help="print JSON Lines, one leaf per line")
    p.set_defaults(run=_search)

    p = actions.add_parser(
        "export", help="Export leaves (JSON Lines, CSV, HTML) or the raw log for offline use."
    )
    _log_options(p, trust=True)
    _filters(p)
    out = p.add_mutually_exclusive_group(required=True)
    out.add_argument("--out", metavar="FILE", help="the report file to write (with --format)")
    out.add_argument("--raw", metavar="DIR", help="write checkpoint and entries for offline verification")
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--limit", type=int, default=10_000, help="rows shown in an HTML report (default 10000)")
    p.add_argument("--force", action="store_true", help="replace an existing raw export")
    p.set_defaults(run=_export)

    witness = actions.add_parser("witness", help="A witness that cosigns a partner's log checkpoints.")
    w = witness.add_subparsers(dest="witness_command", required=True, metavar="ACTION")
    p = w.add_parser("init", help="Create the witness keystore and print its vkey for the broker operator.")
    p.add_argument("--keystore", required=True, help="the witness keystore file to write")
    p.add_argument("--name", required=True, help="the witness name, such as witness.la-auditor.example")
    p.add_argument("--kdf-profile", choices=sorted(KDF_PROFILES), default="moderate")
    p.add_argument("--force", action="store_true", help="replace an existing keystore")
    p.add_argument("--passphrase-env", metavar="NAME", help=f"default {WITNESS_ENV} if set, else ask")
    p.set_defaults(run=_witness_init, default_env=WITNESS_ENV)
    p = w.add_parser("show", help="Print the witness's vkey.")
    p.add_argument("--keystore", required=True)
    p.add_argument("--passphrase-env", metavar="NAME", help=f"default {WITNESS_ENV} if set, else ask")
    p.set_defaults(run=_witness_show, default_env=WITNESS_ENV)
    p = w.add_parser("serve", help="Serve POST /add-checkpoint (tlog-witness) until stopped.")
    p.add_argument("--keystore", required=True)
    p.add_argument("--passphrase-env", metavar="NAME", help=f"default {WITNESS_ENV} if set, else ask")
    p.add_argument("--state", required=True, metavar="DIR", help="where the witness records what it cosigned")
    p.add_argument(
        "--log",
        action="append",
        default=None,
        metavar="VKEY",
        help="a log to witness, by its checkpoint vkey (origin: the key name); repeatable "
        "(env CASEBRIDGE_WITNESS_LOGS)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_WITNESS_PORT, help=f"default {DEFAULT_WITNESS_PORT}; 0 picks one"
    )
    p.set_defaults(run=_witness_serve, default_env=WITNESS_ENV, env_logs=_env_list("CASEBRIDGE_WITNESS_LOGS"))
