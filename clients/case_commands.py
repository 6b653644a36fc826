"""What `casebridge cases list|show|export` and `casebridge send --referral FILE` do once parsed
(`clients.cases_cli` parses; it imports this module only when one of these commands runs).

See `clients.cases_cli` for the commands. The `cases` commands open the agency's local case
store with the keystore's key and never use the network; `send --referral` checks every field
of the message file before the keystore is opened.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clients.agency import AgencyClient
from clients.case_store import DATABASE_NAME, CaseStore
from clients.case_threads import CaseThread, Direction, StoredMessage, attention_order, region_today
from clients.case_view import (
    case_refs,
    consent_summary,
    item_text,
    local_time,
    message_fields,
    override_lines,
    person_text,
    type_label,
)
from clients.cli_output import send_json, send_lines
from clients.outbox import LocalState
from clients.referral_drafts import build_message, read_draft
from clients.referrals import SentMessage
from keys.keystore import KeystoreKind, load_agency, peek_kind
from keys.passphrase import DEFAULT_ENV, read_passphrase
from protocol.errors import Conflict, InvalidField, NotFound
from protocol.primitives import system_random
from protocol.receipt import Receipt

# --- send --referral ------------------------------------------------------------------------------


def check_send(args: argparse.Namespace) -> None:
    """Before anything is opened: one recipient, and every field of the message file."""
    if len(args.to) != 1:
        raise InvalidField("--to", "exactly one agency for a referral message")
    args.referral_draft = read_draft(args.referral, rng=system_random)


async def send_referral(args: argparse.Namespace, client: AgencyClient) -> SentMessage:
    message = build_message(args.referral_draft, client.messages, to=args.to[0])
    sent = await client.send_message(
        message, attachments=[Path(a) for a in args.attach], ttl_seconds=args.ttl_days * 86400
    )
    h = message.header
    if args.json:
        document = send_json(sent.result) | {
            "message_id": h.message_id.hex(),
            "message_type": message.TYPE.value,
            "case_link_id": h.case_link_id.hex(),
            "phase": sent.state.phase.value,
        }
        print(json.dumps(document, ensure_ascii=False, sort_keys=True))
    else:
        print(f"{type_label(message.TYPE)} {h.message_id.hex()} in case {case_refs(sent.state)}")
        print(f"  the case is now {sent.state.phase.value}")
        for line in send_lines(sent.result):
            print(line)
    return sent


# --- cases ----------------------------------------------------------------------------------------


Action = Callable[[argparse.Namespace, CaseStore, int], int]


def _run(action: Action) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        if not args.keystore:
            raise InvalidField("--keystore", "a value (or set CASEBRIDGE_KEYSTORE)")
        if not args.state:
            raise InvalidField("--state", "a value (or set CASEBRIDGE_STATE)")
        if not (Path(args.state) / DATABASE_NAME).is_file():
            raise NotFound(f"no case store in {args.state}; check --state (the client's state directory).")
        peek_kind(args.keystore, KeystoreKind.AGENCY)
        passphrase = read_passphrase(
            args.passphrase_env, DEFAULT_ENV, what=f"the agency keystore {args.keystore}"
        )
        identity = load_agency(args.keystore, passphrase).identity
        with CaseStore(args.state, identity) as store:
            return action(args, store, int(time.time()))

    return run


def _items_json(thread: CaseThread, today: str) -> list[dict[str, Any]]:
    state = thread.state
    return [
        {
            "kind": i.kind.value,
            "waiting_on": [state.agency_of(s) for s in i.waiting_on],
            "about": i.about.hex(),
            "due_on": i.due_on,
            "overdue": i.overdue,
        }
        for i in thread.open_items(today)
    ]


def _case_json(thread: CaseThread, today: str) -> dict[str, Any]:
    s = thread.state
    name = thread.person_name
    return {
        "case_link_id": s.case_link_id.hex(),
        "destination_agency_id": s.destination_agency_id,
        "destination_case_ref": s.destination_case_ref,
        "origin_agency_id": s.origin_agency_id,
        "origin_case_ref": s.origin_case_ref,
        "person": None if name is None else {"native": name.full_native, "romanised": name.full_romanised},
        "phase": s.phase.value,
        "open_items": _items_json(thread, today),
        "overdue": any(i.overdue for i in thread.open_items(today)),
        "last_activity": thread.last_activity,
        "refused": len(thread.refused),
    }


def _marker(thread: CaseThread, today: str) -> str:
    items = thread.open_items(today)
    if any(i.overdue for i in items):
        return "[overdue]"
    if any(thread.state.local_side in i.waiting_on for i in items):
        return "[waiting on us]"
    return "[waiting on them]" if items else "[nothing open]"


def _list(args: argparse.Namespace, store: CaseStore, now: int) -> int:
    today = region_today(now)
    threads = attention_order(store.threads(now=now), today)
    unlinked = store.unlinked_refusals()
    if args.json:
        for thread in threads:
            print(json.dumps(_case_json(thread, today), ensure_ascii=False, sort_keys=True))
        return 0
    if not threads:
        print("No cases yet.")
    for thread in threads:
        s = thread.state
        print(
            f"{_marker(thread, today)} {case_refs(s)}  {person_text(thread)}  {s.phase.value}  "
            f"link {s.case_link_id.hex()}"
        )
        for item in thread.open_items(today):
            print(f"    {item_text(item, thread)}")
        if thread.refused:
            print(f"    {len(thread.refused)} message(s) refused on receipt: see casebridge cases show")
    for r in unlinked:
        print(f"Refused on receipt, no case here: envelope {r.envelope_id} from {r.sender_id}: {r.detail}")
    return 0


def _delivery(local: LocalState, stored: StoredMessage) -> str:
    if stored.envelope_id is None:
        return "not sent: sealing was interrupted"
    if stored.direction is Direction.RECEIVED:
        return f"received in envelope {stored.envelope_id}"
    entry = local.outbox_entry(stored.envelope_id)
    shown = f"envelope {stored.envelope_id}" + (f" {entry.state}" if entry is not None else "")
    latest: dict[str, str] = {}
    for r in local.receipts_for(stored.envelope_id):
        reason = Receipt.parse(r.raw).reason
        latest[r.recipient_id] = r.kind + (f" ({reason})" if reason is not None else "")
    return shown + "".join(f"; {who}: {kind}" for who, kind in latest.items())


def _show(args: argparse.Namespace, store: CaseStore, now: int) -> int:
    thread = store.find(args.case, now=now)
    today = region_today(now)
    s = thread.state
    local = LocalState(args.state)
    try:
        deliveries = [_delivery(local, m) for m in thread.messages]
    finally:
        local.close()
    if args.json:
        document = _case_json(thread, today) | {
            "messages": [
                {
                    "seq": n,
                    "direction": m.direction.value,
                    "type": m.message.TYPE.value,
                    "message_id": m.message.message_id.hex(),
                    "created_at": m.message.header.created_at,
                    "envelope_id": m.envelope_id,
                    "delivery": delivery,
                    "fields": {f.path: f.value for f in message_fields(m.message)},
                }
                for n, (m, delivery) in enumerate(zip(thread.messages, deliveries, strict=True), 1)
            ],
            "refused": [
                {
                    "envelope_id": r.envelope_id,
                    "sender_id": r.sender_id,
                    "reason": r.reason,
                    "detail": r.detail,
                }
                for r in thread.refused
            ],
        }
        print(json.dumps(document, ensure_ascii=False, sort_keys=True))
        return 0
    print(f"Case {case_refs(s)}")
    print(f"  link id {s.case_link_id.hex()}; person {person_text(thread)}")
    print(f"  phase {s.phase.value}; this agency {s.local_agency_id} is the {s.local_side.value} side")
    for line in consent_summary(s.consent) + override_lines(s.overrides, s):
        print(f"  {line}")
    print("What waits for whom:")
    for item in thread.open_items(today) or ():
        print(f"  {item_text(item, thread)}")
    if not thread.open_items(today):
        print("  nothing")
    print("Messages:")
    for n, (m, delivery) in enumerate(zip(thread.messages, deliveries, strict=True), 1):
        h = m.message.header
        print(
            f"  {n}. {local_time(h.created_at)}  {m.direction.value} {type_label(m.message.TYPE)}  "
            f"{h.sender_agency_id} -> {h.receiver_agency_id}  message {h.message_id.hex()}"
        )
        print(f"     {delivery}")
        for f in message_fields(m.message):
            mark = f" [{f.mark}]" if f.mark else ""
            value = f.value.replace("\n", "\n" + " " * 8)
            print(f"     {f.label}{mark}: {value}")
    for r in thread.refused:
        kind = type_label(r.message.TYPE) if r.message is not None else "undecodable message"
        when = local_time(r.refused_at)
        print(f"Refused on receipt {when}: {kind} from {r.sender_id}, {r.reason}: {r.detail}")
    return 0


def _message_id(thread: CaseThread, text: str) -> bytes:
    wanted = text.strip().lower()
    matches = [m.message.message_id for m in thread.messages if m.message.message_id.hex().startswith(wanted)]
    if len(wanted) < 8 or not matches:
        raise NotFound(f"no message {text!r} in this case (give 8 or more hex digits of its id).")
    if len(matches) > 1:
        raise Conflict(f"{text!r} names several messages; give more of the id.")
    return matches[0]


def _export(args: argparse.Namespace, store: CaseStore, now: int) -> int:
    # The PDF library and its fonts load only for an export: `send --referral` never needs them.
    from clients.pdf_export import render_pdf, write_pdf

    thread = store.find(args.case, now=now)
    message_id = None if args.message is None else _message_id(thread, args.message)
    data = render_pdf(thread, exported_by=store.agency_id, generated_at=now, message_id=message_id)
    path = write_pdf(data, args.pdf, overwrite=args.overwrite)
    if args.json:
        print(json.dumps({"pdf": str(path), "bytes": len(data)}, sort_keys=True))
    else:
        print(f"Wrote {path} ({len(data)} bytes).")
    return 0


list_cases = _run(_list)
show_case = _run(_show)
export_case = _run(_export)
