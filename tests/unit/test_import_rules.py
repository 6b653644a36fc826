"""The layering rules of ARCHITECTURE.md, checked on the source itself.

protocol <- keys <- {broker, clients}; broker and clients never import each other; protocol
imports no event loop, network, database or file-I/O module and reads no clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("protocol", "keys", "broker", "clients")
ALLOWED_INTERNAL = {
    "protocol": {"protocol"},
    "keys": {"protocol", "keys"},
    "broker": {"protocol", "keys", "broker"},
    "clients": {"protocol", "keys", "clients"},
}
PROTOCOL_FORBIDDEN = {
    "asyncio",
    "aiohttp",
    "asyncpg",
    "sqlite3",
    "socket",
    "ssl",
    "os",
    "io",
    "pathlib",
    "shutil",
    "tempfile",
    "time",
    "selectors",
    "subprocess",
    "threading",
    "urllib",
    "http",
}
INTERNAL = {*PACKAGES, "casebridge"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_internal_imports_flow_one_way(package: str) -> None:
    for path in sources(package):
        bad = (imports_of(path) & INTERNAL) - ALLOWED_INTERNAL[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_protocol_does_no_io_and_reads_no_clock() -> None:
    assert sources("protocol"), "protocol/ has no sources"
    for path in sources("protocol"):
        bad = imports_of(path) & PROTOCOL_FORBIDDEN
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        calls = {
            n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        assert "open" not in calls, f"{path.relative_to(ROOT)} calls open()"


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import asyncio\nfrom broker.app import x\n", encoding="utf-8")
    assert imports_of(sample) == {"asyncio", "broker"}
