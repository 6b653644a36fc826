"""Round trips over generated inputs: the codec and whole envelopes.

The codec must give back exactly what it was given (types included: `True` is not `1`) and
encode one value one way only. Envelopes with random bodies, attachments, recipients and piece
sizes must open for every recipient byte for byte.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from tests.protocol_fixtures import (
    LA_ATD,
    LA_MLSW,
    SENDER,
    TH_ATPD,
    Attachment,
    open_envelope,
    seal,
)

# Generated trees may nest deeper than headers ever do; the limit itself is tested elsewhere.
LOOSE = codec.Limits(max_depth=64)

THAI = st.characters(min_codepoint=0x0E01, max_codepoint=0x0E5B)
LAO = st.characters(min_codepoint=0x0E81, max_codepoint=0x0EDF)
texts = st.one_of(
    st.text(), st.text(THAI), st.text(LAO), st.text(st.one_of(THAI, LAO, st.characters(codec="utf-8")))
).map(codec.nfc)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=codec.INT_MIN, max_value=codec.INT_MAX),
    st.binary(max_size=64),
    texts,
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(texts, children, max_size=5),
    ),
    max_leaves=25,
)


def same(a: Any, b: Any) -> bool:
    """Equality that also compares types, so `True` and `1`, or `b"a"` and `"a"`, differ."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return set(a) == set(b) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def reversed_maps(value: Any) -> Any:
    """The same value with every map built in the opposite insertion order."""
    if isinstance(value, dict):
        return {k: reversed_maps(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reversed_maps(v) for v in value]
    return value


@settings(max_examples=300, deadline=None)
@given(values)
def test_codec_round_trip_gives_back_the_same_value(value: Any) -> None:
    encoded = codec.encode(value, limits=LOOSE)
    decoded = codec.decode(encoded, limits=LOOSE)
    assert same(decoded, value)
    assert codec.encode(decoded, limits=LOOSE) == encoded


@settings(max_examples=200, deadline=None)
@given(values)
def test_codec_encoding_is_deterministic(value: Any) -> None:
    encoded = codec.encode(value, limits=LOOSE)
    assert codec.encode(value, limits=LOOSE) == encoded
    assert codec.encode(reversed_maps(value), limits=LOOSE) == encoded


@settings(max_examples=200, deadline=None)
@given(st.text(st.one_of(THAI, LAO, st.characters(codec="utf-8"))))
def test_text_is_accepted_exactly_when_it_is_nfc(text: str) -> None:
    if unicodedata.is_normalized("NFC", text):
        assert codec.decode(codec.encode(text)) == text
    else:
        assert codec.nfc(text) != text


filenames = st.text(st.one_of(THAI, LAO, st.sampled_from("abc-_ 0123")), min_size=1, max_size=40).map(
    lambda name: codec.nfc(name) + ".pdf"
)
attachments = st.lists(
    st.builds(
        Attachment,
        filename=filenames,
        media_type=st.sampled_from(["application/pdf", "image/jpeg", "text/plain; charset=utf-8"]),
        data=st.binary(max_size=4000),
    ),
    max_size=3,
)
piece_sizes = st.lists(st.integers(0, 3000), min_size=1, max_size=4).map(lambda s: [s[0] + 1, *s[1:]])
recipient_sets = st.lists(
    st.sampled_from([LA_MLSW, LA_ATD, TH_ATPD]), min_size=1, max_size=3, unique_by=lambda a: a.id
)


@settings(max_examples=25, deadline=None)
@given(
    body=st.one_of(st.binary(max_size=3000), texts.map(str.encode)),
    files=attachments,
    recipients=recipient_sets,
    seal_pieces=piece_sizes,
    open_pieces=piece_sizes,
)
def test_envelope_opens_for_every_recipient_byte_for_byte(
    body: bytes,
    files: list[Attachment],
    recipients: list[Any],
    seal_pieces: list[int],
    open_pieces: list[int],
) -> None:
    env = seal(SENDER, recipients, body=body, attachments=files, piece_sizes=seal_pieces)
    assert env.parsed.recipient_ids == tuple(sorted(r.id for r in recipients))
    for recipient in recipients:
        opened = open_envelope(env, recipient, piece_sizes=open_pieces)
        assert opened.manifest.body == body
        assert opened.attachments == tuple(f.data for f in files)
        assert [a.filename for a in opened.manifest.attachments] == [f.filename for f in files]
        assert [a.media_type for a in opened.manifest.attachments] == [f.media_type for f in files]
