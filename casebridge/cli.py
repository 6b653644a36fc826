"""`casebridge SUBCOMMAND ...`: dispatch to the package that owns the subcommand.

Every failure a user can meet ends as one plain line on stderr, `casebridge: <title>: <detail>`,
and a non-zero exit status (1 for a refused operation, 2 for a usage error).

Each package's `cli` module only declares its subcommands; the command that runs imports what
it needs. So `casebridge --help` or `casebridge keys ...` never load aiohttp, the database
drivers, Prometheus or the PDF fonts (tests/unit/test_cli_startup.py checks it).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from casebridge import __version__
from protocol.errors import CaseBridgeError


def build_parser() -> argparse.ArgumentParser:
    import broker.cli
    import clients.cli
    import keys.cli

    parser = argparse.ArgumentParser(
        prog="casebridge",
        description="Secure cross-border case referrals between national focal points.",
    )
    parser.add_argument("--version", action="version", version=f"casebridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    keys.cli.register(sub)
    broker.cli.register(sub)
    clients.cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args)
    except CaseBridgeError as e:
        print(f"casebridge: {e.title}: {e.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("casebridge: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
