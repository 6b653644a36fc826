"""deploy/'s container, compose and Grafana files, checked without a container engine (none
runs here): they parse, every file they name exists in the repository (or is one of the
operator's secrets listed in deploy/local/README.md), and they agree with each other and with
the broker. Also the credential wrapper the systemd units and the image run the broker through.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from broker.settings import ENV_PREFIX, from_values
from tests.deploy.postgres_drill import DEPLOY, REPO

WRAPPER = DEPLOY / "systemd" / "casebridge-credential-env"
LOCAL_README = (DEPLOY / "local" / "README.md").read_text(encoding="utf-8")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return loaded


def operator_file(relative: str) -> bool:
    """A path under ./local/ that the operator creates: it must be listed in local/README.md."""
    if not relative.startswith("./local/"):
        return False
    name = relative.removeprefix("./local/")
    assert f"`{name.split('/')[0]}" in LOCAL_README, f"{name} is not listed in deploy/local/README.md"
    return True


def test_every_file_the_compose_services_mount_or_build_exists() -> None:
    services = compose()["services"]
    assert {"broker-1", "broker-2", "postgres", "nginx", "prometheus", "grafana"} <= set(services)
    for name, service in services.items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file(), name
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("."):
                assert operator_file(source) or (DEPLOY / source).exists(), f"{name}: {source}"
            else:
                assert source in compose()["volumes"], f"{name}: undeclared volume {source}"
        for dependency in service.get("depends_on", []):
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for network in service.get("networks", []):
            assert network in compose()["networks"]
        for secret in service.get("secrets", []):
            assert operator_file(compose()["secrets"][secret]["file"])


def test_the_compose_replicas_run_the_broker_on_postgresql_as_the_app_role() -> None:
    services = compose()["services"]
    brokers = [s for s in services if s.startswith("broker-")]
    assert len(brokers) >= 2
    for name in brokers:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert env["CASEBRIDGE_DATABASE_URL"].startswith("postgresql://casebridge_app@postgres:")
        assert env["CASEBRIDGE_DATABASE_OWNER_URL"].startswith("postgresql://casebridge_owner@postgres:")
        values = {k.removeprefix(ENV_PREFIX).lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)}
        values["public_authority"] = "broker.example.org"
        settings = from_values(
            {"broker_id": "TH-CASEBRIDGE", "data_dir": "/var/lib/casebridge", "root_cert_files": ["r.cert"]},
            base_dir=Path("/"),
            environ={ENV_PREFIX + k.upper(): v for k, v in values.items()},
        )
        assert settings.listen_port == 8443
        assert services[name]["stop_grace_period"] == "90s"
    upstream = (DEPLOY / "nginx" / "compose" / "casebridge-upstream.conf").read_text(encoding="utf-8")
    assert sorted(re.findall(r"server (broker-\d+):8443", upstream)) == sorted(brokers)
    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.compose.yml").read_text(encoding="utf-8"))
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{b}:8443" for b in brokers)


def test_only_nginx_is_published_beyond_loopback() -> None:
    for name, service in compose()["services"].items():
        for port in service.get("ports", []):
            assert name == "nginx" or str(port).startswith("127.0.0.1:"), f"{name} publishes {port}"
    assert compose()["networks"]["backend"]["internal"] is True


def test_the_container_image_runs_only_the_broker_as_an_unprivileged_user() -> None:
    text = (DEPLOY / "container" / "Containerfile").read_text(encoding="utf-8")
    assert re.findall(r"^FROM (\S+)", text, re.MULTILINE) == ["python:3.11-slim", "python:3.11-slim"]
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
        assert (REPO / source).exists(), source
    assert re.search(r"^USER casebridge", text, re.MULTILINE)
    (entrypoint,) = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert json.loads(entrypoint)[-2:] == ["casebridge", "broker"]
    assert "/usr/local/lib/casebridge/casebridge-credential-env" in json.loads(entrypoint)[0]


def test_the_grafana_dashboard_takes_its_data_source_from_a_variable() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "casebridge-dashboard.json").read_text(encoding="utf-8"))
    (variable,) = dashboard["templating"]["list"]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/casebridge.yml").read_text())
    mount = next(m for m in compose()["services"]["grafana"]["volumes"] if "dashboard.json" in m)
    assert mount.split(":")[1].startswith(provider["providers"][0]["options"]["path"] + "/")


def run_wrapper(tmp_path: Path, *args: str, credentials: Path | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin"} | ({"CREDENTIALS_DIRECTORY": str(credentials)} if credentials else {})
    return subprocess.run(
        [str(WRAPPER), *args], capture_output=True, text=True, env=env, timeout=30, check=False, cwd=tmp_path
    )


def test_the_credential_wrapper_hands_the_passphrase_to_the_broker_in_its_variable(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "broker-passphrase").write_text("ทดสอบ ລະຫັດ passphrase\n", encoding="utf-8")
    show = "import os, sys; sys.stdout.write(repr(os.environ['CASEBRIDGE_BROKER_PASSPHRASE']))"
    done = run_wrapper(
        tmp_path, "broker-passphrase", "CASEBRIDGE_BROKER_PASSPHRASE", sys.executable, "-c", show,
        credentials=credentials,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == repr("ทดสอบ ລະຫັດ passphrase")


@pytest.mark.parametrize(
    ("args", "credentials", "status"),
    [
        (("broker-passphrase", "CASEBRIDGE_BROKER_PASSPHRASE", "true"), False, 1),
        (("missing", "CASEBRIDGE_BROKER_PASSPHRASE", "true"), True, 1),
        (("../broker-passphrase", "CASEBRIDGE_BROKER_PASSPHRASE", "true"), True, 2),
        (("broker-passphrase", "NOT-A-NAME", "true"), True, 2),
        (("broker-passphrase", "CASEBRIDGE_BROKER_PASSPHRASE"), True, 2),
    ],
)
def test_the_credential_wrapper_refuses_to_run_without_a_usable_credential(
    tmp_path: Path, args: tuple[str, ...], credentials: bool, status: int
) -> None:
    directory = tmp_path / "credentials"
    directory.mkdir()
    (directory / "broker-passphrase").write_text("secret")
    done = run_wrapper(tmp_path, *args, credentials=directory if credentials else None)
    assert done.returncode == status
    assert "secret" not in done.stdout + done.stderr
