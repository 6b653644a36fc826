"""The world the relay benchmark runs in: a PKI, a broker data directory, the broker process,
and what the kernel says about a process (CPU time, resident memory).

Invariants:
- Everything is made fresh under one temporary directory per run and listens on 127.0.0.1.
- Agencies and the operator are registered offline before the broker starts (as the operator's
  `casebridge broker register-certificate` does); each agency's encryption keys are registered
  over HTTP by its own worker, as the client library does.
- Keystores use the `interactive` KDF profile and a fixed benchmark passphrase: they protect
  nothing but throwaway keys.
- Process figures come from /proc (Linux): CPU from `utime + stime` of /proc/<pid>/stat, memory
  from `VmRSS` / `VmHWM` of /proc/<pid>/status. `reset_peak` writes 5 to /proc/<pid>/clear_refs,
  which restarts `VmHWM` from the current RSS (Linux 4.0+), so a phase's peak is its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker import admin
from broker.settings import from_values, to_toml
from keys import lifecycle
from keys.identity import AgencyIdentity, BrokerIdentity, RootIdentity
from keys.keystore import KDF_PROFILES, save_identity
from protocol.certificate import Role

PASSPHRASE = "bench-relay-ทดสอบ-ທົດສອບ"
BROKER_ID = "TH-CASEBRIDGE"
OPERATOR = "TH-OPERATOR"
SENDERS = ("TH-ATPD", "TH-DSDW", "TH-OCSC", "TH-NSPC")
RECIPIENTS = ("LA-MOLSW", "LA-LWU", "LA-NSATIP", "LA-MPS")
START_TIMEOUT_SECONDS = 60.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class RelayWorld:
    """Keystores and trust anchors on disk, for the broker and each agency's worker."""

    directory: Path
    roots: tuple[Path, ...]
    keystores: Mapping[str, Path]
    config: Path

    def keystore(self, agency_id: str) -> Path:
        return self.keystores[agency_id]


def _agency(
    roots: dict[str, RootIdentity], agency_id: str, roles: tuple[Role, ...], now: int
) -> AgencyIdentity:
    country = agency_id[:2]
    agency = lifecycle.create_agency(agency_id, f"{agency_id} ศูนย์ ສູນ", now)
    roots[country], cert = lifecycle.certify(roots[country], lifecycle.agency_request(agency), roles, now)
    return lifecycle.import_certificate(agency, cert.raw, roots[country].certificate, now)


def _broker(roots: dict[str, RootIdentity], now: int) -> BrokerIdentity:
    broker = lifecycle.create_broker(BROKER_ID, "CaseBridge broker")
    roots["TH"], cert = lifecycle.certify(roots["TH"], lifecycle.broker_request(broker), (Role.BROKER,), now)
    return lifecycle.import_broker_certificate(broker, cert.raw, roots["TH"].certificate, now)


async def create_world(directory: Path, now: int, **broker_settings: object) -> RelayWorld:
    """Roots TH and LA, the agencies of SENDERS and RECIPIENTS, an operator and the broker; a
    broker data directory with every certificate registered; `broker_settings` go into its
    TOML file (the port is chosen at start)."""
    directory.mkdir(parents=True, exist_ok=True)
    roots = {
        "TH": lifecycle.create_root("TH", "ศูนย์ต่อต้านการค้ามนุษย์", now),
        "LA": lifecycle.create_root("LA", "ຄະນະກຳມະການ ຕ້ານການຄ້າມະນຸດ", now),
    }
    profile = KDF_PROFILES["interactive"]
    agencies = {a: _agency(roots, a, (Role.AGENCY,), now) for a in (*SENDERS, *RECIPIENTS)}
    agencies[OPERATOR] = _agency(roots, OPERATOR, (Role.OPERATOR,), now)
    broker = _broker(roots, now)
    root_paths = []
    for country, root in sorted(roots.items()):
        path = directory / f"{country.lower()}-root.cert"
        path.write_bytes(root.certificate.raw)
        root_paths.append(path)
    keystores = {}
    for agency_id, identity in agencies.items():
        keystores[agency_id] = directory / f"{agency_id.lower()}.cbks"
        save_identity(keystores[agency_id], identity, PASSPHRASE, profile)
    data = directory / "broker-data"
    table: dict[str, object] = {
        "broker_id": BROKER_ID,
        "data_dir": str(data),
        "root_cert_files": [str(p) for p in root_paths],
        "keystore_file": str(directory / "broker.cbks"),
        "listen_host": "127.0.0.1",
        "listen_port": 0,
        **broker_settings,
    }
    settings = from_values(table, base_dir=directory, environ={})
    save_identity(settings.keystore_file, broker, PASSPHRASE, profile)
    config = directory / "broker.toml"
    config.write_text(to_toml(table), encoding="utf-8")
    async with admin.opened_store(settings, now) as store:
        for identity in agencies.values():
            assert identity.certificate is not None
            await admin.register_certificate(settings, store, identity.certificate.raw, now)
    return RelayWorld(directory, tuple(root_paths), keystores, config)


@dataclass
class ServerProcess:
    """A relay server in its own process (the broker, or the bare baseline)."""

    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def start_server(command: list[str], log_file: Path, env: Mapping[str, str] | None = None) -> ServerProcess:
    """Start a server that prints its URL as its first line of output once serving."""
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, env={**os.environ, **(env or {})}
        )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    line = b""
    while time.monotonic() < deadline and not line:
        line = process.stdout.readline()
        if process.poll() is not None:
            break
    if not line.strip():
        process.kill()
        raise RuntimeError(f"server did not start: {log_file.read_text(errors='replace')[-2000:]}")
    return ServerProcess(process, line.decode().strip())


def start_broker(world: RelayWorld) -> ServerProcess:
    command = [sys.executable, "-m", "casebridge", "broker", "serve", "--config", str(world.config)]
    return start_server(command, world.directory / "broker.log", {"CASEBRIDGE_BROKER_PASSPHRASE": PASSPHRASE})


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float
    rss_bytes: int
    peak_rss_bytes: int


def sample(pid: int) -> ProcessSample:
    """CPU seconds used so far (user + system), current and peak resident memory of `pid`."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name may hold spaces: fields are counted after its closing parenthesis.
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    memory = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                memory[name] = int(value.split()[0]) * 1024
    return ProcessSample(cpu, memory["VmRSS"], memory["VmHWM"])


def reset_peak(pid: int) -> bool:
    """Restart `VmHWM` of `pid` from its current RSS; False where the kernel does not allow it."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        return False
    return True


def check_peak_probe() -> None:
    """Check on this process that `reset_peak` and `VmHWM` see what they should: after a reset,
    a 32 MiB allocation shows in the peak (else the memory figures would mean nothing)."""
    pid = os.getpid()
    if not reset_peak(pid):
        raise RuntimeError("cannot restart VmHWM (/proc/<pid>/clear_refs); run as the processes' owner")
    before = sample(pid).peak_rss_bytes
    block = bytearray(32 << 20)
    block[::4096] = b"\x01" * len(block[::4096])
    grown = sample(pid).peak_rss_bytes - before
    del block
    if grown < 30 << 20:
        raise RuntimeError(f"VmHWM grew by {grown} bytes for a 32 MiB allocation")


def load_average() -> str:
    with contextlib.suppress(OSError), open("/proc/loadavg", encoding="ascii") as f:
        return " ".join(f.read().split()[:3])
    return "unknown"


def wait_idle(pid: int, timeout_seconds: float = 120.0, busy_share: float = 0.05) -> float:
    """Wait until `pid` uses under `busy_share` of a core over half a second (a server still
    working off an earlier phase's backlog would take CPU from the next); returns the wait."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_seconds:
        before = sample(pid).cpu_seconds
        time.sleep(0.5)
        if sample(pid).cpu_seconds - before < busy_share * 0.5:
            break
    return time.monotonic() - started


_LATENCY = re.compile(r"casebridge_request_duration_seconds_(count|sum)\{([^}]*)\} (\S+)")


def request_totals(url: str) -> dict[str, tuple[float, float]]:
    """Per route and method, the broker's request count and total seconds so far (from its
    Prometheus histogram at /metrics)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=30) as response:  # noqa: S310 - 127.0.0.1
        text = response.read().decode("utf-8")
    totals: dict[str, list[float]] = {}
    for kind, labels, value in _LATENCY.findall(text):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = f"{fields.get('method', '')} {fields.get('route', '')}"
        totals.setdefault(key, [0.0, 0.0])[0 if kind == "count" else 1] = float(value)
    return {k: (v[0], v[1]) for k, v in totals.items()}
