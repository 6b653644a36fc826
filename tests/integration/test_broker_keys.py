"""The broker's own keys as an operator handles them: `casebridge broker show-keys` prints what
officers and witnesses pin, and the broker's certificate is recorded in its own audit log once.

Everything runs as an operator would: `casebridge` subprocesses on a data directory made by
`broker init`, and the broker served as its own process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from broker import admin
from broker.clock import SystemClock
from broker.settings import load_settings
from keys.fingerprint import fingerprint, key_id_hex
from keys.keystore import load_broker
from protocol import auditlog
from protocol.certificate import AgencyCertificate
from protocol.note import SIG_ED25519, VerifierKey
from tests.integration.broker_harness import TEST_PASSPHRASE, BrokerProcess

ROOT_PASSPHRASE = "รหัสผ่าน-ຂອງ-root-2026"
FAST = ["--kdf-profile", "interactive"]


def casebridge(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CASEBRIDGE_ROOT_PASSPHRASE": ROOT_PASSPHRASE,
        "CASEBRIDGE_BROKER_PASSPHRASE": TEST_PASSPHRASE,
    }
    done = subprocess.run(
        [sys.executable, "-m", "casebridge", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if ok:
        assert done.returncode == 0, done.stderr
    return done


def _init_broker(tmp_path: Path) -> Path:
    casebridge("keys", "root", "create", "--country", "TH", "--name", "ศูนย์ต่อต้านการค้ามนุษย์",
               "--out", "th-root.cbks", "--cert-out", "th-root.cert", *FAST, cwd=tmp_path)  # fmt: skip
    data = tmp_path / "broker-data"
    casebridge("broker", "init", "--data-dir", str(data), "--id", "TH-CASEBRIDGE",
               "--root-cert", "th-root.cert", "--listen-port", "0", *FAST, cwd=tmp_path)  # fmt: skip
    return data / "broker.toml"


def _certify(tmp_path: Path, config: Path) -> AgencyCertificate:
    request = config.parent / "broker.csr"
    casebridge("keys", "certify", "--root", "th-root.cbks", "--request", str(request), "--role", "broker",
               "--out", "broker.cert", cwd=tmp_path)  # fmt: skip
    casebridge("broker", "import-cert", "--config", str(config), "--cert", "broker.cert", cwd=tmp_path)
    return AgencyCertificate.parse((tmp_path / "broker.cert").read_bytes())


def test_show_keys_prints_the_receipt_key_and_the_checkpoint_vkey_officers_pin(tmp_path: Path) -> None:
    config = _init_broker(tmp_path)
    identity = load_broker(config.parent / "broker.cbks", TEST_PASSPHRASE).identity

    before = json.loads(
        casebridge("broker", "show-keys", "--config", str(config), "--json", cwd=tmp_path).stdout
    )
    assert before["certificate"] is None
    vkey = VerifierKey.parse(before["checkpoint_vkey"])
    assert (vkey.name, vkey.sig_type, vkey.public_key) == (
        "casebridge.th-casebridge/audit",
        SIG_ED25519,
        identity.checkpoint_public_key,
    )
    assert before["checkpoint_key_fingerprint"] == fingerprint(identity.checkpoint_public_key)
    assert before["receipt_key_id"] == key_id_hex(identity.public_key)
    assert before["receipt_key_fingerprint"] == fingerprint(identity.public_key)

    cert = _certify(tmp_path, config)
    text = casebridge("broker", "keys", "--config", str(config), cwd=tmp_path).stdout
    assert f"checkpoint vkey:            {vkey.encode()}" in text
    assert f"receipt key fingerprint:    {fingerprint(identity.public_key)}" in text
    assert f"TH-CASEBRIDGE (broker), serial {cert.serial}" in text
    assert "verified against the configured root of TH, valid now" in text
    after = json.loads(
        casebridge("broker", "show-keys", "--config", str(config), "--json", cwd=tmp_path).stdout
    )
    assert (after["certificate"]["not_before"], after["certificate"]["not_after"]) == (
        cert.not_before,
        cert.not_after,
    )


def test_show_keys_with_a_wrong_passphrase_shows_nothing(tmp_path: Path) -> None:
    config = _init_broker(tmp_path)
    env = {**os.environ, "CASEBRIDGE_BROKER_PASSPHRASE": "not-the-passphrase"}
    done = subprocess.run(
        [sys.executable, "-m", "casebridge", "broker", "show-keys", "--config", str(config)],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stdout == ""
    assert "vkey" not in done.stderr


async def _certificate_leaves(config: Path) -> list[auditlog.CertificateRegistered]:
    settings = load_settings(config, environ={})
    async with admin.opened_store(settings, SystemClock().now()) as store:
        leaves = await store.audit.leaves(0, await store.audit.size())
    parsed = [auditlog.parse_leaf(leaf).fields for leaf in leaves]
    return [f for f in parsed if isinstance(f, auditlog.CertificateRegistered)]


async def test_the_broker_certificate_is_in_its_own_log_once_after_restarts(tmp_path: Path) -> None:
    config = _init_broker(tmp_path)
    cert = _certify(tmp_path, config)
    for _ in range(2):
        process = await BrokerProcess.serve(config, tmp_path / "broker.log")
        try:
            assert await process.stop() == 0
        finally:
            await process.close()
    registered = await _certificate_leaves(config)
    assert [(r.agency_id, r.key_id, r.certificate, r.by) for r in registered] == [
        ("TH-CASEBRIDGE", cert.key_id, cert.raw, "TH-CASEBRIDGE")
    ]
    logged = [json.loads(line) for line in (tmp_path / "broker.log").read_text(encoding="utf-8").splitlines()]
    served = [e["checkpoint_vkey"] for e in logged if e["event"] == "audit_log_serving"]
    shown = json.loads(
        casebridge("broker", "show-keys", "--config", str(config), "--json", cwd=tmp_path).stdout
    )
    assert served == [shown["checkpoint_vkey"]] * 2
