"""The `casebridge desk` subcommand. The web app (aiohttp, Jinja2, Babel) is imported only when
the command runs, so `casebridge` starts fast for every other command."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from protocol.errors import InvalidField


def register(sub: argparse._SubParsersAction[Any]) -> None:
    env = os.environ.get
    parser = sub.add_parser(
        "desk",
        help="run the focal-point desk: a local web app on 127.0.0.1 for case workers",
        description="Serve the desk on 127.0.0.1 and print the address to open in a browser. "
        "The keystore passphrase is asked for in the browser, never on the command line.",
    )
    parser.add_argument("--keystore", default=env("CASEBRIDGE_KEYSTORE"), help="the agency keystore")
    parser.add_argument(
        "--trust", action="append", default=None, metavar="ROOT_CERT",
        help=f"a pinned national root certificate; repeat (env CASEBRIDGE_TRUST, '{os.pathsep}'-separated)",
    )  # fmt: skip
    parser.add_argument("--broker", default=env("CASEBRIDGE_BROKER"), help="the broker URL")
    parser.add_argument("--state", default=env("CASEBRIDGE_STATE"), help="the local state directory")
    parser.add_argument("--port", type=int, default=0, help="the port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--language", choices=("th", "lo", "en"), default="th", help="the first language")
    parser.add_argument("--idle-minutes", type=int, default=15, help="lock after this many idle minutes")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from clients.desk.app import DeskSettings, serve

    trust = args.trust or [p for p in os.environ.get("CASEBRIDGE_TRUST", "").split(os.pathsep) if p]
    for name, value in (("--keystore", args.keystore), ("--broker", args.broker), ("--state", args.state)):
        if not value:
            raise InvalidField(name, "a value (or its CASEBRIDGE_* environment variable)")
    if not trust:
        raise InvalidField("--trust", "at least one pinned national root certificate")
    if not 1 <= args.idle_minutes <= 24 * 60:
        raise InvalidField("--idle-minutes", "1 to 1440")
    settings = DeskSettings(
        keystore=Path(args.keystore),
        trust=tuple(Path(p) for p in trust),
        broker_url=args.broker,
        state_dir=Path(args.state),
        language=args.language,
        idle_lock_seconds=args.idle_minutes * 60,
    )

    def announce(url: str) -> None:
        print(f"Open the desk in your browser: {url}", flush=True)

    try:
        asyncio.run(serve(settings, port=args.port, announce=announce))
    except KeyboardInterrupt:
        print("desk stopped", file=sys.stderr)
        return 130
    return 0
