"""`casebridge` starts quickly: building the whole argument parser loads no heavy library.

Each package's `cli` module only declares its subcommands and imports the service, client or
PDF modules inside the command that needs them. The checks run in a fresh interpreter, since
this test process has long imported everything. Nothing here measures time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("aiohttp", "fpdf", "uharfbuzz", "asyncpg", "prometheus_client")


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def _heavy_modules_after(code: str) -> list[str]:
    listing = (
        "import json, sys; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r})))"
    )
    loaded: list[str] = json.loads(_fresh(f"{code}; {listing}").strip().splitlines()[-1])
    return loaded


def test_building_the_parser_loads_no_network_database_metrics_or_pdf_library() -> None:
    assert _heavy_modules_after("import casebridge.cli; casebridge.cli.build_parser()") == []


def test_parsing_every_command_line_loads_none_of_them_either() -> None:
    parse = (
        "import casebridge.cli; p = casebridge.cli.build_parser(); "
        "p.parse_args(['broker', 'show-keys', '--config', 'b.toml']); "
        "p.parse_args(['send', '--to', 'LA-NSATIP', '--body', 'สวัสดี']); "
        "p.parse_args(['cases', 'export', 'TH-1', '--pdf', 'ເອກະສານ.pdf']); "
        "p.parse_args(['audit', 'verify', '--from', 'x']); "
        "p.parse_args(['publish-keys']); p.parse_args(['demo'])"
    )
    assert _heavy_modules_after(parse) == []


def test_the_heavy_modules_are_still_there_when_a_command_needs_them() -> None:
    # The check above could pass vacuously if the names were wrong: the commands' own modules
    # must load exactly these libraries.
    loaded = _heavy_modules_after(
        "import clients.agency_commands, clients.case_commands, clients.audit.commands, broker.admin; "
        "import clients.pdf_export"
    )
    assert {name.split(".")[0] for name in loaded} >= {"aiohttp", "fpdf", "prometheus_client"}


def test_the_parser_defaults_agree_with_the_modules_they_stand_in_for() -> None:
    import clients.agency
    import clients.audit.broker_log
    import clients.audit.cli
    import clients.audit.export
    import clients.cli
    import clients.envelope_files

    assert clients.cli.DEFAULT_CONTENT_TYPE == clients.agency.DEFAULT_CONTENT_TYPE
    assert clients.cli.DEFAULT_TTL_DAYS * 86400 == clients.envelope_files.DEFAULT_TTL_SECONDS
    assert clients.audit.cli.FETCH_MODES == clients.audit.broker_log.FETCH_MODES
    assert clients.audit.cli.FORMATS == clients.audit.export.FORMATS
