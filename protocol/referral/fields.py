"""Data classes, consent scopes and record schemas: the one schema every referral record is built from.

A referral record is a frozen slotted dataclass whose fields are annotated
`Annotated[python_type, Spec(kind, data_class, scope)]`. From those annotations alone come
construction-time validation, the wire encoding, the consent gate and the generated docs, so
the schema exists exactly once.

Invariants:
- Every record validates and normalises itself on construction (`Record.__post_init__`): field
  kinds (see `kinds`) first, then the record's own cross-field rules (`_check`).
- An absent optional value is `None` (an absent list is `()`), and is left out on the wire.
- Every error is `InvalidField` naming the field path (`person.name.family_native`,
  `aliases[2]`) and what is expected; decoding prefixes the path of the enclosing records.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, fields
from enum import StrEnum
from typing import Any, TypeVar

from protocol.errors import InvalidField
from protocol.referral.kinds import Bool, Code, Kind, ListOf


class DataClass(StrEnum):
    """What a field holds, for data protection: nothing personal, personal data (PD), or sensitive
    data (S: PDPA s.26, or "prohibited" under the Lao law: ethnicity, health, sexual life,
    criminal matters)."""

    NONE = "none"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"


PD = DataClass.PERSONAL
S = DataClass.SENSITIVE


class Scope(StrEnum):
    """Consent scopes. The codes are stable: consents and overrides store them."""

    NOTIFY_ORIGIN = "s1_notify_origin"
    VERIFICATION = "s2_verification"
    FAMILY_TRACING = "s3_family_tracing"
    NGO_SERVICES = "s4_ngo_services"
    HEALTH = "s5_health"
    CRIMINAL_PROCEEDINGS = "s6_criminal_proceedings"


@dataclass(frozen=True, slots=True)
class Nested:
    """A nested record (a map on the wire)."""

    record: type[Record]

    def normalise(self, value: Any, path: str) -> Record:
        if not isinstance(value, self.record):
            raise InvalidField(path, f"a {self.record.__name__} record")
        return value

    def from_wire(self, raw: Any, path: str) -> Record:
        return record_from_wire(self.record, raw, path)

    def to_wire(self, value: Any) -> Any:
        return record_to_wire(value)

    def describe(self) -> str:
        return f"record `{self.record.__name__}`"


# --- specs and records ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Spec:
    """What an annotation says about a field. `kind` may be left out for records, codes and bools.
    A nested field without its own scope inherits its parent's."""

    kind: Kind | None = None
    data: DataClass = DataClass.NONE
    scope: Scope | None = None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    kind: Kind
    data: DataClass
    scope: Scope | None
    required: bool


R = TypeVar("R", bound="Record")


class Record:
    """Base of every referral record and message: validates and normalises on construction."""

    __slots__ = ()

    def __post_init__(self) -> None:
        for spec in schema_of(type(self)):
            value = getattr(self, spec.name)
            if value is None or value == ():
                if spec.required:
                    raise InvalidField(spec.name, f"a value ({spec.kind.describe()})")
                if value == () and isinstance(spec.kind, ListOf) and spec.kind.min_items:
                    raise InvalidField(spec.name, f"at least {spec.kind.min_items} items")
                continue
            normal = spec.kind.normalise(value, spec.name)
            if normal is not value:
                object.__setattr__(self, spec.name, normal)
        self._check()

    def _check(self) -> None:
        """Rules that tie several fields together; raise `InvalidField`."""


def _infer(base: Any) -> Kind:
    if isinstance(base, type) and issubclass(base, Record):
        return Nested(base)
    if isinstance(base, type) and issubclass(base, StrEnum):
        return Code(base)
    if base is bool:
        return Bool()
    raise TypeError(f"cannot infer a field kind for {base!r}")


_SCHEMAS: dict[type[Record], tuple[FieldSpec, ...]] = {}
"""A memo of resolved schemas (they are fixed once the classes exist)."""


def schema_of(cls: type[Record]) -> tuple[FieldSpec, ...]:
    """The resolved schema of a record class, in declaration order."""
    known = _SCHEMAS.get(cls)
    if known is None:
        known = _SCHEMAS[cls] = _resolve(cls)
    return known


def _resolve(cls: type[Record]) -> tuple[FieldSpec, ...]:
    hints = typing.get_type_hints(cls, include_extras=True)
    out = []
    for f in fields(typing.cast(Any, cls)):
        hint = hints[f.name]
        marks = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Spec)]
        if len(marks) != 1:
            raise TypeError(f"{cls.__name__}.{f.name} needs exactly one Spec annotation")
        base = typing.get_args(hint)[0]
        if typing.get_origin(base) in (typing.Union, types.UnionType):
            base = next(a for a in typing.get_args(base) if a is not type(None))
        kind = marks[0].kind if marks[0].kind is not None else _infer(base)
        required = f.default is MISSING and f.default_factory is MISSING
        out.append(FieldSpec(f.name, kind, marks[0].data, marks[0].scope, required))
    return tuple(out)


def record_to_wire(record: Record) -> dict[str, Any]:
    """A record as a map; absent values (None, empty lists) are left out."""
    out: dict[str, Any] = {}
    for spec in schema_of(type(record)):
        value = getattr(record, spec.name)
        if value is not None and value != ():
            out[spec.name] = spec.kind.to_wire(value)
    return out


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def record_from_wire(cls: type[R], raw: Any, path: str, *, skip: frozenset[str] = frozenset()) -> R:
    """Build a record from a decoded map, naming the full path of any bad field."""
    if not isinstance(raw, dict):
        raise InvalidField(path or cls.__name__, f"a map ({cls.__name__})")
    specs = {s.name: s for s in schema_of(cls)}
    for key in raw:
        if key not in specs and key not in skip:
            raise InvalidField(_join(path, str(key)), f"no such field in {cls.__name__}")
    values: dict[str, Any] = {}
    for name, spec in specs.items():
        if name not in raw:
            if spec.required:
                raise InvalidField(_join(path, name), f"a value ({spec.kind.describe()})")
            continue
        value = raw[name]
        if value is None or value == []:
            raise InvalidField(_join(path, name), "the field left out rather than nil or an empty list")
        values[name] = spec.kind.from_wire(value, _join(path, name))
    try:
        return cls(**values)
    except InvalidField as e:
        raise InvalidField(_join(path, e.field), e.expected) from None
