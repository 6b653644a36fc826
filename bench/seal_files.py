"""File-to-file sealing and opening of one large attachment for three recipients.

Throughput: `clients.envelope_files.seal_to_directory` and `open_from_directory` against raw
libsodium secretstream over the same file in the same run (read 1 MiB, push, write; and the
matching pull). Both sides fsync what they write, as the product must; the baseline's figure
without its fsync is printed too. Ours runs twice per round: with the ciphertext digest on a
second thread (the default on a multi-core machine) and inline. Figures are MiB of attachment
plaintext per second: the best of `--repeat` interleaved rounds, their order rotating so drift
hits every side alike, and the median in brackets; and the CPU time per MiB (all threads).

Memory: each phase (seal, open) runs in a fresh subprocess that records its peak RSS after its
imports and key setup (the baseline), does the work, and records ru_maxrss again.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

import nacl.bindings as sodium

from bench import MIB, NOW, BenchWorld, bench_world, peak_rss_bytes
from clients.envelope_files import load_sealed_directory, open_from_directory, seal_to_directory

RECIPIENTS = 3
BASELINE_KEY = bytes(range(32))
FREE_SPACE_FACTOR = 9  # the input and one round's eight outputs (ciphertext is ~3% larger)
T = TypeVar("T")
PHASES = ("push", "push_nosync", "seal", "seal_inline", "pull", "pull_nosync", "open", "open_inline")


def make_input(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, MIB))
            f.write(piece)
            left -= len(piece)
        f.flush()
        os.fsync(f.fileno())


def seal(world: BenchWorld, source: Path, out_dir: Path, *, threaded: bool | None = None) -> None:
    seal_to_directory(
        out_dir,
        sender=world.sender,
        signing_key=world.sender_key,
        recipients=world.recipients,
        content_type="application/json",
        body=b'{"referral": "bench"}',
        attachments=[source],
        now=NOW,
        digest_thread=threaded,
    )


def open_sealed(
    world: BenchWorld, sealed_dir: Path, destination: Path, *, threaded: bool | None = None
) -> None:
    header, parts = load_sealed_directory(sealed_dir)
    open_from_directory(
        header,
        list(parts),
        destination,
        trust=world.trust,
        sender_certificate=world.sender.raw,
        recipient_id=world.opener_id,
        keys=world.opener_keys,
        now=NOW + 60,
        digest_thread=threaded,
    )


def baseline_push(source: Path, target: Path) -> tuple[bytes, float]:
    """Raw secretstream; returns the stream header and the seconds its final fsync took."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    header: bytes = sodium.crypto_secretstream_xchacha20poly1305_init_push(state, BASELINE_KEY)
    size = source.stat().st_size
    done = 0
    with source.open("rb") as fin, target.open("wb") as fout:
        while chunk := fin.read(MIB):
            done += len(chunk)
            tag = (
                sodium.crypto_secretstream_xchacha20poly1305_TAG_FINAL
                if done == size
                else sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
            )
            fout.write(sodium.crypto_secretstream_xchacha20poly1305_push(state, chunk, None, tag))
        fout.flush()
        start = time.perf_counter()
        os.fsync(fout.fileno())
    return header, time.perf_counter() - start


def baseline_pull(header: bytes, source: Path, target: Path) -> float:
    """The matching pull; returns the seconds its final fsync took."""
    state = sodium.crypto_secretstream_xchacha20poly1305_state()
    sodium.crypto_secretstream_xchacha20poly1305_init_pull(state, header, BASELINE_KEY)
    step = MIB + sodium.crypto_secretstream_xchacha20poly1305_ABYTES
    with source.open("rb") as fin, target.open("wb") as fout:
        while chunk := fin.read(step):
            plain, _tag = sodium.crypto_secretstream_xchacha20poly1305_pull(state, chunk, None)
            fout.write(plain)
        fout.flush()
        start = time.perf_counter()
        os.fsync(fout.fileno())
    return time.perf_counter() - start


@dataclass
class Runs:
    """Per phase, per round: wall seconds, and CPU seconds of the whole process (all threads)."""

    wall: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    user: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})
    kernel: dict[str, list[float]] = field(default_factory=lambda: {phase: [] for phase in PHASES})

    def clock(self, phase: str, action: Callable[[], T]) -> T:
        """Time `action` as `phase`. Everything written before is synced first, so no phase pays
        for the one before it."""
        os.sync()
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        result = action()
        self.wall[phase].append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_SELF)
        self.user[phase].append(after.ru_utime - before.ru_utime)
        self.kernel[phase].append(after.ru_stime - before.ru_stime)
        return result


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def throughput(work: Path, repeat: int) -> Runs:
    """Every phase, `repeat` interleaved rounds; the input file must exist."""
    world = bench_world(RECIPIENTS)
    source, ct, pt = work / "input.bin", work / "baseline.ct", work / "baseline.pt"
    runs = Runs()

    def baseline() -> None:
        header, fsync_seconds = runs.clock("push", partial(baseline_push, source, ct))
        runs.wall["push_nosync"].append(runs.wall["push"][-1] - fsync_seconds)
        fsync_seconds = runs.clock("pull", partial(baseline_pull, header, ct, pt))
        runs.wall["pull_nosync"].append(runs.wall["pull"][-1] - fsync_seconds)

    def ours(threaded: bool, suffix: str) -> None:
        sealed, opened = work / f"sealed{suffix}", work / f"opened{suffix}"
        runs.clock("seal" + suffix, partial(seal, world, source, sealed, threaded=threaded))
        runs.clock("open" + suffix, partial(open_sealed, world, sealed, opened, threaded=threaded))

    units: list[Callable[[], None]] = [baseline, partial(ours, True, ""), partial(ours, False, "_inline")]
    for round_no in range(repeat):
        # The order rotates from round to round: on a virtual machine a phase's place in the
        # round changes what its writes cost (fresh page-cache pages), so no side keeps one place.
        for unit in units[round_no % 3 :] + units[: round_no % 3]:
            unit()
        # Outputs are deleted once a round, so every timed phase writes to a file system in the
        # same state: the deferred work of a deletion lands on no particular phase.
        for path in work.iterdir():
            if path != source:
                remove(path)
    return runs


def memory_child(phase: str, work: Path) -> None:
    """Run in a fresh interpreter: one phase, printing baseline and peak RSS as JSON."""
    world = bench_world(RECIPIENTS)
    baseline = peak_rss_bytes()
    if phase == "seal":
        seal(world, work / "input.bin", work / "sealed")
    else:
        open_sealed(world, work / "sealed", work / "opened")
    print(json.dumps({"baseline": baseline, "peak": peak_rss_bytes()}))


def memory(work: Path) -> dict[str, tuple[float, float]]:
    """Baseline and peak RSS in MiB of each phase, each in a fresh subprocess."""
    figures = {}
    for phase in ("seal", "open"):
        child = subprocess.run(
            [sys.executable, "-m", "bench.seal_files", "--memory-child", phase, "--dir", str(work)],
            capture_output=True,
            text=True,
            check=True,
            timeout=1800,
        )
        measured = json.loads(child.stdout)
        figures[phase] = (measured["baseline"] / MIB, measured["peak"] / MIB)
    remove(work / "sealed")
    remove(work / "opened")
    return figures


def report(size_mib: int, repeat: int, runs: Runs, memory_mib: dict[str, tuple[float, float]]) -> None:
    best = {phase: size_mib / min(seconds) for phase, seconds in runs.wall.items()}
    median = {phase: size_mib / statistics.median(seconds) for phase, seconds in runs.wall.items()}

    def cpu(phase: str) -> str:
        user = 1000 * statistics.median(runs.user[phase]) / size_mib
        kernel = 1000 * statistics.median(runs.kernel[phase]) / size_mib
        return f"CPU ms/MiB user {user:.2f} kernel {kernel:.2f}"

    print(f"attachment {size_mib} MiB, {RECIPIENTS} recipients: MiB/s best of {repeat} [median]")
    for ours, theirs in (("seal", "push"), ("open", "pull")):
        print(
            f"  secretstream {theirs}   {best[theirs]:5.0f} [{median[theirs]:.0f}]"
            f"   without its fsync {best[theirs + '_nosync']:.0f} [{median[theirs + '_nosync']:.0f}]"
            f"   {cpu(theirs)}"
        )
        for phase in (ours, ours + "_inline"):
            print(
                f"  {phase:21} {best[phase]:5.0f} [{median[phase]:.0f}]"
                f"   ratio {best[phase] / best[theirs]:.2f} [{median[phase] / median[theirs]:.2f}]"
                f"   to the baseline without fsync {best[phase] / best[theirs + '_nosync']:.2f}"
                f"   {cpu(phase)}"
            )
    for phase, (baseline, peak) in memory_mib.items():
        print(
            f"  {phase}: peak RSS {peak:.1f} MiB, {peak - baseline:.1f} MiB above the interpreter's"
            f" baseline of {baseline:.1f} MiB (target < 64)"
        )


def run(size_mib: int, repeat: int, parent: Path | None) -> None:
    size = size_mib * MIB
    base = parent or Path(tempfile.gettempdir())
    free = shutil.disk_usage(base).free
    if free < FREE_SPACE_FACTOR * size:
        sys.exit(f"need {FREE_SPACE_FACTOR * size // MIB} MiB free in {base}, have {free // MIB} MiB")
    work = Path(tempfile.mkdtemp(prefix="casebridge-bench-", dir=base))
    try:
        make_input(work / "input.bin", size)
        runs = throughput(work, repeat)
        memory_mib = memory(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(size_mib, repeat, runs, memory_mib)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.seal_files", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--gib", action="store_true", help="then also a 1 GiB attachment, one round")
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds (1 to 20)")
    parser.add_argument("--dir", type=Path, help="where to write, on the disk to measure (default: temp)")
    parser.add_argument("--memory-child", choices=("seal", "open"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        memory_child(args.memory_child, args.dir)
        return
    run(args.size_mib, min(max(1, args.repeat), 20), args.dir)
    if args.gib:
        run(1024, 1, args.dir)


if __name__ == "__main__":
    main()
