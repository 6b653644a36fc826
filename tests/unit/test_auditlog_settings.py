"""The audit-log settings: origin, checkpoint cadence, witnesses; every bad value a ConfigError."""

from __future__ import annotations

from pathlib import Path

import nacl.signing
import pytest

from broker.settings import Settings, from_values, load_settings, to_toml
from protocol.errors import ConfigError
from protocol.note import SIG_COSIGNATURE_V1, SIG_ED25519, NoteSigner
from tests.protocol_fixtures import seed

BASE: dict[str, object] = {
    "broker_id": "TH-CASEBRIDGE",
    "data_dir": "ข้อมูล",
    "root_cert_files": ["roots/th-root.cert"],
}
WITNESS = NoteSigner("witness.molsw.gov.la", nacl.signing.SigningKey(seed("w1")), SIG_COSIGNATURE_V1).vkey
OTHER = NoteSigner("witness.atpd.go.th", nacl.signing.SigningKey(seed("w2")), SIG_COSIGNATURE_V1).vkey
NOT_A_COSIGNER = NoteSigner("witness.molsw.gov.la", nacl.signing.SigningKey(seed("w3")), SIG_ED25519).vkey


def settings(**values: object) -> Settings:
    return from_values({**BASE, **values}, base_dir=Path("/srv/casebridge"), environ={})


def test_the_defaults_follow_the_contract() -> None:
    loaded = settings()
    assert loaded.audit_origin == "casebridge.th-casebridge/audit"
    assert (loaded.checkpoint_interval_seconds, loaded.checkpoint_idle_seconds) == (2, 3600)
    assert loaded.witnesses == ()


def test_witnesses_come_from_the_file_and_the_environment(tmp_path: Path) -> None:
    entry = f"{WITNESS.encode()} https://witness.molsw.gov.la/tlog/"
    path = tmp_path / "broker.toml"
    path.write_text(
        to_toml({**BASE, "witnesses": [entry], "log_origin": "casebridge.th/audit"}), encoding="utf-8"
    )
    loaded = load_settings(path, environ={})
    assert [(w.vkey, w.url, w.name) for w in loaded.witnesses] == [
        (WITNESS, "https://witness.molsw.gov.la/tlog", "witness.molsw.gov.la")
    ]
    assert loaded.audit_origin == "casebridge.th/audit"
    both = f"{entry};{OTHER.encode()} http://127.0.0.1:9000"
    overridden = load_settings(path, environ={"CASEBRIDGE_WITNESSES": both})
    assert [w.name for w in overridden.witnesses] == ["witness.molsw.gov.la", "witness.atpd.go.th"]
    rewritten = tmp_path / "again.toml"
    rewritten.write_text(to_toml({**BASE, "witnesses": list(loaded.witnesses)}), encoding="utf-8")
    assert load_settings(rewritten, environ={}).witnesses == loaded.witnesses


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"witnesses": [WITNESS.encode()]}, "witnesses"),
        ({"witnesses": [f"{NOT_A_COSIGNER.encode()} https://w.example"]}, "witnesses"),
        ({"witnesses": [f"{WITNESS.encode()} ftp://w.example"]}, "witnesses"),
        (
            {"witnesses": [f"{WITNESS.encode()} https://w.example", f"{WITNESS.encode()} https://x.example"]},
            "witnesses",
        ),
        ({"witnesses": "not a list"}, "witnesses"),
        ({"log_origin": "casebridge th/audit"}, "log_origin"),
        ({"log_origin": "https://casebridge.th/audit"}, "log_origin"),
        ({"log_origin": "ศูนย์/audit"}, "log_origin"),
        ({"checkpoint_interval_seconds": 0}, "checkpoint_interval_seconds"),
        ({"checkpoint_interval_seconds": 120, "checkpoint_idle_seconds": 60}, "checkpoint_interval_seconds"),
        ({"checkpoint_idle_seconds": 5}, "checkpoint_idle_seconds"),
        ({"witness_timeout_seconds": 0}, "witness_timeout_seconds"),
    ],
)
def test_a_bad_audit_setting_is_refused_by_name(change: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        settings(**change)
