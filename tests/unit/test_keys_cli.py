"""`casebridge keys ...` end to end: real subprocesses, real files in tmp_path, Thai and Lao.

A national authority for Thailand and one for Lao PDR each create a root; agencies with Thai and
Lao display names are certified, import their certificates, rotate, export; a key is revoked.
Every error a user can meet prints exactly one line, `casebridge: ...`, and exits 1.
Commands are written as a shell would split them (`shlex`), so they read like the docs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keys.bundle import verify_bundle
from keys.keystore import load_agency, load_root
from protocol.certificate import AgencyCertificate, RevocationList, RootCertificate, TrustStore

ROOT = Path(__file__).resolve().parents[2]
AGENCY_PASS = "รหัสผ่านของหน่วยงาน ATPD"
ROOT_PASS = "ລະຫັດຜ່ານຂອງປະເທດ root"
FAST = " --kdf-profile interactive"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class Casebridge:
    """Runs `python -m casebridge keys ...` in a directory with only the passphrases we choose."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        base = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
        self.env = {
            **base,
            "PYTHONPATH": str(ROOT),
            "CASEBRIDGE_PASSPHRASE": AGENCY_PASS,
            "CASEBRIDGE_ROOT_PASSPHRASE": ROOT_PASS,
        }

    def __call__(self, command: str, env: dict[str, str] | None = None) -> Result:
        done = subprocess.run(
            [sys.executable, "-m", "casebridge", "keys", *shlex.split(command)],
            cwd=self.cwd,
            env=self.env if env is None else env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
            start_new_session=True,  # No controlling terminal: a prompt can never hang a test.
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def ok(self, command: str, env: dict[str, str] | None = None) -> str:
        result = self(command, env)
        assert result.code == 0, result.err
        assert result.err == "", result.err
        return result.out


def _one_error_line(result: Result) -> str:
    assert result.code == 1, (result.code, result.out, result.err)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("casebridge: ")
    return lines[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Casebridge, Path]:
    """Two roots and two certified agencies, built once through the CLI."""
    d = tmp_path_factory.mktemp("keys-cli")
    cb = Casebridge(d)
    cb.ok(
        "root create --country TH --name 'สำนักงานตำรวจแห่งชาติ' --out th-root.cbks --cert-out th-root.cert"
        + FAST
    )
    cb.ok(
        "root create --country LA --name 'ກະຊວງປ້ອງກັນຄວາມສະຫງົບ' --out la-root.cbks --cert-out la-root.cert"
        + FAST
    )
    cb.ok(
        "agency create --id TH-ATPD --name 'กองบังคับการปราบปรามการค้ามนุษย์' "
        "--out atpd.cbks --request-out atpd.csr" + FAST
    )
    cb.ok(
        "agency create --id LA-MOPS --name 'ນາງ ສົມພອນ ແກ້ວມະນີ' --out mops.cbks --request-out mops.csr" + FAST
    )
    cb.ok(
        "certify --root th-root.cbks --request atpd.csr --role agency --role auditor --valid-days 730 "
        "--out atpd.cert"
    )
    cb.ok("certify --root la-root.cbks --request mops.csr --role agency --out mops.cert")
    cb.ok("agency import-cert --keystore atpd.cbks --cert atpd.cert --root-cert th-root.cert")
    cb.ok("agency import-cert --keystore mops.cbks --cert mops.cert --root-cert la-root.cert")
    return cb, d


def test_roots_and_agencies_are_created_certified_and_imported(world: tuple[Casebridge, Path]) -> None:
    _, d = world
    th = RootCertificate.parse((d / "th-root.cert").read_bytes())
    la = RootCertificate.parse((d / "la-root.cert").read_bytes())
    trust = TrustStore([th, la])
    atpd_raw, mops_raw = (d / "atpd.cert").read_bytes(), (d / "mops.cert").read_bytes()
    atpd = trust.verify_agency(atpd_raw, AgencyCertificate.parse(atpd_raw).not_before)
    mops = trust.verify_agency(mops_raw, AgencyCertificate.parse(mops_raw).not_before)
    assert (atpd.name, atpd.roles) == ("กองบังคับการปราบปรามการค้ามนุษย์", ("agency", "auditor"))
    assert mops.name == "ນາງ ສົມພອນ ແກ້ວມະນີ"
    assert load_agency(d / "mops.cbks", AGENCY_PASS).identity.certificate == mops
    assert load_root(d / "th-root.cbks", ROOT_PASS).identity.next_serial == 2
    for name in ("th-root.cbks", "la-root.cbks", "atpd.cbks", "mops.cbks"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    assert not [p for p in os.listdir(d) if p.endswith(".tmp")]


def test_create_prints_the_fingerprint_to_read_aloud(tmp_path: Path) -> None:
    out = Casebridge(tmp_path).ok(
        "agency create --id LA-LWU --name 'ສະຫະພັນແມ່ຍິງລາວ' --out lwu.cbks --request-out lwu.csr" + FAST
    )
    groups = out.split("signing fingerprint:")[1].split("\n")[0].split()
    assert len(groups) == 8
    assert all(len(g) == 5 and g.isdigit() for g in groups)


def test_certify_refuses_another_countrys_agency(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    line = _one_error_line(
        cb("certify --root th-root.cbks --request mops.csr --role agency --out wrong.cert")
    )
    assert "TH-" in line
    assert not (d / "wrong.cert").exists()


def test_certify_refuses_a_fingerprint_that_does_not_match(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    line = _one_error_line(
        cb(
            "certify --root th-root.cbks --request atpd.csr --role agency --out unheard.cert "
            "--expect-fingerprint '00000 00000 00000 00000 00000 00000 00000 00000'"
        )
    )
    assert "fingerprint" in line
    assert not (d / "unheard.cert").exists()


def test_rotate_export_and_the_bundle_verifies(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    cb.ok("rotate --keystore mops.cbks")
    agency = load_agency(d / "mops.cbks", AGENCY_PASS).identity
    assert len(agency.encryption_keys) >= 2
    cb.ok("export --keystore mops.cbks --out mops.public --force")
    trust = TrustStore([RootCertificate.parse((d / "la-root.cert").read_bytes())])
    bundle = verify_bundle((d / "mops.public").read_bytes(), trust, agency.encryption_keys[-1].not_before)
    assert {s.key_id for s in bundle.encryption_keys} == {k.key_id for k in agency.encryption_keys}
    assert "verified against the pinned root" in cb.ok("fingerprint mops.public --root-cert la-root.cert")


def test_revoke_writes_a_list_that_refuses_the_key(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    cert = AgencyCertificate.parse((d / "atpd.cert").read_bytes())
    at = cert.not_before + 100
    cb.ok(
        f"revoke --root th-root.cbks --key-id {cert.key_id.hex()} --reason 'เครื่องหาย' --at {at} --out th.crl"
    )
    crl = RevocationList.parse((d / "th.crl").read_bytes())
    assert crl.revoked_at(cert.key_id) == at
    assert crl.entries[0].reason == "เครื่องหาย"
    assert cert.key_id.hex() in cb.ok("fingerprint th.crl --root-cert th-root.cert")
    cb.ok("revoke --root th-root.cbks --out th.crl")
    reissued = RevocationList.parse((d / "th.crl").read_bytes())
    assert (reissued.number, reissued.entries) == (crl.number + 1, crl.entries)


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        ("th-root.cert", "national root certificate of TH"),
        ("atpd.cert", "agency certificate of TH-ATPD"),
        ("mops.csr", "certification request of LA-MOPS"),
        ("la-root.cbks", "root keystore"),
        ("atpd.cbks", "agency keystore"),
    ],
)
def test_fingerprint_names_each_kind_of_file(
    world: tuple[Casebridge, Path], file: str, expected: str
) -> None:
    cb, _ = world
    assert expected in cb.ok(f"fingerprint {file}")


def test_fingerprint_unlock_shows_the_keystores_public_keys(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    out = cb.ok("fingerprint atpd.cbks --unlock")
    assert AgencyCertificate.parse((d / "atpd.cert").read_bytes()).key_id.hex() in out
    assert "encryption fingerprint:" in out


def test_broker_is_created_and_certified_with_the_broker_role(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    out = cb.ok("broker create --id TH-CASEBRIDGE --out broker.cbks --request-out broker.csr" + FAST)
    assert "checkpoint fingerprint:" in out
    cb.ok("certify --root th-root.cbks --request broker.csr --role broker --out broker.cert")
    cb.ok("broker import-cert --keystore broker.cbks --cert broker.cert --root-cert th-root.cert")
    assert AgencyCertificate.parse((d / "broker.cert").read_bytes()).roles == ("broker",)


def test_change_passphrase_then_only_the_new_one_opens(tmp_path: Path) -> None:
    cb = Casebridge(tmp_path)
    cb.ok("agency create --id TH-DSDW --name 'กรมพัฒนาสังคม' --out a.cbks --request-out a.csr" + FAST)
    env = {**cb.env, "NEW_SECRET": "ລະຫັດໃໝ່ new one"}
    cb.ok("change-passphrase --keystore a.cbks --new-passphrase-env NEW_SECRET", env)
    assert load_agency(tmp_path / "a.cbks", "ລະຫັດໃໝ່ new one").identity.agency_id == "TH-DSDW"
    assert "Wrong passphrase" in _one_error_line(cb("rotate --keystore a.cbks"))


def test_keystore_readable_by_others_is_reported_once(world: tuple[Casebridge, Path], tmp_path: Path) -> None:
    cb, d = world
    exposed = tmp_path / "exposed.cbks"
    exposed.write_bytes((d / "atpd.cbks").read_bytes())
    exposed.chmod(0o644)
    result = cb(f"fingerprint {exposed} --unlock")
    assert result.code == 0, result.err
    assert result.err.splitlines() == [
        f"casebridge: warning: {exposed} can be read by other users (mode bits 044); run: chmod 600 {exposed}"
    ]


# --- error paths: one line, exit 1 ------------------------------------------------------------


def test_wrong_passphrase_is_one_line(world: tuple[Casebridge, Path]) -> None:
    cb, _ = world
    line = _one_error_line(
        cb("rotate --keystore atpd.cbks", {**cb.env, "CASEBRIDGE_PASSPHRASE": "not it at all"})
    )
    assert "Wrong passphrase" in line
    assert "not it at all" not in line


def test_wrong_kind_is_one_line(world: tuple[Casebridge, Path]) -> None:
    cb, _ = world
    line = _one_error_line(cb("rotate --keystore th-root.cbks"))
    assert "Wrong kind of keystore" in line
    assert "root keystore" in line
    assert "agency keystore" in line


def test_corrupted_keystore_is_one_line(world: tuple[Casebridge, Path], tmp_path: Path) -> None:
    cb, d = world
    damaged = tmp_path / "damaged.cbks"
    data = bytearray((d / "atpd.cbks").read_bytes())
    data[-3] ^= 0xFF
    damaged.write_bytes(bytes(data))
    damaged.chmod(0o600)
    line = _one_error_line(cb(f"export --keystore {damaged} --out {tmp_path / 'x.public'}"))
    assert "Keystore corrupted" in line


def test_garbage_file_is_one_line(world: tuple[Casebridge, Path], tmp_path: Path) -> None:
    cb, _ = world
    garbage = tmp_path / "garbage.cert"
    garbage.write_bytes(b"\x93not a certificate")
    _one_error_line(cb(f"fingerprint {garbage}"))
    _one_error_line(cb(f"agency import-cert --keystore atpd.cbks --cert {garbage} --root-cert th-root.cert"))


def test_missing_file_is_one_line(world: tuple[Casebridge, Path]) -> None:
    cb, _ = world
    assert "no-such.cbks" in _one_error_line(cb("rotate --keystore no-such.cbks"))
    assert "no-such.cert" in _one_error_line(cb("fingerprint no-such.cert"))


def test_existing_keystore_is_not_overwritten(world: tuple[Casebridge, Path]) -> None:
    cb, d = world
    before = (d / "atpd.cbks").read_bytes()
    line = _one_error_line(
        cb("agency create --id TH-ATPD --name x --out atpd.cbks --request-out o.csr" + FAST)
    )
    assert "--force" in line
    assert (d / "atpd.cbks").read_bytes() == before


def test_no_passphrase_source_is_one_line_and_never_hangs(tmp_path: Path) -> None:
    cb = Casebridge(tmp_path)
    env = {k: v for k, v in cb.env.items() if not k.startswith("CASEBRIDGE_")}
    line = _one_error_line(
        cb("agency create --id TH-ATPD --name x --out a.cbks --request-out a.csr" + FAST, env)
    )
    assert "CASEBRIDGE_PASSPHRASE" in line
    assert not (tmp_path / "a.cbks").exists()


# --- passphrases never on the command line ----------------------------------------------------


@pytest.mark.parametrize("flag", ["--passphrase hunter2-secret", "--passphrase=hunter2-secret", "--pass x"])
def test_passphrase_is_never_accepted_as_an_argument(tmp_path: Path, flag: str) -> None:
    cb = Casebridge(tmp_path)
    result = cb(f"agency create --id TH-ATPD --name x --out a.cbks --request-out a.csr {flag}" + FAST)
    assert result.code == 2
    assert not (tmp_path / "a.cbks").exists()


def test_passphrase_env_refuses_a_value_that_looks_like_a_passphrase(tmp_path: Path) -> None:
    cb = Casebridge(tmp_path)
    command = (
        "agency create --id TH-ATPD --name x --out a.cbks --request-out a.csr --passphrase-env 'my secret!'"
    )
    line = _one_error_line(cb(command + FAST))
    assert "my secret!" not in line
    assert not (tmp_path / "a.cbks").exists()


def _options(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _options(child)


def test_no_option_of_any_keys_command_takes_a_passphrase() -> None:
    import keys.cli

    parser = argparse.ArgumentParser()
    keys.cli.register(parser.add_subparsers())
    options = set(_options(parser))
    assert "--passphrase-env" in options
    secretive = {o for o in options if "pass" in o or "secret" in o or "pw" in o}
    assert secretive == {"--passphrase-env", "--new-passphrase-env"}


# --- the terminal prompt ----------------------------------------------------------------------


def _answer_prompts(cwd: Path, command: str, answers: list[str]) -> Result:
    """Run a command whose stdin is a real pseudo-terminal and type each answer after its prompt
    appears (getpass flushes typed-ahead input when it turns echo off, as a person would see)."""
    import select

    env = {k: v for k, v in Casebridge(cwd).env.items() if not k.startswith("CASEBRIDGE_")}
    controller, terminal = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "casebridge", "keys", *shlex.split(command)],
        cwd=cwd,
        env=env,
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(terminal)
    assert proc.stderr is not None
    err = b""
    try:
        for answer in answers:
            prompts_seen = err.count(b": ")
            for _ in range(600):  # At most 60 s for each prompt to appear.
                if err.count(b": ") > prompts_seen or proc.poll() is not None:
                    break
                if select.select([proc.stderr], [], [], 0.1)[0]:
                    err += os.read(proc.stderr.fileno(), 4096)
            os.write(controller, answer.encode() + b"\n")
        out, rest = proc.communicate(timeout=120)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return Result(proc.returncode, out.decode(), (err + rest).decode())


def test_new_passphrase_is_asked_twice_at_the_terminal(tmp_path: Path) -> None:
    typed = "ພິມຢູ່ແປ້ນພິມ typed"
    result = _answer_prompts(
        tmp_path,
        "agency create --id LA-MOPS --name x --out a.cbks --request-out a.csr" + FAST,
        [typed, typed],
    )
    assert result.code == 0, result.err
    assert "New passphrase for the new agency keystore a.cbks" in result.err
    assert "Same passphrase again" in result.err
    assert typed not in result.err + result.out
    assert load_agency(tmp_path / "a.cbks", typed).identity.agency_id == "LA-MOPS"


def test_two_different_new_passphrases_create_nothing(tmp_path: Path) -> None:
    result = _answer_prompts(
        tmp_path,
        "agency create --id LA-MOPS --name x --out a.cbks --request-out a.csr" + FAST,
        ["first passphrase", "second passphrase"],
    )
    assert result.code == 1
    assert result.err.splitlines()[-1].startswith("casebridge: ")
    assert not (tmp_path / "a.cbks").exists()
