"""Subcommands owned by `clients`: `casebridge send`, `casebridge inbox list|watch`,
`casebridge status`, `casebridge publish-keys`; `casebridge cases ...` and `send --referral` are
parsed in `clients.cases_cli`, `casebridge audit ...` in `clients.audit.cli`.

This module only parses. What each command does is in `clients.agency_commands` (and
`clients.case_commands`, `clients.demo`, `clients.audit.commands`), imported when the command
runs, so `casebridge --help` and the other packages' commands never load the client library,
aiohttp or the PDF fonts. Output is for people by default and one JSON document per line with
`--json`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from clients import cases_cli
from clients.audit.cli import register_audit
from clients.desk import command as desk_command
from keys.passphrase import DEFAULT_ENV

# The same values as `clients.agency.DEFAULT_CONTENT_TYPE` and
# `clients.envelope_files.DEFAULT_TTL_SECONDS`, which are not imported here to keep start-up
# quick (tests/unit/test_cli_startup.py checks they agree).
DEFAULT_CONTENT_TYPE = "text/plain; charset=utf-8"
DEFAULT_TTL_DAYS = 14


def _send(args: argparse.Namespace) -> int:
    from clients import agency_commands

    return agency_commands.send(args)


def _inbox_list(args: argparse.Namespace) -> int:
    from clients import agency_commands

    return agency_commands.inbox_list(args)


def _inbox_watch(args: argparse.Namespace) -> int:
    from clients import agency_commands

    return agency_commands.inbox_watch(args)


def _status(args: argparse.Namespace) -> int:
    from clients import agency_commands

    return agency_commands.status(args)


def _publish_keys(args: argparse.Namespace) -> int:
    from clients import agency_commands

    return agency_commands.publish_keys(args)


def _demo(args: argparse.Namespace) -> int:
    import clients.demo

    return clients.demo.run(args)


def _common(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--keystore", default=env("CASEBRIDGE_KEYSTORE"), help="the agency keystore (env CASEBRIDGE_KEYSTORE)"
    )
    parser.add_argument(
        "--trust",
        action="append",
        default=None,
        metavar="ROOT_CERT",
        help="a pinned national root certificate; repeat for each country (env CASEBRIDGE_TRUST, "
        f"paths separated by '{os.pathsep}')",
    )
    parser.add_argument(
        "--broker", default=env("CASEBRIDGE_BROKER"), help="the broker URL (env CASEBRIDGE_BROKER)"
    )
    parser.add_argument(
        "--state", default=env("CASEBRIDGE_STATE"), help="the local state directory (env CASEBRIDGE_STATE)"
    )
    parser.add_argument(
        "--passphrase-env",
        metavar="NAME",
        help=f"the NAME of the variable holding the keystore passphrase (default {DEFAULT_ENV})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON, one document per line")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add `send`, `inbox`, `status`, `publish-keys`, `cases`, `demo` and `audit` to `casebridge`."""
    p = sub.add_parser("send", help="Seal a referral and send it through the broker.")
    _common(p)
    p.add_argument(
        "--to", action="append", required=True, metavar="AGENCY_ID", help="a recipient; repeatable"
    )
    body = p.add_mutually_exclusive_group(required=True)
    body.add_argument("--body-file", metavar="FILE", help="the referral body, read from a file")
    body.add_argument("--body", metavar="TEXT", help="the referral body as text")
    cases_cli.add_send_option(body)
    p.add_argument("--content-type", default=DEFAULT_CONTENT_TYPE, help=f"default: {DEFAULT_CONTENT_TYPE}")
    p.add_argument("--attach", action="append", default=[], metavar="FILE", help="an attachment; repeatable")
    p.add_argument("--ttl-days", type=int, default=DEFAULT_TTL_DAYS, help=f"default: {DEFAULT_TTL_DAYS}")
    p.set_defaults(run=_send)

    inbox = sub.add_parser("inbox", help="Referrals sent to this agency: list, or watch and save.")
    inbox_sub = inbox.add_subparsers(dest="inbox_command", required=True, metavar="ACTION")
    p = inbox_sub.add_parser("list", help="List what waits, without opening anything.")
    _common(p)
    p.set_defaults(run=_inbox_list)
    p = inbox_sub.add_parser("watch", help="Receive, verify and save referrals as they arrive.")
    _common(p)
    p.add_argument(
        "--save-dir", default="casebridge-inbox", help="where each referral is saved, one folder per envelope"
    )
    p.add_argument("--once", action="store_true", help="stop when the inbox is empty instead of waiting")
    p.add_argument("--wait", type=int, default=30, help="long-poll seconds per request (at most 60)")
    p.set_defaults(run=_inbox_watch)

    p = sub.add_parser("status", help="What became of a referral, or of everything in the outbox.")
    _common(p)
    p.add_argument(
        "envelope_id", nargs="?", help="an envelope id (hex); without it, the outbox with receipts"
    )
    p.set_defaults(run=_status)

    p = sub.add_parser(
        "publish-keys",
        help="Publish this agency's encryption keys valid now to the broker (after `keys rotate`).",
    )
    _common(p)
    p.set_defaults(run=_publish_keys)
    cases_cli.register(sub)

    _register_demo(sub)
    register_audit(sub)
    desk_command.register(sub)


def _register_demo(sub: argparse._SubParsersAction[Any]) -> None:
    """`casebridge demo` (the command itself is `clients.demo.run`)."""
    p = sub.add_parser(
        "demo",
        help="Walk through a referral from Thailand to Lao PDR with a real broker on 127.0.0.1.",
        description="Create roots, agencies and a broker in a temporary directory, start the broker, "
        "send a referral in Thai with an attachment, receive and verify it, follow its receipts, stop "
        "the broker and remove everything.",
    )
    p.add_argument(
        "--keep", metavar="DIR", help="work in DIR (new or empty) and keep it afterwards for inspection"
    )
    p.set_defaults(run=_demo)
