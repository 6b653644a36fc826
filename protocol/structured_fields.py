"""A minimal, strict RFC 8941 Structured Field Values parser and serialiser. Sans-I/O.

Just what HTTP Message Signatures (RFC 9421) and Content-Digest (RFC 9530) need: Dictionaries
whose members are Items or Inner Lists, with Parameters, over the bare item types Integer,
String, Token, Byte Sequence and Boolean.

Invariants:
- Parsing follows RFC 8941 Section 4.2 and refuses, with `MalformedInput` naming the field, the
  problem and its offset: anything RFC 8941 refuses; Decimals (no CaseBridge field uses them);
  duplicate Dictionary or Parameter keys (RFC 8941 lets the last one win; in a signature header
  that ambiguity is refused); Byte Sequences that are not canonical padded base64 (RFC 8941
  asks parsers to tolerate missing padding; every RFC 9421 and 9530 implementation emits it).
- Input is bounded before parsing: at most `MAX_FIELD_CHARS` characters, `MAX_MEMBERS` members
  or inner-list items, `MAX_PARAMS` parameters per item.
- Serialisation is canonical (RFC 8941 Section 4.1): parsing a serialised value and serialising
  it again gives the same text. It refuses values outside the model with `MalformedInput`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

from protocol.errors import MalformedInput

MAX_FIELD_CHARS = 8192
MAX_MEMBERS = 64
MAX_PARAMS = 32
MAX_INTEGER = 999_999_999_999_999

_KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789:/abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_PLAIN_STRING = re.compile(r'"([ !#-\[\]-~]*)"')
_COMMON_PARAM = re.compile(
    r";[ ]*(?P<key>[a-z*][a-z0-9_\-.*]*+)"
    r"(?:=(?:\"(?P<string>[ !#-\[\]-~]*)\"|(?P<integer>-?[0-9]{1,15})(?![0-9.])"
    r"|(?P<token>[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*))|(?!=))"
)
_PLAIN_INNER_LIST = re.compile(r'\((?:"[ !#-\[\]-~]*"(?: "[ !#-\[\]-~]*")*)?\)')
_INTEGER = re.compile(r"-?[0-9]{1,15}(?![0-9.])")
_PRINTABLE = re.compile(r"[ -~]*")


@dataclass(frozen=True, slots=True)
class Token:
    """An RFC 8941 Token (serialised without quotes), kept apart from a String."""

    value: str


BareItem = bool | int | str | bytes | Token
Params = tuple[tuple[str, BareItem], ...]


@dataclass(frozen=True, slots=True)
class Item:
    value: BareItem
    params: Params = ()


@dataclass(frozen=True, slots=True)
class InnerList:
    items: tuple[Item, ...]
    params: Params = ()


Member = Item | InnerList


class _Parser:
    """One pass over one field value, left to right, as RFC 8941 Section 4.2 describes."""

    __slots__ = ("field", "pos", "text")

    def __init__(self, text: str, field: str) -> None:
        self.text = text
        self.field = field
        self.pos = 0

    def fail(self, problem: str) -> NoReturn:
        raise MalformedInput(reason=f"{self.field}: {problem} at offset {self.pos}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip(self, characters: tuple[str, ...]) -> None:
        while not self.at_end() and self.text[self.pos] in characters:
            self.pos += 1

    def dictionary(self) -> dict[str, Member]:
        members: dict[str, Member] = {}
        self.skip((" ",))
        while not self.at_end():
            key = self.key()
            if self.peek() == "=":
                self.pos += 1
                member: Member = self.inner_list() if self.peek() == "(" else self.item()
            else:
                member = Item(True, self.params())
            if key in members:
                self.fail(f"duplicate key {key!r}")
            if len(members) >= MAX_MEMBERS:
                self.fail(f"more than {MAX_MEMBERS} members")
            members[key] = member
            self.skip((" ", "\t"))
            if self.at_end():
                break
            if self.peek() != ",":
                self.fail("expected ',' between members")
            self.pos += 1
            self.skip((" ", "\t"))
            if self.at_end():
                self.fail("trailing ','")
        return members

    def inner_list(self) -> InnerList:
        self.pos += 1
        items: list[Item] = []
        while True:
            self.skip((" ",))
            if self.peek() == ")":
                self.pos += 1
                return InnerList(tuple(items), self.params())
            if len(items) >= MAX_MEMBERS:
                self.fail(f"more than {MAX_MEMBERS} items in an inner list")
            items.append(self.item())
            if self.peek() not in (" ", ")"):
                self.fail("expected ' ' or ')' after an inner-list item")

    def item(self) -> Item:
        value = self.bare_item()
        return Item(value, self.params())

    def params(self) -> Params:
        return self.params_from([])

    def params_from(self, params: list[tuple[str, BareItem]]) -> Params:
        """Parameters from here on, after those already read into `params`."""
        while self.peek() == ";":
            self.pos += 1
            self.skip((" ",))
            key = self.key()
            value: BareItem = True
            if self.peek() == "=":
                self.pos += 1
                value = self.bare_item()
            self.add_param(params, key, value)
        return tuple(params)

    def add_param(self, params: list[tuple[str, BareItem]], key: str, value: BareItem) -> None:
        if any(key == seen for seen, _ in params):
            self.fail(f"duplicate parameter {key!r}")
        if len(params) >= MAX_PARAMS:
            self.fail(f"more than {MAX_PARAMS} parameters")
        params.append((key, value))

    def key(self) -> str:
        match = _KEY.match(self.text, self.pos)
        if match is None:
            self.fail("expected a key (lowercase letter or '*')")
        self.pos = match.end()
        return match.group()

    def bare_item(self) -> BareItem:
        first = self.peek()
        if first == "-" or first.isdigit():
            return self.integer()
        if first == '"':
            return self.string()
        if first == ":":
            return self.byte_sequence()
        if first == "?":
            return self.boolean()
        if first == "*" or (first.isascii() and first.isalpha()):
            return self.token()
        self.fail("expected an item" if first else "unexpected end of the field")

    def integer(self) -> int:
        start = self.pos
        if self.peek() == "-":
            self.pos += 1
        digits_start = self.pos
        while self.peek().isdigit():
            self.pos += 1
        if self.pos == digits_start:
            self.fail("expected a digit")
        if self.peek() == ".":
            self.fail("decimals are not supported")
        if self.pos - digits_start > 15:
            self.fail("integer longer than 15 digits")
        return int(self.text[start : self.pos])

    def string(self) -> str:
        self.pos += 1
        chars: list[str] = []
        while not self.at_end():
            char = self.text[self.pos]
            self.pos += 1
            if char == "\\":
                escaped = self.peek()
                if escaped not in ('"', "\\"):
                    self.fail("bad escape in a string")
                chars.append(escaped)
                self.pos += 1
            elif char == '"':
                return "".join(chars)
            elif not " " <= char <= "~":
                self.fail("control or non-ASCII character in a string")
            else:
                chars.append(char)
        self.fail("unterminated string")

    def token(self) -> Token:
        start = self.pos
        self.pos += 1
        while self.peek() != "" and self.peek() in _TOKEN_CHARS:
            self.pos += 1
        return Token(self.text[start : self.pos])

    def byte_sequence(self) -> bytes:
        end = self.text.find(":", self.pos + 1)
        if end < 0:
            self.fail("unterminated byte sequence")
        content = self.text[self.pos + 1 : end]
        if not _BASE64.fullmatch(content) or len(content) % 4:
            self.fail("byte sequence is not padded base64")
        try:
            decoded = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError):
            self.fail("byte sequence is not base64")
        if base64.b64encode(decoded).decode("ascii") != content:
            self.fail("byte sequence is not canonical base64")
        self.pos = end + 1
        return decoded

    def boolean(self) -> bool:
        value = self.text[self.pos + 1 : self.pos + 2]
        if value not in ("0", "1"):
            self.fail("boolean is neither ?0 nor ?1")
        self.pos += 2
        return value == "1"


class _FastParser(_Parser):
    """`_Parser` with the common shapes read by one regular expression each (about 55 µs of
    character-by-character work per signed request otherwise): a String without escapes, a
    Token, an Integer, a Parameter with one of those (or no) values, an Inner List of Strings
    without escapes or parameters.
    Anything the expression does not match is read by `_Parser`'s own code from the same offset,
    so every value and every refusal, with its offset, is the same (a test holds the two
    together)."""

    __slots__ = ()

    def skip(self, characters: tuple[str, ...]) -> None:
        text, pos, end = self.text, self.pos, len(self.text)
        while pos < end and text[pos] in characters:
            pos += 1
        self.pos = pos

    def params(self) -> Params:
        params: list[tuple[str, BareItem]] = []
        text = self.text
        while self.pos < len(text) and text[self.pos] == ";":
            match = _COMMON_PARAM.match(text, self.pos)
            if match is None:
                return super().params_from(params)
            self.pos = match.end()
            key = match.group("key")
            value: BareItem = True
            if (found := match.group("string")) is not None:
                value = found
            elif (found := match.group("integer")) is not None:
                value = int(found)
            elif (found := match.group("token")) is not None:
                value = Token(found)
            self.add_param(params, key, value)
        return tuple(params)

    def inner_list(self) -> InnerList:
        match = _PLAIN_INNER_LIST.match(self.text, self.pos)
        if match is None:
            return super().inner_list()
        values = _PLAIN_STRING.findall(match.group())
        if len(values) > MAX_MEMBERS:
            return super().inner_list()
        self.pos = match.end()
        return InnerList(tuple(Item(value) for value in values), self.params())

    def string(self) -> str:
        match = _PLAIN_STRING.match(self.text, self.pos)
        if match is None:
            return super().string()
        self.pos = match.end()
        return match.group(1)

    def token(self) -> Token:
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            return super().token()
        self.pos = match.end()
        return Token(match.group())

    def integer(self) -> int:
        match = _INTEGER.match(self.text, self.pos)
        if match is None:
            return super().integer()
        self.pos = match.end()
        return int(match.group())


def parse_dictionary(text: str, *, field: str) -> dict[str, Member]:
    """Parse a Dictionary field value (RFC 8941 Section 4.2.2), members in their order.

    `field` names the header in error reasons. Raises `MalformedInput`.
    """
    if not isinstance(text, str):
        raise MalformedInput(reason=f"{field}: not text")
    if len(text) > MAX_FIELD_CHARS:
        raise MalformedInput(reason=f"{field}: longer than {MAX_FIELD_CHARS} characters")
    if not text.isascii():
        raise MalformedInput(reason=f"{field}: non-ASCII characters")
    return _FastParser(text, field).dictionary()


def _fail(problem: str) -> NoReturn:
    raise MalformedInput(reason=f"cannot serialise: {problem}")


def serialize_bare_item(value: BareItem) -> str:
    # Exact `str` and `int` first (the commonest); every other value, `bool` included, goes
    # through the checks in their order.
    kind = type(value)
    if kind is str:
        return _serialize_text(value)  # type: ignore[arg-type]
    if kind is int:
        return _serialize_integer(value)  # type: ignore[arg-type]
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return _serialize_integer(value)
    if isinstance(value, str):
        return _serialize_text(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, Token):
        if not _TOKEN.fullmatch(value.value):
            _fail(f"{value.value!r} is not a token")
        return value.value
    _fail(f"type {type(value).__name__} is not a bare item")


def _serialize_integer(value: int) -> str:
    if not -MAX_INTEGER <= value <= MAX_INTEGER:
        _fail("integer out of range")
    return str(value)


def _serialize_text(value: str) -> str:
    if not _PRINTABLE.fullmatch(value):
        _fail("string with control or non-ASCII characters")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(key: str) -> str:
    if not _KEY.fullmatch(key):
        _fail(f"{key!r} is not a key")
    return key


def serialize_params(params: Params) -> str:
    return "".join(
        f";{_key(key)}" if value is True else f";{_key(key)}={serialize_bare_item(value)}"
        for key, value in params
    )


def serialize_item(item: Item) -> str:
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    return "(" + " ".join(serialize_item(item) for item in inner.items) + ")" + serialize_params(inner.params)


def serialize_dictionary(members: Mapping[str, Member]) -> str:
    """Serialise a Dictionary (RFC 8941 Section 4.1.2); a `True` Item shows as its bare key."""
    parts: list[str] = []
    for key, member in members.items():
        if isinstance(member, InnerList):
            parts.append(f"{_key(key)}={serialize_inner_list(member)}")
        elif member.value is True:
            parts.append(_key(key) + serialize_params(member.params))
        else:
            parts.append(f"{_key(key)}={serialize_item(member)}")
    return ", ".join(parts)
