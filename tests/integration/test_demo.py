"""`casebridge demo`, as README's first command runs it: its own process, a clean environment (a
fresh HOME and TMPDIR, no CASEBRIDGE_* variables), a real broker process on 127.0.0.1.

What must hold: it succeeds and says so readably (the Thai referral decrypted on the Lao side,
the Lao name intact, the three receipts back in Thailand); it leaves no broker process and no
directory behind, whether it succeeds, fails or is stopped by a signal; and every failure is
one plain line with a non-zero status.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from protocol import codec

THAI_SUBJECT = "แจ้งการคัดแยกผู้เสียหายจากการค้ามนุษย์ และขอความร่วมมือ"
THAI_AGENCY = "กองบังคับการปราบปรามการค้ามนุษย์"
LAO_NAME = "ນາງ ສົມພອນ ແກ້ວມະນີ"
ATTACHMENT = "บันทึกการคัดแยกผู้เสียหาย.txt"
BROKER_PID = re.compile(r"serving at http://127\.0\.0\.1:\d+ \(process (\d+)\)")
RECEIPTS = (("accepted", "TH-CASEBRIDGE"), ("delivered", "LA-NSATIP"), ("verified", "LA-NSATIP"))
RUN_BOUND_SECONDS = 170

pytestmark = pytest.mark.slow


@dataclass
class Sandbox:
    """Where a demo run lives: its HOME (also the working directory) and its TMPDIR."""

    home: Path
    temp: Path

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CASEBRIDGE_")}
        return env | {"HOME": str(self.home), "TMPDIR": str(self.temp), "PYTHONIOENCODING": "utf-8"}

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "casebridge", "demo", *args],
            cwd=self.home, env=self.env, capture_output=True, text=True, encoding="utf-8",
            timeout=RUN_BOUND_SECONDS, check=False,
        )  # fmt: skip


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    box = Sandbox(tmp_path / "home", tmp_path / "tmp")
    box.home.mkdir()
    box.temp.mkdir()
    return box


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def broker_pid(stdout: str) -> int:
    found = BROKER_PID.search(stdout)
    assert found, stdout
    return int(found.group(1))


def step(stdout: str, number: int) -> str:
    """The output of step `number` ("[n/9] ...") up to the next step."""
    start = stdout.index(f"\n[{number}/")
    end = stdout.find(f"\n[{number + 1}/", start + 1)
    return stdout[start : end if end != -1 else None]


def test_demo_sends_a_thai_referral_to_laos_and_leaves_nothing_behind(sandbox: Sandbox) -> None:
    result = sandbox.run()

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert codec.nfc(out) == out
    assert THAI_AGENCY in step(out, 2)
    received = step(out, 7)
    assert f"from TH-ATPD ({THAI_AGENCY})" in received
    assert THAI_SUBJECT in received
    assert LAO_NAME in received
    assert "(Ms Somphone Keomany)" in received
    assert re.search(
        rf"attachment saved: \S+/{ATTACHMENT} \(\d+ bytes, identical to the file sent\)", received
    )
    receipts = step(out, 8)
    for kind, signer in RECEIPTS:
        assert re.search(rf"^  {kind} +\d{{4}}-\d\d-\d\d .* signed by {signer}", receipts, re.M), receipts
    assert "the broker's status: LA-NSATIP verified" in receipts
    assert "the broker exited with status 0" in step(out, 9)
    assert '"interactive" Argon2id profile' in out
    assert not alive(broker_pid(out))
    assert list(sandbox.temp.iterdir()) == []
    assert list(sandbox.home.iterdir()) == []


def test_demo_keeps_its_directory_when_asked(sandbox: Sandbox) -> None:
    kept = sandbox.home / "kept"

    result = sandbox.run("--keep", str(kept))

    assert result.returncode == 0, result.stderr
    assert not alive(broker_pid(result.stdout))
    assert (kept / "broker" / "broker.toml").is_file()
    assert (kept / "broker" / "broker.sqlite3").is_file()
    assert (kept / "la-nsatip-received" / ATTACHMENT).read_text(encoding="utf-8").count(LAO_NAME) == 1
    assert list(sandbox.temp.iterdir()) == []


@pytest.mark.parametrize("reason", ["not empty", "under a file"])
def test_demo_refuses_an_unusable_keep_directory_in_one_line(sandbox: Sandbox, reason: str) -> None:
    blocker = sandbox.home / "taken"
    if reason == "not empty":
        blocker.mkdir()
        (blocker / "something").write_text("x", encoding="utf-8")
        target = blocker
    else:
        blocker.write_text("x", encoding="utf-8")
        target = blocker / "demo"

    result = sandbox.run("--keep", str(target))

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("casebridge: ")
    assert "[1/9]" not in result.stdout
    assert sorted(p.name for p in sandbox.home.iterdir()) == ["taken"]


@contextlib.contextmanager
def started_demo(sandbox: Sandbox) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "casebridge", "demo"],
        cwd=sandbox.home, env=sandbox.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, encoding="utf-8",
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=RUN_BOUND_SECONDS)


def test_demo_stopped_by_sigterm_stops_its_broker_and_removes_its_directory(sandbox: Sandbox) -> None:
    with started_demo(sandbox) as demo:
        assert demo.stdout is not None
        seen = ""
        for line in demo.stdout:
            seen += line
            if BROKER_PID.search(line):
                break
        pid = broker_pid(seen)
        assert alive(pid)
        demo.send_signal(signal.SIGTERM)
        rest, err = demo.communicate(timeout=RUN_BOUND_SECONDS)

    assert demo.returncode == 1, seen + rest
    assert err == "casebridge: demo stopped by a signal; the broker was stopped\n"
    assert not alive(pid)
    assert list(sandbox.temp.iterdir()) == []
