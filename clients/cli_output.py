"""What the client commands print: lines for people, dictionaries for `--json`.

Times are shown in UTC as `YYYY-MM-DD HH:MM:SS UTC` (the two countries' offices are an hour
apart; the log and the receipts speak UTC). Names and text are printed as received (NFC).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from clients.download import InboxItem
from clients.inbox import Delivery
from clients.outbox import OutboxEntry, OutboxState
from clients.receipts import EnvelopeStatus, ReceiptRecord
from clients.sending import SendResult
from protocol.receipt import Receipt, ReceiptKind

PREVIEW_CHARS = 60
KIND_ORDER = list(ReceiptKind)  # accepted, delivered, verified, rejected, expired: a receipt's life


def when(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _receipt_text(receipt: Receipt) -> str:
    reason = f" ({receipt.reason})" if receipt.reason is not None else ""
    return f"{receipt.kind}{reason} {when(receipt.time)}"


def send_lines(result: SendResult) -> list[str]:
    to = ", ".join(result.recipients)
    if result.state is OutboxState.ACCEPTED:
        lines = [f"Sent {result.envelope_id} to {to}: accepted by the broker."]
        lines += [
            f"  {r.subject.recipient_id}: {_receipt_text(r)}, log index {r.log_index}"
            for r in result.accepted
        ]
        return lines
    if result.state is OutboxState.PENDING:
        return [
            f"Sealed {result.envelope_id} for {to}; the broker is unreachable, so it waits in the outbox "
            "and goes with the next casebridge command that reaches the broker."
        ]
    detail = (result.problem or {}).get("detail", "refused")
    return [f"Not sent {result.envelope_id} to {to}: {detail}"]


def send_json(result: SendResult) -> dict[str, Any]:
    return {
        "envelope_id": result.envelope_id,
        "envelope_hash": result.envelope_hash,
        "recipients": list(result.recipients),
        "state": str(result.state),
        "accepted": [
            {"recipient_id": r.subject.recipient_id, "time": r.time, "log_index": r.log_index}
            for r in result.accepted
        ],
        "problem": result.problem,
    }


def _preview(delivery: Delivery) -> str:
    kind = delivery.content_type.split(";")[0].strip()
    if not (kind.startswith("text/") or kind == "application/json"):
        return f"[{kind}, {len(delivery.body)} bytes]"
    text = " ".join(delivery.text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def delivery_line(delivery: Delivery, folder: Path | None) -> str:
    files = len(delivery.attachments)
    saved = f" -> {folder}" if folder is not None else ""
    return (
        f"{delivery.envelope_id}  from {delivery.sender_id} ({delivery.sender_name})  "
        f"{when(delivery.accepted_at)}  {files} attachment{'s' if files != 1 else ''}  "
        f"{_preview(delivery)}{saved}"
    )


def delivery_json(delivery: Delivery, folder: Path | None) -> dict[str, Any]:
    return {
        "envelope_id": delivery.envelope_id,
        "envelope_hash": delivery.envelope_hash,
        "sender_id": delivery.sender_id,
        "sender_name": delivery.sender_name,
        "content_type": delivery.content_type,
        "accepted_at": delivery.accepted_at,
        "attachments": [
            {"filename": a.filename, "media_type": a.media_type, "length": a.length}
            for a in delivery.attachments
        ],
        "folder": None if folder is None else str(folder),
    }


def inbox_item_line(item: InboxItem) -> str:
    parts = len(item.part_lengths)
    return (
        f"{item.envelope_id}  from {item.sender_id}  {when(item.accepted_at)}  "
        f"{parts - 1} attachment{'s' if parts != 2 else ''}  [{item.state}, at the broker]"
    )


def outbox_lines(entries: Sequence[OutboxEntry], receipts: Callable[[str], list[ReceiptRecord]]) -> list[str]:
    lines = []
    for entry in entries:
        lines.append(f"{entry.envelope_id}  {entry.state}  sealed {when(entry.created_at)}")
        if entry.state is OutboxState.FAILED and entry.problem:
            lines.append(f"  refused: {entry.problem.get('detail')}")
        elif entry.state is OutboxState.PENDING and entry.last_error:
            lines.append(f"  {entry.attempts} attempt(s); last: {entry.last_error}")
        records = receipts(entry.envelope_id)
        for recipient in entry.recipients:
            mine = [r for r in records if r.recipient_id == recipient]
            latest = max(mine, key=lambda r: (r.time, KIND_ORDER.index(r.kind))).receipt if mine else None
            lines.append(f"  {recipient}: {'-' if latest is None else _receipt_text(latest)}")
    return lines


def status_lines(status: EnvelopeStatus, entry: OutboxEntry | None) -> list[str]:
    lines = [
        f"Envelope {status.envelope_id} from {status.sender_id}",
        f"  accepted {when(status.accepted_at)}, expires {when(status.expires_at)}"
        + ("; ciphertext purged" if status.purged else ""),
    ]
    if status.outbox_state is OutboxState.PENDING:
        lines[1] = "  still in this agency's outbox: not yet accepted by the broker"
    elif status.local_only:
        lines[1] = f"  accepted {when(status.accepted_at)}; the broker is unreachable: receipts stored here"
    elif status.outbox_state is OutboxState.FAILED and entry is not None and entry.problem:
        lines[1] = f"  refused by the broker: {entry.problem.get('detail')}"
    for recipient, info in status.recipients.items():
        lines.append(f"  {recipient}: {info.state}")
        lines += [f"    {_receipt_text(r)}  signed by {r.signer_id}" for r in info.receipts]
        if info.refused_receipts:
            lines.append(f"    {info.refused_receipts} receipt(s) did not verify and are not shown")
    return lines


def status_json(status: EnvelopeStatus) -> dict[str, Any]:
    return {
        "envelope_id": status.envelope_id,
        "envelope_hash": status.envelope_hash,
        "sender_id": status.sender_id,
        "accepted_at": status.accepted_at,
        "expires_at": status.expires_at,
        "purged": status.purged,
        "outbox_state": None if status.outbox_state is None else str(status.outbox_state),
        "local_only": status.local_only,
        "recipients": {
            recipient: {
                "state": info.state,
                "receipts": [
                    {"kind": str(r.kind), "time": r.time, "signer_id": r.signer_id,
                     "reason": None if r.reason is None else str(r.reason)}
                    for r in info.receipts
                ],
                "refused_receipts": info.refused_receipts,
            }
            for recipient, info in status.recipients.items()
        },
    }  # fmt: skip
