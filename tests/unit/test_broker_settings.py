"""Broker settings: one file, CASEBRIDGE_* overrides, every bad value a clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import from_values, load_settings, to_toml
from protocol.errors import ConfigError

BASE = {
    "broker_id": "TH-CASEBRIDGE",
    "data_dir": "ข้อมูล",
    "root_cert_files": ["roots/th-root.cert", "roots/la-root.cert"],
}


def write(tmp_path: Path, values: dict[str, object]) -> Path:
    path = tmp_path / "broker.toml"
    path.write_text(to_toml(values), encoding="utf-8")
    return path


def test_a_file_loads_with_defaults_and_paths_relative_to_it(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, BASE), environ={})
    assert settings.data_dir == tmp_path / "ข้อมูล"
    assert settings.root_cert_files == (tmp_path / "roots/th-root.cert", tmp_path / "roots/la-root.cert")
    assert settings.keystore_file == tmp_path / "ข้อมูล" / "broker.cbks"
    assert settings.ttl_seconds == 14 * 86400
    assert (settings.listen_host, settings.authority) == ("127.0.0.1", "127.0.0.1:8443")
    assert settings.database_file.parent == settings.data_dir


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    environ = {"CASEBRIDGE_LISTEN_PORT": "9000", "CASEBRIDGE_TTL_SECONDS": "86400", "CASEBRIDGE_OTHER": "x"}
    settings = load_settings(write(tmp_path, {**BASE, "listen_port": 8000}), environ=environ)
    assert (settings.listen_port, settings.ttl_seconds) == (9000, 86400)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"listen_port": 70000}, "listen_port"),
        ({"listen_port": "eighty"}, "listen_port"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"max_recipients": 65}, "max_recipients"),
        ({"broker_id": "casebridge"}, "broker_id"),
        ({"tls_cert_file": "cert.pem"}, "tls_cert_file"),
        ({"passphrase_env": "my secret passphrase"}, "passphrase_env"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"max_part_bytes": 2 << 20, "max_envelope_bytes": 1 << 20}, "max_part_bytes"),
        ({"root_cert_files": []}, "root_cert_files"),
        ({"max_envelope_byte": 5}, "max_envelope_byte"),
        ({"listen_host": "0.0.0.0"}, "public_authority"),  # noqa: S104 - a value under test, nothing binds
    ],
)
def test_a_bad_value_is_a_config_error_naming_the_setting(
    tmp_path: Path, change: dict[str, object], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        from_values({**BASE, **change}, base_dir=tmp_path, environ={})


def test_a_bad_environment_value_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="CASEBRIDGE_RATE_LIMIT_PER_MINUTE"):
        from_values(BASE, base_dir=tmp_path, environ={"CASEBRIDGE_RATE_LIMIT_PER_MINUTE": "-1"})


def test_a_missing_setting_without_default_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data_dir"):
        from_values({"broker_id": "TH-CASEBRIDGE", "root_cert_files": ["a"]}, base_dir=tmp_path, environ={})


def test_a_missing_or_malformed_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="broker init"):
        load_settings(tmp_path / "absent.toml", environ={})
    bad = tmp_path / "bad.toml"
    bad.write_text("listen_port = [", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(bad, environ={})


def test_settings_written_by_to_toml_read_back_the_same(tmp_path: Path) -> None:
    values = {**BASE, "listen_port": 0, "public_authority": "broker.example", "rate_limit_burst": 5}
    first = from_values(values, base_dir=tmp_path, environ={})
    assert load_settings(write(tmp_path, values), environ={}) == first
    assert first.authority == "broker.example"
