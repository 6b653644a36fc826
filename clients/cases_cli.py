"""`casebridge cases list|show|export` and the typed part of `casebridge send --referral FILE`:
argument parsing only; `clients.case_commands` does the work, imported when a command runs.

The `cases` commands read the agency's local case store (`cases.sqlite3` in the state
directory) and need only the keystore (its key opens the store) and the state directory: no
broker, no network. `send --referral FILE` reads one message (TOML or JSON, see
`clients.referral_drafts`), checks every field before the keystore is opened, completes the
header from the case store, and sends it with `AgencyClient.send_message`, which refuses what
the case workflow or the consent does not allow before anything is sealed.

Output is for people by default, one JSON document per line with `--json`. Cases are listed
with overdue ones first, then those waiting on this agency, then the others. Times are shown in
the agencies' shared time, UTC+7.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from keys.passphrase import DEFAULT_ENV

# --- send --referral ------------------------------------------------------------------------------


def add_send_option(group: argparse._MutuallyExclusiveGroup) -> None:
    group.add_argument(
        "--referral",
        metavar="FILE",
        help="a referral message (TOML, or JSON if FILE ends in .json): its type and fields; "
        "checked against the case before sealing",
    )


# --- cases ----------------------------------------------------------------------------------------


def _list(args: argparse.Namespace) -> int:
    from clients import case_commands

    return case_commands.list_cases(args)


def _show(args: argparse.Namespace) -> int:
    from clients import case_commands

    return case_commands.show_case(args)


def _export(args: argparse.Namespace) -> int:
    from clients import case_commands

    return case_commands.export_case(args)


def _options(parser: argparse.ArgumentParser) -> None:
    env = os.environ.get
    parser.add_argument(
        "--keystore", default=env("CASEBRIDGE_KEYSTORE"), help="the agency keystore (env CASEBRIDGE_KEYSTORE)"
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
    """Add `cases list|show|export` to the `casebridge` command."""
    cases = sub.add_parser("cases", help="The cases in this agency's local case store.")
    cases_sub = cases.add_subparsers(dest="cases_command", required=True, metavar="ACTION")
    p = cases_sub.add_parser(
        "list", help="Every case: both case numbers, the person, the phase, who owes what."
    )
    _options(p)
    p.set_defaults(run=_list)
    p = cases_sub.add_parser("show", help="One case: its messages, state, consent and open items.")
    _options(p)
    p.add_argument("case", help="either side's case number, or the case link id (or 8+ of its hex digits)")
    p.set_defaults(run=_show)
    p = cases_sub.add_parser("export", help="One case, or one message of it, as a PDF.")
    _options(p)
    p.add_argument("case", help="either side's case number, or the case link id")
    p.add_argument("--pdf", required=True, metavar="OUT.pdf", help="the PDF file to write")
    p.add_argument(
        "--message", metavar="MESSAGE_ID", help="only this message (its id, or 8+ hex digits of it)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace OUT.pdf if it exists")
    p.set_defaults(run=_export)
