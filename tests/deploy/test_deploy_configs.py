"""deploy/ checked by the tools that will read it, and against the broker it deploys.

- Prometheus: `promtool check rules|config` and the rules' own unit tests
  (`promtool test rules`); every metric the rules and the dashboard name is in the registry
  of a real broker app, and every error code, witness outcome, certificate kind, route and
  periodic task they match on is one the broker produces.
- nginx: `nginx -t` on deploy/nginx with a throwaway certificate made by `openssl req -x509`.
- systemd: `systemd-analyze verify` and its offline security score, where systemd-analyze
  exists (not required in CI, which has no running systemd).
- The settings example loads with the broker's own checks, and agrees with the proxy's body
  limit.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from broker.app import create_app
from broker.audit.witnesses import WitnessOutcome
from broker.clock import SystemClock
from broker.leadership import TASKS
from broker.settings import load_settings
from broker.storage.sqlite import open_sqlite_store
from protocol.errors import ErrorCode
from tests.deploy.deploy_tools import (
    METRIC_NAME,
    dashboard_expressions,
    label_values,
    optional_tool,
    prometheus_expressions,
    relocated,
    required_tool,
    run_tool,
)
from tests.deploy.postgres_drill import DEPLOY
from tests.integration.broker_harness import broker_settings
from tests.integration.pki import Pki

PROMETHEUS = DEPLOY / "prometheus"
NGINX = DEPLOY / "nginx"
SYSTEMD = DEPLOY / "systemd"
NON_CASEBRIDGE_METRICS = {"up"}
CERTIFICATE_KINDS = {"broker", "root", "agency"}


async def broker_app(directory: Path) -> tuple[web.Application, CollectorRegistry]:
    pki = Pki.create(SystemClock().now())
    settings = broker_settings(directory, pki, 8443)
    store = await open_sqlite_store(settings.database_file, settings.blob_dir, now=pki.now)
    await store.close()
    registry = CollectorRegistry()
    app = create_app(
        settings, store=store, clock=SystemClock(), registry=registry, broker_identity=pki.broker_identity()
    )
    return app, registry


def exported_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry can produce, labelled children or not."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
    }
    names = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


async def test_every_metric_the_rules_and_dashboard_use_is_exported_by_the_broker(tmp_path: Path) -> None:
    _, registry = await broker_app(tmp_path)
    exported = exported_names(registry)
    assert "casebridge_certificate_expiry_timestamp_seconds" in exported
    expressions = [*prometheus_expressions(), *dashboard_expressions()]
    used = {name for expression in expressions for name in METRIC_NAME.findall(expression)}
    assert len(used) >= 15
    assert used - exported == set()
    bare = {w for e in expressions for w in re.findall(r"\b([a-z_]+)\{", e)} - NON_CASEBRIDGE_METRICS
    assert {w for w in bare if not w.startswith("casebridge_")} == set()


async def test_every_label_value_the_rules_and_dashboard_match_is_one_the_broker_produces(
    tmp_path: Path,
) -> None:
    app, _ = await broker_app(tmp_path)
    routes = {name for name in app.router.named_resources()}
    expressions = [*prometheus_expressions(), *dashboard_expressions()]
    labels = ("code", "outcome", "kind", "route", "task")
    matched = {label: set().union(*(label_values(e, label) for e in expressions)) for label in labels}
    assert matched["code"]
    assert matched["code"] <= {str(c) for c in ErrorCode}
    assert matched["outcome"]
    assert matched["outcome"] <= {str(o) for o in WitnessOutcome}
    assert matched["kind"] <= CERTIFICATE_KINDS
    assert matched["route"]
    assert matched["route"] <= routes
    assert matched["task"] <= set(TASKS)


def test_promtool_accepts_the_alert_rules_and_their_unit_tests() -> None:
    promtool = required_tool("promtool", "prometheus")
    checked = run_tool(promtool, "check", "rules", PROMETHEUS / "casebridge-rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = run_tool(promtool, "test", "rules", "casebridge-rules.test.yml", cwd=PROMETHEUS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


@pytest.mark.parametrize("config", ["prometheus.yml", "prometheus.compose.yml"])
def test_promtool_accepts_the_scrape_configuration(config: str) -> None:
    promtool = required_tool("promtool", "prometheus")
    checked = run_tool(promtool, "check", "config", PROMETHEUS / config)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_rejects_a_rule_with_a_broken_template(tmp_path: Path) -> None:
    """The check is not a formality: a broken rule file fails it."""
    promtool = required_tool("promtool", "prometheus")
    text = (PROMETHEUS / "casebridge-rules.yml").read_text(encoding="utf-8")
    copy = tmp_path / "rules.yml"
    copy.write_text(text.replace("{{ $labels.instance }}", "{{ $labels.instance ", 1), encoding="utf-8")
    assert run_tool(promtool, "check", "rules", copy).returncode != 0


def nginx_test_prefix(tmp_path: Path) -> Path:
    """A prefix holding a test certificate, the deploy files with their paths moved into it,
    and a main configuration including them."""
    tls, logs, temp = tmp_path / "tls", tmp_path / "log", tmp_path / "temp"
    for directory in (tls, logs, temp):
        directory.mkdir()
    made = run_tool(
        required_tool("openssl", "openssl"), "req", "-x509", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=broker.example.org",
        "-keyout", tls / "privkey.pem", "-out", tls / "fullchain.pem",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    moves = {"/etc/casebridge/tls/": tls, "/var/log/nginx/": logs}
    for name in ("casebridge.conf", "casebridge-upstream.conf"):
        text = (NGINX / name).read_text(encoding="utf-8")
        (tmp_path / name).write_text(relocated(text, moves) if name == "casebridge.conf" else text)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {logs}/error.log;\nevents {{}}\nhttp {{\n"
        + "".join(
            f"    {kind}_temp_path {temp}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {tmp_path}/casebridge-upstream.conf;\n    include {tmp_path}/casebridge.conf;\n}}\n",
        encoding="utf-8",
    )
    return tmp_path


def test_nginx_accepts_the_proxy_configuration(tmp_path: Path) -> None:
    nginx = required_tool("nginx", "nginx")
    prefix = nginx_test_prefix(tmp_path)
    checked = run_tool(
        nginx, "-t", "-p", prefix, "-e", prefix / "log" / "error.log", "-c", prefix / "nginx.conf"
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_nginx_refuses_the_configuration_without_its_upstream(tmp_path: Path) -> None:
    """casebridge.conf alone names an upstream it does not define: the check must see it."""
    nginx = required_tool("nginx", "nginx")
    prefix = nginx_test_prefix(tmp_path)
    (prefix / "casebridge-upstream.conf").write_text("")
    checked = run_tool(
        nginx, "-t", "-p", prefix, "-e", prefix / "log" / "error.log", "-c", prefix / "nginx.conf"
    )
    assert checked.returncode != 0


def test_the_proxy_body_limit_matches_the_settings_example() -> None:
    settings = load_settings(DEPLOY / "config" / "broker.toml", environ={})
    (limit,) = re.findall(r"client_max_body_size (\d+)m;", (NGINX / "casebridge.conf").read_text())
    assert int(limit) << 20 == settings.max_envelope_bytes
    assert settings.public_authority == "broker.example.org"
    assert re.search(r"server_name broker\.example\.org;", (NGINX / "casebridge.conf").read_text())
    assert settings.database_url.startswith("postgresql://casebridge_app@")
    assert settings.database_owner_url.startswith("postgresql://casebridge_owner@")


UNITS = ("casebridge-broker@.service", "casebridge-witness.service", "casebridge-backup.service")


def installed_units(tmp_path: Path) -> list[Path]:
    """The unit files with their programs moved under tmp_path (where stand-ins exist), the
    broker template instantiated for port 8441."""
    programs = tmp_path / "programs"
    programs.mkdir()
    for name in ("casebridge-credential-env", "backup.sh", "casebridge"):
        (programs / name).write_text("#!/bin/sh\n")
        (programs / name).chmod(0o755)
    moves = {"/usr/lib/casebridge/": programs, "/opt/casebridge/bin/": programs}
    units = []
    for name in (*UNITS, "casebridge-backup.timer"):
        text = (SYSTEMD / name).read_text(encoding="utf-8")
        if name.endswith(".service"):
            text = relocated(text, {k: v for k, v in moves.items() if k in text})
        target = tmp_path / name.replace("@.", "@8441.")
        target.write_text(text, encoding="utf-8")
        units.append(target)
    return units


def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    analyze = optional_tool("systemd-analyze", "Debian package systemd")
    units = installed_units(tmp_path)
    checked = run_tool(analyze, "verify", *units, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == "", checked.stderr


@pytest.mark.parametrize("unit", ["casebridge-broker@8441.service", "casebridge-witness.service"])
def test_systemd_rates_the_services_well_hardened(tmp_path: Path, unit: str) -> None:
    analyze = optional_tool("systemd-analyze", "Debian package systemd")
    installed_units(tmp_path)
    rated = run_tool(analyze, "security", "--offline=true", "--threshold=20", tmp_path / unit, cwd=tmp_path)
    assert rated.returncode == 0, rated.stdout[-3000:]
    assert re.search(r"Overall exposure level for .*: [01]\.\d", rated.stdout), rated.stdout[-500:]


def test_every_alert_links_to_a_section_of_the_operations_guide() -> None:
    import yaml

    guide = (DEPLOY.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^#+ (.+)$", guide, re.M)
    }
    rules = yaml.safe_load((PROMETHEUS / "casebridge-rules.yml").read_text(encoding="utf-8"))
    for group in rules["groups"]:
        for rule in group["rules"]:
            runbook = rule["annotations"]["runbook"]
            assert runbook.startswith("docs/operations.md#"), rule["alert"]
            assert runbook.split("#", 1)[1] in anchors, rule["alert"]
