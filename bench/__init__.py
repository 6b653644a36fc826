"""CaseBridge benchmarks, and the deterministic agencies and timers they share.

Every benchmark prints its figures next to a baseline measured in the same run on the same
machine, and the ratio of the two, so figures from different machines compare through the
ratio. Every loop is bounded in count and in time. Figures are recorded in docs/performance.md.

The agencies are derived from fixed seeds, so a child process that rebuilds them holds the same
keys as its parent (the memory benchmarks seal in one process and open in another).
"""

from __future__ import annotations

import hashlib
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import nacl.public
import nacl.signing

from protocol.certificate import AgencyCertificate, EncryptionKey, Role, RootCertificate, TrustStore
from protocol.envelope import RecipientKey

NOW = 1_750_000_000
MIB = 1 << 20


@dataclass(frozen=True)
class BenchWorld:
    trust: TrustStore
    sender: AgencyCertificate
    sender_key: nacl.signing.SigningKey
    recipients: tuple[EncryptionKey, ...]
    opener_id: str
    opener_keys: dict[bytes, RecipientKey]


def _seed(label: str) -> bytes:
    return hashlib.sha256(b"casebridge-bench/" + label.encode()).digest()


def bench_world(recipient_count: int) -> BenchWorld:
    """A Thai sender and `recipient_count` Lao agencies; the first recipient is the one who opens."""
    roots = {}
    certs = {}
    for country in ("TH", "LA"):
        root_key = nacl.signing.SigningKey(_seed(f"root-{country}"))
        roots[country] = (
            root_key,
            RootCertificate.create(root_key, country=country, name=country, not_before=0, not_after=2 * NOW),
        )
    agencies = ["TH-FOCAL", *(f"LA-FOCAL-{i}" for i in range(1, recipient_count + 1))]
    for agency_id in agencies:
        root_key, root = roots[agency_id[:2]]
        signing_key = nacl.signing.SigningKey(_seed(f"agency-{agency_id}"))
        certs[agency_id] = (
            signing_key,
            AgencyCertificate.issue(
                root_key,
                root,
                serial=1,
                agency_id=agency_id,
                name=agency_id,
                roles=[Role.AGENCY],
                signing_key=bytes(signing_key.verify_key),
                not_before=0,
                not_after=2 * NOW,
            ),
        )
    encryption_keys = []
    secrets = {}
    for agency_id in agencies[1:]:
        box = nacl.public.PrivateKey(_seed(f"box-{agency_id}"))
        key = EncryptionKey.issue(
            certs[agency_id][0],
            agency_id=agency_id,
            public_key=bytes(box.public_key),
            not_before=0,
            not_after=2 * NOW,
        )
        encryption_keys.append(key)
        secrets[agency_id] = {key.key_id: RecipientKey(bytes(box.public_key), bytes(box))}
    return BenchWorld(
        trust=TrustStore(root for _, root in roots.values()),
        sender=certs["TH-FOCAL"][1],
        sender_key=certs["TH-FOCAL"][0],
        recipients=tuple(encryption_keys),
        opener_id=agencies[1],
        opener_keys=secrets[agencies[1]],
    )


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far.

    On Linux, VmHWM of /proc/self/status: ru_maxrss would do, but Linux carries the high-water
    mark of the process that ran `exec` (here the parent, which may be far larger) into the new
    program's ru_maxrss, so a child's ru_maxrss can hide its own growth. Elsewhere, ru_maxrss.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


@dataclass(frozen=True)
class Rate:
    """Operations per second from a bounded timed loop."""

    per_second: float
    iterations: int

    @property
    def microseconds(self) -> float:
        return 1e6 / self.per_second


def rate(operation: Callable[[], object], *, seconds: float, max_iterations: int, rounds: int = 5) -> Rate:
    """The median over `rounds` of operations per second, each round bounded by `seconds` and
    `max_iterations` (after one warm-up call)."""
    operation()
    results = []
    total = 0
    for _ in range(rounds):
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while count < max_iterations:
            operation()
            count += 1
            if time.perf_counter() >= deadline:
                break
        results.append(count / (time.perf_counter() - start))
        total += count
    return Rate(statistics.median(results), total)
