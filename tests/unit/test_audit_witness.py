"""The witness's decisions (tlog-witness v1), without HTTP: it cosigns only a growing log.

Every refusal of the specification is checked with its status; the attacks are a forked
checkpoint (the log key re-signing a rewritten tree), a rollback, a stale `old` size, and a
checkpoint signed by another key.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.audit.witness import AddCheckpoint, LogRecord, Witness, WitnessAnswer
from clients.audit.witness_state import WitnessState, create_witness, load_witness, save_witness
from keys.keystore import KDF_PROFILES, KeystoreKind, peek_kind
from protocol.errors import MalformedInput, WrongKeystoreKind, WrongPassphrase
from protocol.merkle import consistency_proof
from protocol.note import Checkpoint, NoteSignature, NoteSigner, add_signatures, open_checkpoint
from tests.audit_log_fixtures import LOG, ORIGIN, T0, WITNESS_LA, LogBuilder, operator_action, seed_key

NOW = T0 + 5000
WITNESS = Witness(WITNESS_LA, {ORIGIN: LOG.vkey})


def body(log: LogBuilder, old: int, size: int | None = None, *, note: bytes | None = None) -> bytes:
    size = len(log.leaves) if size is None else size
    proof = consistency_proof(old, size, log.tree) if 0 < old < size else []
    return AddCheckpoint(old, tuple(proof), note if note is not None else log.checkpoint(size)).encode()


def grown(count: int) -> LogBuilder:
    log = LogBuilder()
    log.fill(count)
    return log


def submit(request: bytes, records: dict[str, LogRecord]) -> WitnessAnswer:
    """Submit as the server does: a cosigned record replaces the one held."""
    answer = WITNESS.add_checkpoint(request, records, NOW)
    if answer.record is not None and answer.origin is not None:
        records[answer.origin] = answer.record
    return answer


def test_the_first_checkpoint_is_cosigned_and_the_cosignature_verifies() -> None:
    log = grown(10)
    records: dict[str, LogRecord] = {}
    answer = submit(body(log, 0), records)
    assert answer.status == 200
    line = NoteSignature.parse(answer.body.decode())
    cosigned = add_signatures(log.checkpoint(), [line])
    opened = open_checkpoint(cosigned, origin=ORIGIN, log_key=LOG.vkey, cosigners=[WITNESS_LA.vkey])
    assert [c.key.name for c in opened.cosignatures] == ["witness.la-auditor.example"]
    assert opened.cosignatures[0].timestamp == NOW
    assert records[ORIGIN].size == 10


def test_a_growing_log_is_cosigned_with_a_valid_consistency_proof() -> None:
    log = grown(10)
    records: dict[str, LogRecord] = {}
    assert submit(body(log, 0), records).status == 200
    log.fill(7)
    assert submit(body(log, 10), records).status == 200
    assert records[ORIGIN].size == 17
    assert submit(body(log, 17), records).status == 200


def test_a_forked_checkpoint_is_refused_with_422_and_kept_as_evidence() -> None:
    log = grown(10)
    records: dict[str, LogRecord] = {}
    submit(body(log, 0), records)
    fork = LogBuilder()
    for n, leaf in enumerate(log.leaves):
        fork.add_raw(operator_action(T0 + n, 666) if n == 4 else leaf)
    fork.fill(5)
    answer = submit(body(fork, 10), records)
    assert answer.status == 422
    assert answer.evidence
    assert records[ORIGIN].size == 10


def test_another_root_at_the_recorded_size_is_a_fork_refused_with_409() -> None:
    log = grown(10)
    records: dict[str, LogRecord] = {}
    submit(body(log, 0), records)
    fork = grown(9)
    fork.add_raw(operator_action(T0, 12345))
    answer = submit(body(fork, 10), records)
    assert (answer.status, answer.evidence) == (409, True)
    assert records[ORIGIN].root_hash == log.tree.root()


def test_a_stale_old_size_gets_409_with_the_recorded_size() -> None:
    log = grown(10)
    records: dict[str, LogRecord] = {}
    submit(body(log, 0), records)
    log.fill(5)
    answer = submit(body(log, 0), records)
    assert (answer.status, answer.content_type, answer.body) == (409, "text/x.tlog.size", b"10\n")


def test_a_smaller_checkpoint_is_never_cosigned() -> None:
    log = grown(10)
    records: dict[str, LogRecord] = {}
    submit(body(log, 0), records)
    assert submit(body(log, 10, 6), records).status == 400
    assert submit(body(log, 6, 6), records).status == 409
    assert records[ORIGIN].size == 10


def test_refusals_for_unknown_logs_bad_signatures_and_malformed_bodies() -> None:
    log = grown(3)
    stranger = NoteSigner("casebridge.elsewhere/audit", seed_key("elsewhere"))
    other_origin = body(log, 0, note=log.checkpoint(signer=stranger))
    assert submit(other_origin, {}).status == 404
    impostor = NoteSigner(ORIGIN, seed_key("impostor"))
    assert submit(body(log, 0, note=log.checkpoint(signer=impostor)), {}).status == 403
    assert submit(b"old 0\n" + log.checkpoint(), {}).status == 400
    assert submit(b"old 00\n\n" + log.checkpoint(), {}).status == 400
    assert submit(AddCheckpoint(0, (bytes(32),), log.checkpoint()).encode(), {}).status == 422


def test_a_request_with_more_than_63_proof_lines_is_malformed() -> None:
    with pytest.raises(MalformedInput):
        AddCheckpoint.parse(AddCheckpoint(1, (bytes(32),) * 64, b"x\n").encode())


def test_the_witness_state_survives_a_restart_and_refuses_to_go_backwards(tmp_path: Path) -> None:
    state = WitnessState(tmp_path / "witness")
    record = LogRecord(10, bytes(32), Checkpoint(ORIGIN, 10, bytes(32)).text(), NOW)
    state.save({ORIGIN: record})
    assert WitnessState(tmp_path / "witness").records == {ORIGIN: record}
    with pytest.raises(ValueError, match="below"):
        state.save({ORIGIN: LogRecord(9, bytes(32), "", NOW)})
    (tmp_path / "witness" / "witness-state.json").write_text("{}")
    with pytest.raises(MalformedInput):
        WitnessState(tmp_path / "witness")


def test_the_witness_keystore_is_its_own_kind_and_needs_its_passphrase(tmp_path: Path) -> None:
    identity = create_witness("witness.ລາວ.example")
    path = tmp_path / "witness.cbks"
    save_witness(path, identity, "ລະຫັດ-witness-ພາສາລາວ", KDF_PROFILES["interactive"])
    assert peek_kind(path).kind == "witness"
    assert load_witness(path, "ລະຫັດ-witness-ພາສາລາວ").signer().vkey == identity.signer().vkey
    with pytest.raises(WrongPassphrase):
        load_witness(path, "wrong passphrase")
    with pytest.raises(WrongKeystoreKind):
        peek_kind(path, KeystoreKind.AGENCY)
