"""docs/referrals.md stays true: its field tables, workflow tables and annotated byte dump are
generated from the schema registry and the workflow rules, and its worked example is data that
is decoded, validated and played through both sides of a case here.

Regenerate the generated sections after a schema change with
`.venv/bin/python -m tests.unit.test_referral_docs`.
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from protocol.errors import CaseBridgeError
from protocol.referral import (
    MESSAGE_CLASSES,
    PHASES_ALLOWING,
    SENDERS,
    Address,
    CasePhase,
    Consent,
    FamilyMember,
    Header,
    MessageType,
    OverrideRecord,
    Person,
    PersonName,
    Proceedings,
    Side,
    TravelDocument,
    WithheldItem,
    encode_message,
    schema_of,
)
from protocol.referral.fields import DataClass, Record
from protocol.referral.rules import NEEDS_ACKNOWLEDGEMENT, REPLY_REQUIRED, SIDE_EXCEPTIONS
from protocol.referral.wire import decode_message, message_from_wire
from tests.referral_fixtures import Sides, exchange

DOC = Path(__file__).resolve().parents[2] / "docs" / "referrals.md"
SECTION = re.compile(r"<!-- generated: (\S+) -->\n(.*?)<!-- /generated -->", re.S)
EXAMPLE = re.compile(r"<!-- example(?: refused: (\S+) (\S+))? -->\n```json\n(.*?)\n```", re.S)
LATER = 1_767_200_000  # 2025-12-31: after the whole worked example
RECORDS: tuple[type[Record], ...] = (
    Header,
    PersonName,
    Person,
    TravelDocument,
    Address,
    FamilyMember,
    Proceedings,
    Consent,
    WithheldItem,
    OverrideRecord,
)
DATA = {DataClass.NONE: "", DataClass.PERSONAL: "PD", DataClass.SENSITIVE: "**S**"}


def field_table(cls: type[Record]) -> str:
    rows = ["| field | kind | required | data | scope |", "|---|---|---|---|---|"]
    for spec in schema_of(cls):
        scope = spec.scope.value if spec.scope is not None else ""
        required = "yes" if spec.required else ""
        rows.append(f"| `{spec.name}` | {spec.kind.describe()} | {required} | {DATA[spec.data]} | {scope} |")
    return "\n".join(rows) + "\n"


def phase_table() -> str:
    rows = ["| phase | messages allowed (D: destination side only, O: origin side only) |", "|---|---|"]
    for phase in CasePhase:
        cells = []
        for t in MessageType:
            if phase not in PHASES_ALLOWING[t]:
                continue
            sides = {s for s in SENDERS[t] if phase not in SIDE_EXCEPTIONS.get((t, s), (frozenset(), ""))[0]}
            mark = "" if len(sides) == 2 else " (D)" if Side.DESTINATION in sides else " (O)"
            cells.append(f"`{t.value}`{mark}")
        rows.append(f"| `{phase.value}` | {', '.join(cells)} |")
    return "\n".join(rows) + "\n"


def message_rules_table() -> str:
    rows = ["| type | sent by | replies to (`in_reply_to`) | acknowledged by a person |", "|---|---|---|---|"]
    for t in MessageType:
        senders = " or ".join(sorted(s.value for s in SENDERS[t]))
        reply = "required" if t in REPLY_REQUIRED else "none" if t is MessageType.REFERRAL else "optional"
        ack = "yes" if t in NEEDS_ACKNOWLEDGEMENT else ""
        rows.append(f"| `{t.value}` | {senders} | {reply} | {ack} |")
    return "\n".join(rows) + "\n"


def _hex_lines(data: bytes, indent: str, what: str) -> list[str]:
    chunks = [data[i : i + 12] for i in range(0, len(data), 12)] or [b""]
    out = [f"{chunks[0].hex(' '):<36}  {indent}{what}"]
    out += [f"{c.hex(' '):<36}  {indent}  ..." for c in chunks[1:]]
    return out


def annotate(data: bytes, i: int = 0, depth: int = 0) -> tuple[list[str], int]:
    """An annotated dump of the canonical msgpack subset referral messages use."""
    b, pad = data[i], "  " * depth
    if b <= 0x7F or b in (0xCC, 0xCD, 0xCE, 0xCF):
        size = 1 if b <= 0x7F else 1 + 2 ** (b - 0xCC)
        value = int.from_bytes(data[i + 1 : i + size], "big") if size > 1 else b
        return _hex_lines(data[i : i + size], pad, f"int {value}"), i + size
    if b in (0xC2, 0xC3):
        return _hex_lines(data[i : i + 1], pad, "true" if b == 0xC3 else "false"), i + 1
    if 0xA0 <= b <= 0xBF or b in (0xD9, 0xDA):
        head = 1 if b <= 0xBF else 2 if b == 0xD9 else 3
        n = b - 0xA0 if b <= 0xBF else int.from_bytes(data[i + 1 : i + head], "big")
        text = data[i + head : i + head + n].decode()
        return _hex_lines(
            data[i : i + head + n], pad, f"text {json.dumps(text, ensure_ascii=False)}"
        ), i + head + n
    if b == 0xC4:
        n = data[i + 1]
        return _hex_lines(data[i : i + 2 + n], pad, f"bin, {n} bytes"), i + 2 + n
    if 0x80 <= b <= 0x9F:
        is_map, n = b <= 0x8F, b & 0x0F
        lines = _hex_lines(data[i : i + 1], pad, f"map, {n} entries" if is_map else f"array, {n} items")
        i += 1
        for _ in range(n * 2 if is_map else n):
            more, i = annotate(data, i, depth + 1)
            lines += more
        return lines, i
    raise AssertionError(f"byte {b:#x} is outside the subset documented")


def example_blocks(text: str) -> list[tuple[str | None, str | None, Any]]:
    def unbin(v: Any) -> Any:
        if isinstance(v, dict):
            return bytes.fromhex(v["$bin"]) if set(v) == {"$bin"} else {k: unbin(x) for k, x in v.items()}
        if isinstance(v, list):
            return [unbin(x) for x in v]
        return v

    return [
        (code or None, field or None, unbin(json.loads(body))) for code, field, body in EXAMPLE.findall(text)
    ]


def _texts(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "".join(_texts(v) for v in value.values())
    if isinstance(value, list):
        return "".join(_texts(v) for v in value)
    return ""


def generated_sections(text: str) -> dict[str, str]:
    sections = {f"fields:{cls.__name__}": field_table(cls) for cls in (*RECORDS, *MESSAGE_CLASSES.values())}
    sections["phases"] = phase_table()
    sections["message-rules"] = message_rules_table()
    acknowledgement = example_blocks(text)[1][2]
    sections["hexdump"] = (
        "```\n" + "\n".join(annotate(encode_message(message_from_wire(acknowledgement)))[0]) + "\n```\n"
    )
    return sections


def test_the_generated_sections_match_the_schema_and_the_rules() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = dict(SECTION.findall(text))
    expected = generated_sections(text)
    assert set(found) == set(expected), "run: .venv/bin/python -m tests.unit.test_referral_docs"
    for name, body in expected.items():
        assert found[name] == body, (
            f"section {name} is stale; run: .venv/bin/python -m tests.unit.test_referral_docs"
        )


def test_the_worked_example_decodes_and_runs_to_closure_on_both_sides() -> None:
    blocks = example_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) > 20
    sides: Sides | None = None
    scripts: set[str] = set()
    for code, field, wire in blocks:
        message = message_from_wire(wire)
        assert decode_message(encode_message(message)) == message
        scripts |= {unicodedata.name(c).split()[0] for c in _texts(wire) if c.isalpha()}
        if code is None:
            sides = exchange(sides, message, now=LATER)
            continue
        with pytest.raises(CaseBridgeError) as e:
            exchange(sides, message, now=LATER)
        assert e.value.code == code
        assert getattr(e.value, "fields", ()) == (field,)
    assert sides is not None
    assert sides.origin.phase is CasePhase.CLOSED
    assert {"THAI", "LAO", "LATIN"} <= scripts


def regenerate() -> None:
    text = DOC.read_text(encoding="utf-8")
    sections = generated_sections(text)
    text = SECTION.sub(
        lambda m: f"<!-- generated: {m.group(1)} -->\n{sections[m.group(1)]}<!-- /generated -->", text
    )
    DOC.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    regenerate()
