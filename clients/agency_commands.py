"""What `casebridge send`, `inbox list|watch`, `status` and `publish-keys` do once parsed
(`clients.cli` parses; it imports this module only when one of these commands runs).

Each command opens one `AgencyClient` (keystore, pinned roots, broker, state directory), first
refreshes the verified directory (which also publishes this agency's current encryption keys
when the directory lacks them) and sends whatever waits in the outbox (an unreachable broker is
no error for either: the cached directory serves, the outbox waits), does its work, and closes
it. Passphrases come from `CASEBRIDGE_PASSPHRASE`, the variable named by `--passphrase-env`, or
a prompt; never from an argument. Failures are `CaseBridgeError`s, which the dispatcher prints
as one plain line.

Exit status: 0 done; 1 refused (printed by the dispatcher); 75 (EX_TEMPFAIL) when `send` left
the referral sealed in the outbox because the broker was unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from clients import case_commands
from clients.agency import AgencyClient
from clients.cli_output import (
    delivery_json,
    delivery_line,
    inbox_item_line,
    outbox_lines,
    send_json,
    send_lines,
    status_json,
    status_lines,
    when,
)
from clients.download import check_envelope_id
from clients.inbox import Delivery, save_attachments
from clients.outbox import OutboxState
from clients.transport import RetryPolicy, transient
from keys.files import FileAccessError, read_bytes
from keys.keystore import KeystoreKind, peek_kind
from keys.passphrase import DEFAULT_ENV, read_passphrase
from protocol import codec
from protocol.envelope import MAX_MANIFEST_BYTES
from protocol.errors import CaseBridgeError, InvalidField

EX_TEMPFAIL = 75
CLI_RETRY = RetryPolicy(max_attempts=3, base_delay_seconds=0.5, max_delay_seconds=5.0)
DAY_SECONDS = 86400


# --- plumbing -----------------------------------------------------------------------------------

Command = Callable[[argparse.Namespace, AgencyClient], Coroutine[Any, Any, int]]


def _required(value: str | None, option: str, env: str) -> str:
    if not value:
        raise InvalidField(option, f"a value (or set {env})")
    return value


def _open(args: argparse.Namespace) -> AgencyClient:
    keystore = _required(args.keystore, "--keystore", "CASEBRIDGE_KEYSTORE")
    broker = _required(args.broker, "--broker", "CASEBRIDGE_BROKER")
    state = _required(args.state, "--state", "CASEBRIDGE_STATE")
    trust = args.trust or [p for p in os.environ.get("CASEBRIDGE_TRUST", "").split(os.pathsep) if p]
    if not trust:
        raise InvalidField(
            "--trust", "at least one pinned national root certificate (or set CASEBRIDGE_TRUST)"
        )
    peek_kind(keystore, KeystoreKind.AGENCY)
    passphrase = read_passphrase(args.passphrase_env, DEFAULT_ENV, what=f"the agency keystore {keystore}")
    return AgencyClient.open(
        keystore, passphrase, trust=trust, broker_url=broker, state_dir=state, retry=CLI_RETRY
    )


def _run(
    command: Command, before: Callable[[argparse.Namespace], None] | None = None
) -> Callable[[argparse.Namespace], int]:
    """The command's entry point: check the arguments (`before`, nothing opened yet), then open
    the client, refresh, flush the outbox and run."""

    def run(args: argparse.Namespace) -> int:
        if before is not None:
            before(args)

        async def main() -> int:
            async with _open(args) as client:
                await _refresh_quietly(client)
                await _flush_outbox(args, client)
                return await command(args, client)

        try:
            return asyncio.run(main())
        except OSError as e:
            where = f"{e.filename}: " if e.filename else ""
            raise FileAccessError(
                f"{where}{e.strerror or type(e).__name__}. Check the path and its permissions."
            ) from e

    return run


def _emit(args: argparse.Namespace, lines: list[str], document: Any) -> None:
    if args.json:
        print(json.dumps(document, ensure_ascii=False, sort_keys=True))
    else:
        for line in lines:
            print(line)


async def _flush_outbox(args: argparse.Namespace, client: AgencyClient) -> None:
    """Send what an earlier command left in the outbox; an unreachable broker is no error here."""
    if not client.outbox(OutboxState.PENDING):
        return
    try:
        results = await client.resume_outbox()
    except CaseBridgeError as e:
        if not transient(e):
            raise
        return
    for result in results:
        if result.state is not OutboxState.PENDING:
            _emit(args, [f"from the outbox: {line}" for line in send_lines(result)], send_json(result))


async def _refresh_quietly(client: AgencyClient) -> None:
    try:
        await client.refresh_directory()
    except CaseBridgeError as e:
        if not transient(e):
            raise


# --- commands -----------------------------------------------------------------------------------


def _check_send(args: argparse.Namespace) -> None:
    if not 1 <= args.ttl_days <= 90:
        raise InvalidField("--ttl-days", "1 to 90 days")
    if args.referral is not None:
        case_commands.check_send(args)
    elif args.body_file is not None:
        args.body_bytes = read_bytes(args.body_file, max_bytes=MAX_MANIFEST_BYTES)
    else:
        args.body_bytes = codec.nfc(args.body).encode("utf-8")
    for attachment in args.attach:
        if not Path(attachment).is_file():
            raise InvalidField("--attach", f"readable files; {attachment} is not one")


async def _send(args: argparse.Namespace, client: AgencyClient) -> int:
    if args.referral is not None:
        sent = await case_commands.send_referral(args, client)
        return EX_TEMPFAIL if sent.result.state is OutboxState.PENDING else 0
    result = await client.send(
        args.to,
        args.body_bytes,
        content_type=args.content_type,
        attachments=[Path(a) for a in args.attach],
        ttl_seconds=args.ttl_days * DAY_SECONDS,
    )
    _emit(args, send_lines(result), send_json(result))
    return EX_TEMPFAIL if result.state is OutboxState.PENDING else 0


async def _inbox_list(args: argparse.Namespace, client: AgencyClient) -> int:
    waiting = client.pending_deliveries()
    items = await client.list_inbox()
    listed = {d.envelope_id for d in waiting}
    rows = [delivery_json(d, None) | {"where": "received, not yet saved"} for d in waiting]
    rows += [
        {"where": "at the broker", "envelope_id": i.envelope_id, "sender_id": i.sender_id, "state": i.state,
         "accepted_at": i.accepted_at, "parts": len(i.part_lengths)}
        for i in items
        if i.envelope_id not in listed
    ]  # fmt: skip
    if args.json:
        for row in rows:
            print(json.dumps(row, ensure_ascii=False, sort_keys=True))
    elif not rows:
        print("The inbox is empty.")
    else:
        for d in waiting:
            print(f"{delivery_line(d, None)}  [received, not yet saved]")
        for i in items:
            if i.envelope_id not in listed:
                print(inbox_item_line(i))
    return 0


def _save(delivery: Delivery, save_dir: Path) -> tuple[Path, list[Path]]:
    """Save a delivery's body and attachments in `save_dir/<envelope id>/`, completely or not at
    all: a partial folder from an interrupted run is replaced, a complete one is kept."""
    final = save_dir / delivery.envelope_id
    if final.is_dir():
        return final, sorted(p for p in final.iterdir() if p.is_file())
    staging = save_dir / f".{delivery.envelope_id}.partial"
    if staging.exists():
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    staging.mkdir(parents=True, mode=0o700)
    kind = delivery.content_type.split(";")[0].strip()
    suffix = ".json" if kind == "application/json" else ".txt" if kind.startswith("text/") else ".bin"
    fd = os.open(staging / f"body{suffix}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(delivery.body)
        f.flush()
        os.fsync(f.fileno())
    saved = save_attachments(delivery, staging)
    os.rename(staging, final)
    return final, [final / p.name for p in saved]


async def _inbox_watch(args: argparse.Namespace, client: AgencyClient) -> int:
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    async for delivery in client.deliveries(follow=not args.once, wait_seconds=args.wait):
        folder, files = await asyncio.to_thread(_save, delivery, save_dir)
        await client.ack(delivery)
        count += 1
        _emit(
            args,
            [delivery_line(delivery, folder)],
            delivery_json(delivery, folder) | {"files": [str(f) for f in files]},
        )
    if args.once and not args.json and count == 0:
        print("Nothing new.")
    return 0


async def _status(args: argparse.Namespace, client: AgencyClient) -> int:
    if args.envelope_id is None:
        try:
            await client.sync_receipts()
        except CaseBridgeError as e:
            if not transient(e):
                raise
            print("The broker is unreachable: receipts as last synchronised.")
        entries = client.outbox()
        if args.json:
            for entry in entries:
                print(json.dumps({"envelope_id": entry.envelope_id, "state": str(entry.state),
                                  "recipients": list(entry.recipients),
                                  "receipts": [[r.recipient_id, str(r.kind), r.time]
                                               for r in client.receipts(entry.envelope_id)]},
                                 ensure_ascii=False, sort_keys=True))  # fmt: skip
        else:
            print("\n".join(outbox_lines(entries, client.receipts)) or "The outbox is empty.")
        return 0
    envelope_id = check_envelope_id(args.envelope_id.strip().lower())
    status = await client.status(envelope_id)
    _emit(args, status_lines(status, client.state.outbox_entry(envelope_id)), status_json(status))
    return 0


async def _publish_keys(args: argparse.Namespace, client: AgencyClient) -> int:
    """Post every encryption key valid now (after `casebridge keys rotate`, say): the broker
    keeps each statement once, so posting one it holds changes nothing."""
    published = await client.publish_encryption_keys()
    shown = client.current_encryption_keys()
    lines = [f"{client.agency_id}: published {published} encryption key(s) valid now"]
    lines += [f"  key {k.key_id.hex()} valid until {when(k.not_after)}" for k in shown]
    document = {
        "agency_id": client.agency_id,
        "published": [{"key_id": k.key_id.hex(), "not_after": k.not_after} for k in shown],
    }
    _emit(args, lines, document)
    return 0


send = _run(_send, before=_check_send)
inbox_list = _run(_inbox_list)
inbox_watch = _run(_inbox_watch)
status = _run(_status)
publish_keys = _run(_publish_keys)
