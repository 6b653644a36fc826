"""Random walks through the case workflow, and random bytes through the referral decoder.

Hypothesis draws walks of (message type, sending side, option, reply target) and plays each
on the sender's copy of the case and then on the recipient's. A refused message must be refused
by both sides with one of the workflow's errors and change nothing; an accepted one must be
accepted by both, leave both copies equal, and keep every invariant. Decoding random bytes,
mutated encodings and mutated fields of valid messages raises only CaseBridge errors.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.errors import CaseBridgeError, ConsentError, InvalidField, InvalidTransition
from protocol.referral import (
    AssessmentOutcome,
    CasePhase,
    HandoverOutcome,
    MessageType,
    RepatriationAction,
    Scope,
    Side,
    VerificationOutcome,
    allowed_messages,
    apply,
    decode_message,
    encode_message,
    invariant_violations,
)
from protocol.referral.wire import message_from_wire, message_to_wire
from tests.referral_fixtures import NOW, PATHS, Sides, drive, exchange, make

MT = MessageType
REFUSALS = (InvalidTransition, InvalidField, ConsentError)
OPTIONS: dict[MessageType, list[Any]] = {
    MT.REPATRIATION_CONFIRMATION: list(RepatriationAction),
    MT.HANDOVER_RECORD: list(HandoverOutcome),
    MT.FAMILY_ASSESSMENT_RESULT: list(AssessmentOutcome),
    MT.VERIFICATION_RESULT: list(VerificationOutcome),
    MT.CONSENT_CHANGE: [tuple(Scope), tuple(s for s in Scope if s is not Scope.NOTIFY_ORIGIN), ()],
}
STARTS = PATHS | {
    "family_requested": [*PATHS["accepted"], (MT.FAMILY_ASSESSMENT_REQUEST, Side.DESTINATION)],
    "verification_requested": [*PATHS["accepted"], (MT.VERIFICATION_REQUEST, Side.ORIGIN)],
}
"""Where the walks start: every phase, and cases with requests open."""
seen_phases: set[CasePhase] = set()
accepted_types: set[MessageType] = set()


def draw_step(data: st.DataObject, sides: Sides) -> tuple[MessageType, Side, int, int | None]:
    """Mostly a type the phase allows from the side drawn (so walks go deep), sometimes any type;
    mostly the natural reply, sometimes any known message."""
    side = data.draw(st.sampled_from(list(Side)))
    allowed = sorted(allowed_messages(sides.of(side), side))
    wild = not allowed or data.draw(st.integers(0, 4)) == 0
    mtype = data.draw(st.sampled_from(list(MessageType) if wild else allowed))
    option_no = data.draw(st.integers(0, 6))
    reply_no = data.draw(st.one_of(st.none(), st.none(), st.none(), st.integers(0, 40)))
    return mtype, side, option_no, reply_no


def play(sides: Sides, step: tuple[MessageType, Side, int, int | None]) -> Sides:
    mtype, side, option_no, reply_no = step
    options = OPTIONS.get(mtype, [None])
    state = sides.of(side)
    reply = None if reply_no is None else state.messages[reply_no % len(state.messages)].message_id
    message = make(state, mtype, side, option=options[option_no % len(options)], reply=reply)
    outcomes: list[Exception | None] = []
    for copy, as_sender in ((state, True), (sides.of(side.other), False)):
        before = replace(copy)
        try:
            apply(copy, message, as_sender=as_sender, now=NOW)
            outcomes.append(None)
        except REFUSALS as e:
            assert copy == before
            outcomes.append(e)
    if outcomes[0] is not None or outcomes[1] is not None:
        assert type(outcomes[0]) is type(outcomes[1]), outcomes
        return sides
    after = exchange(sides, message)
    for copy in (after.destination, after.origin):
        assert copy.phase in CasePhase
        assert not invariant_violations(copy), invariant_violations(copy)
    seen_phases.add(after.destination.phase)
    accepted_types.add(mtype)
    return after


# Derandomized, so the coverage guard below sees the same walks on every run.
@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.sampled_from(sorted(STARTS)), length=st.integers(0, 40), data=st.data())
def random_walks(start: str, length: int, data: st.DataObject) -> None:
    sides, _ = drive(STARTS[start])
    for _ in range(length):
        sides = play(sides, draw_step(data, sides))


def test_random_walks_keep_both_sides_equal_and_every_invariant_in_every_phase() -> None:
    random_walks()
    # The walks must exercise the whole workflow, not a corner of it.
    assert seen_phases == set(CasePhase)
    assert accepted_types == set(MessageType) - {MT.REFERRAL}


VALID = [
    encode_message(m)
    for path in ("closed", "repatriation_postponed", "info_requested")
    for m in drive(PATHS[path], lang="th")[1]
]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=512))
def test_random_bytes_raise_only_casebridge_errors(data: bytes) -> None:
    with contextlib.suppress(CaseBridgeError):
        decode_message(data)


@settings(max_examples=500, deadline=None)
@given(
    which=st.integers(0, len(VALID) - 1),
    cut=st.integers(0, 4096),
    flips=st.lists(st.tuples(st.integers(0, 4096), st.integers(1, 255)), max_size=4),
    insert=st.binary(max_size=8),
)
def test_mutated_encodings_raise_only_casebridge_errors(
    which: int, cut: int, flips: list[Any], insert: bytes
) -> None:
    data = bytearray(VALID[which])
    for at, xor in flips:
        data[at % len(data)] ^= xor
    at = cut % (len(data) + 1)
    mutated = bytes(data[:at] + insert + data[at:]) if insert else bytes(data[: max(at, 1)])
    try:
        decoded = decode_message(mutated)
    except CaseBridgeError:
        return
    assert encode_message(decoded) == mutated


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, (*prefix, i))
    return out


@settings(max_examples=500, deadline=None)
@given(which=st.integers(0, len(VALID) - 1), pick=st.integers(0, 10_000), value=wire_values)
def test_any_field_replaced_by_any_value_raises_only_casebridge_errors(
    which: int, pick: int, value: Any
) -> None:
    wire = message_to_wire(decode_message(VALID[which]))
    paths = _paths(wire)
    *parents, last = paths[pick % len(paths)]
    node: Any = wire
    for p in parents:
        node = node[p]
    node[last] = value
    with contextlib.suppress(CaseBridgeError):
        message_from_wire(wire)
    with contextlib.suppress(CaseBridgeError):
        decode_message(codec.encode(wire))
