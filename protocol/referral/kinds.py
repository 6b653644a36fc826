"""Field kinds: how one field's values are checked, normalised, encoded and described.

Invariants:
- Every text is NFC (normalised on construction, required on decoding) and holds no control
  characters (LF only in multi-line fields), no bidirectional embedding/override/isolate
  controls, no private-use, surrogate or non-characters, no BOM. Zero-width space, (non-)joiners,
  word joiner and soft hyphen are kept: Thai and Lao typists use them. Code points this Python's
  Unicode tables do not know yet are accepted, so newer Thai or Lao characters are never refused.
  Lengths count code points after NFC. A required text has at least one visible character.
- Dates are Gregorian `YYYY-MM-DD` with ASCII digits, years 1900 to 2199 (a Buddhist Era year,
  543 ahead, is refused with that hint); times are `HH:MM`, 24-hour, local to the place named.
- Every error is `InvalidField` naming the field path and what is expected.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from typing import Any, Protocol

from protocol import codec
from protocol.certificate import AGENCY_ID
from protocol.errors import InvalidField

# --- text policy ---------------------------------------------------------------------------------

_KEPT_FORMAT = frozenset("\u00ad\u200b\u200c\u200d\u2060")
_REFUSED_EXTRA = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")
_INVISIBLE = _KEPT_FORMAT | frozenset(" \n")


def _refused(c: str, multiline: bool) -> str | None:
    o = ord(c)
    if c == "\n":
        return None if multiline else "no line breaks"
    if o < 0x20 or 0x7F <= o <= 0x9F:
        return "no control characters (use LF for line breaks)" if multiline else "no control characters"
    if c in _REFUSED_EXTRA or c in "\u2028\u2029":
        return "no bidirectional controls, byte-order marks or Unicode line separators"
    if 0xD800 <= o <= 0xDFFF or 0xE000 <= o <= 0xF8FF or o >= 0xF0000:
        return "no surrogates or private-use characters (convert legacy-font text to Unicode first)"
    if 0xFDD0 <= o <= 0xFDEF or (o & 0xFFFE) == 0xFFFE:
        return "no Unicode non-characters"
    return None


def check_text(value: str, path: str, *, max_len: int, multiline: bool = False) -> None:
    """Refuse text outside the policy above. `value` must already be NFC."""
    if len(value) > max_len:
        raise InvalidField(path, f"at most {max_len} characters, got {len(value)}")
    if not value or all(c in _INVISIBLE or c.isspace() for c in value):
        raise InvalidField(path, "some visible text")
    for c in value:
        why = _refused(c, multiline)
        if why is not None:
            raise InvalidField(path, f"{why} (found U+{ord(c):04X})")


# --- kinds ----------------------------------------------------------------------------------------


class Kind(Protocol):
    """How one field's values are checked, normalised, encoded and described."""

    def normalise(self, value: Any, path: str) -> Any:
        """Check a value given to a constructor; return it in canonical form."""

    def from_wire(self, raw: Any, path: str) -> Any:
        """Check a decoded wire value (which must already be canonical); return the value."""

    def to_wire(self, value: Any) -> Any: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Text:
    max_len: int
    multiline: bool = False
    pattern: re.Pattern[str] | None = None
    hint: str = ""

    def _check(self, value: str, path: str) -> str:
        check_text(value, path, max_len=self.max_len, multiline=self.multiline)
        if self.pattern is not None and not self.pattern.fullmatch(value):
            raise InvalidField(path, self.hint or f"text matching {self.pattern.pattern}")
        return value

    def normalise(self, value: Any, path: str) -> str:
        if not isinstance(value, str):
            raise InvalidField(path, "text")
        text = codec.nfc(value)
        if self.multiline:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return self._check(text, path)

    def from_wire(self, raw: Any, path: str) -> str:
        if not isinstance(raw, str):
            raise InvalidField(path, "text")
        if not unicodedata.is_normalized("NFC", raw):
            raise InvalidField(path, "text in Unicode NFC")
        return self._check(raw, path)

    def to_wire(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        if self.hint:
            return f"text: {self.hint}"
        return f"text ≤ {self.max_len}" + (", multi-line" if self.multiline else "")


_DATE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")


def check_date(value: Any, path: str) -> str:
    """A Gregorian date `YYYY-MM-DD`, years 1900 to 2199. Returns it unchanged."""
    m = _DATE.fullmatch(value) if isinstance(value, str) else None
    if m is None:
        raise InvalidField(path, "a date written YYYY-MM-DD")
    year = int(m.group(1))
    if 2443 <= year <= 2742:
        raise InvalidField(path, f"a Gregorian year ({year} looks like Buddhist Era: subtract 543)")
    if not 1900 <= year <= 2199:
        raise InvalidField(path, "a year from 1900 to 2199")
    try:
        date(year, int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise InvalidField(path, "a date that exists in the calendar") from None
    return str(value)


@dataclass(frozen=True, slots=True)
class Date:
    def normalise(self, value: Any, path: str) -> str:
        return check_date(value, path)

    from_wire = normalise

    def to_wire(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "date YYYY-MM-DD"


@dataclass(frozen=True, slots=True)
class Time:
    def normalise(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or not _TIME.fullmatch(value):
            raise InvalidField(path, "a local time written HH:MM (24-hour)")
        return value

    from_wire = normalise

    def to_wire(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "time HH:MM"


@dataclass(frozen=True, slots=True)
class Int:
    lo: int = 0
    hi: int = 2**63 - 1

    def normalise(self, value: Any, path: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidField(path, "an integer")
        if not self.lo <= value <= self.hi:
            raise InvalidField(path, f"an integer from {self.lo} to {self.hi}")
        return value

    from_wire = normalise

    def to_wire(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return f"int {self.lo}..{self.hi}"


@dataclass(frozen=True, slots=True)
class Bool:
    def normalise(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise InvalidField(path, "true or false")
        return value

    from_wire = normalise

    def to_wire(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "bool"


@dataclass(frozen=True, slots=True)
class Id:
    """16 random bytes (message, case link and consent ids)."""

    def normalise(self, value: Any, path: str) -> bytes:
        if not isinstance(value, bytes) or len(value) != 16:
            raise InvalidField(path, "16 bytes")
        return value

    from_wire = normalise

    def to_wire(self, value: Any) -> Any:
        return value

    def describe(self) -> str:
        return "bin 16"


@dataclass(frozen=True, slots=True)
class Code:
    """One of a `StrEnum`'s values; the wire holds the value text."""

    enum: type[StrEnum]

    def _choices(self) -> str:
        return "one of " + ", ".join(m.value for m in self.enum)

    def normalise(self, value: Any, path: str) -> StrEnum:
        if isinstance(value, self.enum):
            return value
        return self.from_wire(value, path)

    def from_wire(self, raw: Any, path: str) -> StrEnum:
        if isinstance(raw, str):
            for member in self.enum:
                if member.value == raw:
                    return member
        raise InvalidField(path, self._choices())

    def to_wire(self, value: Any) -> Any:
        return str(value.value)

    def describe(self) -> str:
        return f"code `{self.enum.__name__}`"


@dataclass(frozen=True, slots=True)
class ListOf:
    """A list (a tuple in Python). `as_set` lists are sorted and unique: construction sorts and
    de-duplicates, decoding refuses any other order."""

    item: Kind
    max_items: int
    min_items: int = 0
    as_set: bool = False

    def _bounds(self, n: int, path: str) -> None:
        if not self.min_items <= n <= self.max_items:
            raise InvalidField(path, f"{self.min_items} to {self.max_items} items, got {n}")

    def normalise(self, value: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise InvalidField(path, "a list")
        items = [self.item.normalise(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if self.as_set:
            items = sorted(set(items), key=self.item.to_wire)
        self._bounds(len(items), path)
        return tuple(items)

    def from_wire(self, raw: Any, path: str) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise InvalidField(path, "a list")
        self._bounds(len(raw), path)
        items = tuple(self.item.from_wire(v, f"{path}[{i}]") for i, v in enumerate(raw))
        if self.as_set and any(a >= b for a, b in itertools.pairwise(raw)):
            raise InvalidField(path, "items sorted and without duplicates")
        return items

    def to_wire(self, value: Any) -> Any:
        return [self.item.to_wire(v) for v in value]

    def describe(self) -> str:
        return f"list ≤ {self.max_items} of {self.item.describe()}" + (" (sorted set)" if self.as_set else "")


COUNTRY = Text(2, pattern=re.compile(r"[A-Z]{2}"), hint="ISO 3166-1 alpha-2 country code")
LANGUAGE = Text(35, pattern=re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}"), hint="BCP 47 language tag")
AGENCY = Text(64, pattern=AGENCY_ID, hint="agency id, e.g. TH-DSDW")
OFFICER = Text(64, pattern=re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}"), hint="pseudonymous officer id")
CASE_REF = Text(64)
TIMESTAMP = Int(0, 2**40)
NAME = Text(100)
NOTE = Text(2000, multiline=True)
