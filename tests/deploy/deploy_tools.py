"""Finding and running the tools that check deploy/ (promtool, nginx, systemd-analyze).

A tool that CI must have (promtool from Debian's `prometheus`, nginx from `nginx`; .ci/run
installs them) fails the test under CI=true when missing and skips it elsewhere, with the
package to install. systemd-analyze is used where it exists and never required.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.deploy.postgres_drill import DEPLOY

TOOL_TIMEOUT_SECONDS = 120
METRIC_NAME = re.compile(r"\bcasebridge_[a-z0-9_]+\b")


def required_tool(name: str, package: str) -> str:
    """The tool's path; missing: a failure in CI, a skip elsewhere."""
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    reason = f"{name} is not installed (Debian: apt-get install {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason}; CI must have it: .ci/run installs it", pytrace=False)
    pytest.skip(reason)


def optional_tool(name: str, why: str) -> str:
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here ({why}); not required in CI")
    return found


def run_tool(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT_SECONDS,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def relocated(text: str, moves: dict[str, Path]) -> str:
    """`text` with each absolute path prefix moved under a test directory; every prefix must
    occur (so a renamed path in deploy/ cannot silently escape the test)."""
    for prefix, target in moves.items():
        assert prefix in text, f"{prefix} no longer occurs"
        text = text.replace(prefix, f"{target}/")
    return text


def prometheus_expressions() -> Iterable[str]:
    import yaml

    rules = yaml.safe_load((DEPLOY / "prometheus" / "casebridge-rules.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            yield str(rule["expr"])


def dashboard_expressions() -> Iterable[str]:
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "casebridge-dashboard.json").read_text(encoding="utf-8"))
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield str(target["expr"])


def label_values(expression: str, label: str) -> set[str]:
    """Values an expression matches `label` against (`=` and `=~`/`!~` alternations)."""
    found: set[str] = set()
    for _, value in re.findall(rf'\b{label}\s*(=~|!~|!=|=)\s*"([^"]*)"', expression):
        found.update(v for v in value.split("|") if v)
    return found
