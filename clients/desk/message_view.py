"""A message's fields as the desk shows them: every field carried, in schema order, with its
label as path parts (each translated in the template), its value(s), whether the values are
codes (translated too) and its data class mark (PD / S)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol.referral import DataClass, Message, schema_of
from protocol.referral.fields import Nested, Record
from protocol.referral.kinds import ListOf


@dataclass(frozen=True, slots=True)
class ShownField:
    path: str
    names: tuple[str, ...]
    values: tuple[str, ...]
    codes: bool
    mark: str
    numbers: tuple[str, ...] = ()
    """Beside each name, the row number when it names an item of a list of records ("2"), else ""."""


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, StrEnum):
        return str(value.value)
    return str(value)


def _walk(
    record: Record, path: str, names: tuple[str, ...], numbers: tuple[str, ...], inherited: DataClass
) -> list[ShownField]:
    out: list[ShownField] = []
    for spec in schema_of(type(record)):
        value = getattr(record, spec.name)
        if value is None or value == () or spec.name == "header":
            continue
        here = f"{path}.{spec.name}" if path else spec.name
        data = spec.data if spec.data is not DataClass.NONE else inherited
        kind = spec.kind.item if isinstance(spec.kind, ListOf) else spec.kind
        items = value if isinstance(spec.kind, ListOf) else (value,)
        if isinstance(kind, Nested):
            listed = isinstance(spec.kind, ListOf)
            for i, item in enumerate(items):
                number = str(i + 1) if listed else ""
                where = f"{here}[{i}]" if listed else here
                out += _walk(item, where, (*names, spec.name), (*numbers, number), data)
            continue
        mark = {DataClass.PERSONAL: "PD", DataClass.SENSITIVE: "S"}.get(data, "")
        is_code = all(isinstance(v, StrEnum | bool) for v in items)
        values = tuple(_text(v) for v in items)
        out.append(ShownField(here, (*names, spec.name), values, is_code, mark, (*numbers, "")))
    return out


def shown_fields(message: Message) -> list[ShownField]:
    return _walk(message, "", (), (), DataClass.NONE)
