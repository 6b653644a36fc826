"""A large attachment through the broker, with the client library on both sides: the broker's
peak resident memory above what it held before, while it receives and while it serves it.

The sender seals first (not measured: sealing is the client's work), then uploads with
`resume_outbox`; the recipient then downloads, checks and opens with `fetch_deliveries`. Before
each of the two transfers the broker's peak is restarted from its current RSS
(`bench.relay_world.reset_peak`), so each peak is the transfer's own; the figure is that peak
minus the peak just after the restart (the RSS then). Disk: about five times the attachment
size under `directory`.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

from bench.relay_world import (
    PASSPHRASE,
    RECIPIENTS,
    SENDERS,
    RelayWorld,
    ServerProcess,
    check_peak_probe,
    reset_peak,
    sample,
)
from clients.agency import AgencyClient, load_pinned_roots
from clients.outbox import OutboxState
from keys.keystore import load_agency

MIB = 1 << 20
GIB = 1 << 30
TARGET_MIB = 64
FILENAME = "ເອກະສານ-ใหญ่.bin"


def _write_attachment(path: Path, size: int) -> None:
    block = os.urandom(MIB)
    with path.open("wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(MIB, left)])
            left -= MIB


def _client(world: RelayWorld, agency_id: str, broker: ServerProcess, state: Path) -> AgencyClient:
    identity = load_agency(world.keystore(agency_id), PASSPHRASE).identity
    return AgencyClient(
        identity, roots=load_pinned_roots(list(world.roots)), broker_url=broker.url, state_dir=state
    )


async def _run(world: RelayWorld, broker: ServerProcess, size: int, directory: Path) -> dict[str, float]:
    directory.mkdir(parents=True, exist_ok=True)
    attachment = directory / FILENAME
    _write_attachment(attachment, size)
    figures: dict[str, float] = {"attachment_mib": size / MIB}
    async with (
        _client(world, SENDERS[0], broker, directory / "sender") as sender,
        _client(world, RECIPIENTS[0], broker, directory / "recipient") as recipient,
    ):
        await recipient.publish_encryption_keys()
        await sender.refresh_directory()
        await sender.enqueue([recipient.agency_id], "ส่งต่อพร้อมเอกสาร".encode(), attachments=[attachment])
        attachment.unlink()

        if not reset_peak(broker.pid):
            raise RuntimeError("cannot restart the broker's VmHWM (/proc/<pid>/clear_refs); run as its owner")
        before = sample(broker.pid)
        started = time.monotonic()
        (result,) = await sender.resume_outbox()
        figures["upload_seconds"] = time.monotonic() - started
        if result.state is not OutboxState.ACCEPTED:
            raise RuntimeError(f"the large envelope was not accepted: {result.problem}")
        after = sample(broker.pid)
        figures["broker_rss_before_mib"] = before.peak_rss_bytes / MIB
        figures["upload_peak_above_mib"] = (after.peak_rss_bytes - before.peak_rss_bytes) / MIB

        reset_peak(broker.pid)
        before = sample(broker.pid)
        started = time.monotonic()
        (delivery,) = await recipient.fetch_deliveries()
        figures["download_and_open_seconds"] = time.monotonic() - started
        after = sample(broker.pid)
        figures["download_peak_above_mib"] = (after.peak_rss_bytes - before.peak_rss_bytes) / MIB
        if delivery.attachments[0].length != size:
            raise RuntimeError("the attachment came back with another length")
        await recipient.ack(delivery)
    shutil.rmtree(directory, ignore_errors=True)
    return figures


def run(world: RelayWorld, broker: ServerProcess, gib: float, directory: Path) -> dict[str, float]:
    size = int(gib * GIB)
    check_peak_probe()
    figures = asyncio.run(_run(world, broker, size, directory))
    mib = figures["attachment_mib"]
    print(f"\nLarge attachment: {mib:.0f} MiB through the broker (client library on both sides)")
    print(f"  broker RSS before: {figures['broker_rss_before_mib']:.1f} MiB")
    for what, key, seconds in (
        ("upload (broker receives, checks, stores)", "upload_peak_above_mib", "upload_seconds"),
        (
            "download (broker serves; client checks, opens)",
            "download_peak_above_mib",
            "download_and_open_seconds",
        ),
    ):
        above = figures[key]
        verdict = "met" if above < TARGET_MIB else "NOT met"
        print(
            f"  {what}: broker peak {above:.1f} MiB above its baseline (target < {TARGET_MIB}: {verdict}); "
            f"{figures[seconds]:.1f} s, {mib / figures[seconds]:.0f} MiB/s"
        )
    return figures
