"""The broker serves under MemoryDenyWriteExecute=yes, as deploy/systemd's units run it.

systemd enforces that setting with a seccomp filter; Linux's own `PR_SET_MDWE` prctl
(`PR_MDWE_REFUSE_EXEC_GAIN`, Linux 6.3 and later) refuses the same mappings (writable and
executable memory, or making writable memory executable) and needs no running systemd. A
launcher sets it and then executes `casebridge broker serve`; the flag is kept across
execve. The broker then unlocks its keystore (Argon2id), answers signed requests, accepts an
envelope and serves it back: CPython, PyNaCl, msgpack and aiohttp's C parts under the
restriction. Kernels without the prctl skip the test with the reason.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from broker.clock import SystemClock
from tests.integration.broker_harness import (
    ENVELOPE_TYPE,
    START_TIMEOUT_SECONDS,
    TEST_PASSPHRASE,
    BrokerProcess,
)
from tests.integration.pki import Pki, seal

LAUNCHER = """
import ctypes, os, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(97)
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""
PROBE = """
import mmap
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    print("refused")
else:
    print("allowed")
"""
NO_PRCTL = 97
THAI_NOTE = ("เอกสารประกอบ.pdf", "บันทึก สมชาย ใจดี".encode() * 2000)


def restricted(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def memory_deny_write_execute() -> None:
    """Skip where the kernel lacks PR_SET_MDWE; check it really refuses W+X after execve."""
    probe = restricted("-c", PROBE)
    if probe.returncode == NO_PRCTL:
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3 or later)")
    assert probe.stdout.strip() == "refused", probe.stdout + probe.stderr


async def test_the_broker_serves_a_referral_when_writable_executable_memory_is_refused(
    memory_deny_write_execute: None, tmp_path: Path
) -> None:
    pki = Pki.create(SystemClock().now())
    prepared = await BrokerProcess.start(tmp_path / "broker", pki)
    assert await prepared.stop() == 0
    log_file = tmp_path / "restricted.log"
    env = {**os.environ, "CASEBRIDGE_BROKER_PASSPHRASE": TEST_PASSPHRASE}
    with log_file.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCHER, "-m", "casebridge",
            "broker", "serve", "--config", str(prepared.config),
            stdout=asyncio.subprocess.PIPE, stderr=log, env=env,
        )  # fmt: skip
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), START_TIMEOUT_SECONDS)
    assert line, log_file.read_text()[-3000:]
    broker = BrokerProcess(process, line.decode().strip(), prepared.settings, prepared.config, log_file)
    try:
        async with aiohttp.ClientSession() as session:
            await broker.enroll(pki, session, "TH-ATPD", "LA-MOLSW")
            sealed = seal(pki["TH-ATPD"], [pki["LA-MOLSW"]], SystemClock().now(), attachments=[THAI_NOTE])
            sent = await broker.client(pki, "TH-ATPD", session).post(
                "/v1/envelopes", sealed.body, ENVELOPE_TYPE
            )
            assert sent.status == 201, sent.body
            lao = broker.client(pki, "LA-MOLSW", session)
            part = await lao.get(f"/v1/inbox/{sealed.envelope_id.hex()}/parts/1")
            assert part.body == sealed.parts[1]
    finally:
        assert await broker.stop() == 0
