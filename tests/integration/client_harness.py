"""Building blocks for the client library tests: real `AgencyClient`s against a real broker.

Each client gets the PKI's pinned roots (TH and LA), its own state directory, the broker's clock
(so signatures and receipts agree with the broker's time) and a quick retry policy. Nothing here
stands in for a CaseBridge component.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from clients.agency import AgencyClient
from clients.transport import RetryPolicy
from protocol.certificate import RootCertificate
from tests.integration.broker_harness import RunningBroker

QUICK_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.01, max_delay_seconds=0.05)
THAI_REFERRAL = (
    '{"เรื่อง": "ส่งต่อกรณี นางสาว สมหญิง ใจดี", "ผู้เสียหาย": "สมชาย ใจดี",'
    ' "ຜູ້ເຄາະຮ້າຍ": "ນາງ ສົມພອນ ແກ້ວມະນີ", "หมายเหตุ": "ขอความช่วยเหลือด่วน"}'
).encode()
LAO_FILENAME = "ເອກະສານ.pdf"
THAI_FILENAME = "เอกสารประกอบ.pdf"


def document(size: int, seed: int = 1) -> bytes:
    """Deterministic bytes that do not repeat within a chunk (so a misplaced chunk shows)."""
    block = bytes((i * 131 + seed * 17 + i // 256) % 256 for i in range(65_521))
    return (block * (size // len(block) + 1))[:size]


def make_client(
    broker: RunningBroker,
    agency_id: str,
    state_dir: Path,
    *,
    broker_url: str | None = None,
    roots: Sequence[RootCertificate] | None = None,
) -> AgencyClient:
    """An agency's client for `broker`, with its own state directory; by default it pins both
    national roots and talks to `broker`."""
    return AgencyClient(
        broker.pki[agency_id],
        roots=roots if roots is not None else [broker.pki.root_cert("TH"), broker.pki.root_cert("LA")],
        broker_url=broker_url or broker.url,
        state_dir=state_dir,
        clock=broker.clock.now,
        retry=QUICK_RETRY,
    )
