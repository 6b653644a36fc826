"""The officer's offline verifier on generated logs: every tampering is detected and named.

Logs are built with the real leaf format and signed with real keys (`tests.audit_log_fixtures`),
written as export directories, then damaged in exactly one way.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import stat
import tracemalloc
from pathlib import Path

import pytest

from casebridge.cli import main
from clients.audit.policy import LogPolicy, ProblemKind
from clients.audit.progress import TextProgress, progress_for
from clients.audit.sources import ExportDirectory
from clients.audit.trusted_state import TrustedState, load_state, save_state
from clients.audit.verifier import Verification, verify_log
from protocol import auditlog
from protocol.errors import InvalidField, MalformedInput, VerificationError
from tests.audit_log_fixtures import (
    LOG,
    ORIGIN,
    T0,
    WITNESS_LA,
    WITNESS_TH,
    LogBuilder,
    NoteSigner,
    Parties,
    operator_action,
    register_parties,
    seed_key,
)

POLICY = LogPolicy(LOG.vkey)
NOW = T0 + 10**6


def verify(
    directory: Path, policy: LogPolicy = POLICY, *, trusted: TrustedState | None = None, resume: bool = False
) -> Verification:
    return asyncio.run(
        verify_log(ExportDirectory(directory), policy, trusted=trusted, now=NOW, resume=resume)
    )


def kinds(result: Verification) -> list[ProblemKind]:
    return [p.kind for p in result.problems]


def built(count: int = 40) -> LogBuilder:
    log = LogBuilder()
    register_parties(log, Parties.create())
    log.fill(count)
    return log


def replaced(leaf: bytes) -> bytes:
    """Another valid leaf at the same time: what a careful forger would put in."""
    return operator_action(auditlog.parse_leaf(leaf).time, 999)


# --- an untouched log -------------------------------------------------------------------------


def test_an_untouched_log_verifies_and_gives_the_state_to_trust(tmp_path: Path) -> None:
    log = built()
    result = verify(log.export(tmp_path / "export"))
    assert result.ok, result.lines()
    assert result.checked == len(log.leaves)
    assert result.new_state is not None
    assert result.new_state.size == len(log.leaves)
    assert result.new_state.root_hash == log.tree.root()
    assert [i for i, _ in result.new_state.trust_leaves] == [0, 1, 2, 3]


def test_an_empty_log_verifies(tmp_path: Path) -> None:
    result = verify(LogBuilder().export(tmp_path / "export"))
    assert result.ok
    assert result.new_state is not None
    assert result.new_state.size == 0


# --- tampering with the leaves ----------------------------------------------------------------


def test_changing_one_leaf_names_that_leaf_and_its_kind(tmp_path: Path) -> None:
    log = built()
    leaves = list(log.leaves)
    leaves[17] = replaced(leaves[17])
    result = verify(log.export(tmp_path / "export", leaves=leaves))
    assert kinds(result) == [ProblemKind.ALTERED]
    assert result.problems[0].index == 17
    assert "leaf 17 (operator_action)" in result.problems[0].message
    assert result.new_state is None


def test_changing_one_leaf_without_logged_hashes_fails_on_the_root(tmp_path: Path) -> None:
    log = built()
    leaves = list(log.leaves)
    leaves[17] = replaced(leaves[17])
    result = verify(log.export(tmp_path / "export", leaves=leaves, hashes=False))
    assert kinds(result) == [ProblemKind.ROOT]


def test_a_leaf_that_no_longer_parses_is_named_with_the_reason(tmp_path: Path) -> None:
    log = built()
    leaves = list(log.leaves)
    leaves[9] = leaves[9].replace(b"operator_action", b"operator_actioN")
    result = verify(log.export(tmp_path / "export", leaves=leaves))
    assert kinds(result) == [ProblemKind.LEAF, ProblemKind.ALTERED]
    assert "leaf 9 (operator_actioN) does not parse" in result.problems[0].message
    assert "unknown" in result.problems[0].message


def test_deleting_one_leaf_names_where_the_log_was_cut(tmp_path: Path) -> None:
    log = built()
    leaves = log.leaves[:20] + log.leaves[21:]
    result = verify(log.export(tmp_path / "export", leaves=leaves))
    assert ProblemKind.MISSING in kinds(result)
    altered = [p for p in result.problems if p.kind is ProblemKind.ALTERED]
    assert altered[0].index == 20


def test_deleting_one_leaf_without_logged_hashes_is_missing(tmp_path: Path) -> None:
    log = built()
    result = verify(log.export(tmp_path / "export", leaves=log.leaves[:-1], hashes=False))
    assert kinds(result) == [ProblemKind.MISSING]
    assert result.problems[0].index == len(log.leaves) - 1


def test_reordering_two_leaves_names_both_and_the_time_inversion(tmp_path: Path) -> None:
    log = built(100)
    leaves = list(log.leaves)
    leaves[10], leaves[90] = leaves[90], leaves[10]  # 80 s apart: beyond the tolerated skew
    result = verify(log.export(tmp_path / "export", leaves=leaves))
    altered = [p.index for p in result.problems if p.kind is ProblemKind.ALTERED]
    assert altered == [10, 90]
    assert ProblemKind.TIME_ORDER in kinds(result)


def test_a_log_truncated_inside_an_entry_is_a_damaged_source(tmp_path: Path) -> None:
    log = built()
    export = log.export(tmp_path / "export", hashes=False)
    entries = export / "entries"
    entries.write_bytes(entries.read_bytes()[:-5])
    result = verify(export)
    assert kinds(result) == [ProblemKind.SOURCE, ProblemKind.MISSING]
    assert "ends inside entry" in result.problems[0].message


def test_a_log_truncated_to_fewer_entries_than_its_checkpoint_is_missing(tmp_path: Path) -> None:
    log = built()
    result = verify(log.export(tmp_path / "export", leaves=log.leaves[:25], hashes=False))
    assert kinds(result) == [ProblemKind.MISSING]
    assert "from 25 on are missing" in result.problems[0].message


def test_entries_beyond_the_checkpoint_are_reported(tmp_path: Path) -> None:
    log = built()
    note = log.checkpoint(size=30)
    result = verify(log.export(tmp_path / "export", note=note, hashes=False))
    assert kinds(result) == [ProblemKind.EXTRA]


def test_a_hashes_file_forged_to_match_a_changed_leaf_still_fails_on_the_root(tmp_path: Path) -> None:
    log = built()
    leaves = list(log.leaves)
    leaves[5] = replaced(leaves[5])
    forged = LogBuilder()
    for leaf in leaves:
        forged.add_raw(leaf)
    export = forged.export(tmp_path / "export", note=log.checkpoint())
    assert kinds(verify(export)) == [ProblemKind.ROOT]


def test_a_damaged_hashes_file_is_reported_and_ignored(tmp_path: Path) -> None:
    log = built()
    export = log.export(tmp_path / "export")
    (export / "hashes").write_bytes((export / "hashes").read_bytes()[:-1])
    assert kinds(verify(export)) == [ProblemKind.SOURCE]


# --- the checkpoint and its cosignatures ------------------------------------------------------


def test_a_checkpoint_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    log = built()
    impostor = NoteSigner(ORIGIN, seed_key("impostor"))
    result = verify(log.export(tmp_path / "export", note=log.checkpoint(signer=impostor)))
    assert kinds(result) == [ProblemKind.CHECKPOINT]
    assert result.checked == 0


def test_a_checkpoint_of_another_origin_is_refused(tmp_path: Path) -> None:
    log = built()
    policy = LogPolicy(LOG.vkey, origin_override="casebridge.la-casebridge/audit")
    result = verify(log.export(tmp_path / "export"), policy)
    assert kinds(result) == [ProblemKind.CHECKPOINT]
    assert "origin" in result.problems[0].message


def test_the_cosignature_policy_counts_only_configured_witnesses(tmp_path: Path) -> None:
    log = built()
    stranger = NoteSigner("witness.stranger.example", seed_key("stranger"), WITNESS_LA.vkey.sig_type)
    note = log.checkpoint(cosigners=(WITNESS_LA, stranger))
    export = log.export(tmp_path / "export", note=note)
    both = (WITNESS_LA.vkey, WITNESS_TH.vkey)
    assert verify(export, LogPolicy(LOG.vkey, both, 1)).ok
    result = verify(export, LogPolicy(LOG.vkey, both, 2))
    assert kinds(result) == [ProblemKind.COSIGNATURES]
    assert "1 witness cosignature(s) verified (witness.la-auditor.example)" in result.problems[0].message


def test_a_namesake_witness_key_does_not_count(tmp_path: Path) -> None:
    log = built()
    namesake = NoteSigner(WITNESS_LA.vkey.name, seed_key("namesake"), WITNESS_LA.vkey.sig_type)
    export = log.export(tmp_path / "export", note=log.checkpoint(cosigners=(namesake,)))
    result = verify(export, LogPolicy(LOG.vkey, (WITNESS_LA.vkey,), 1))
    assert kinds(result) == [ProblemKind.COSIGNATURES]


def test_a_damaged_cosignature_by_a_configured_witness_refuses_the_checkpoint(tmp_path: Path) -> None:
    log = built()
    note = log.checkpoint(cosigners=(WITNESS_LA,))
    text, _, lines = note.decode().partition("\n\n")
    log_line, witness_line = lines.strip("\n").split("\n")
    name, b64 = witness_line.rsplit(" ", 1)
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    damaged = f"{text}\n\n{log_line}\n{name} {base64.b64encode(bytes(raw)).decode()}\n".encode()
    result = verify(log.export(tmp_path / "export", note=damaged), LogPolicy(LOG.vkey, (WITNESS_LA.vkey,), 1))
    assert kinds(result) == [ProblemKind.CHECKPOINT]
    assert "bad signature" in result.problems[0].message


def test_a_policy_that_can_never_be_met_is_refused() -> None:
    with pytest.raises(InvalidField):
        LogPolicy(LOG.vkey, (WITNESS_LA.vkey,), 2)
    with pytest.raises(InvalidField):
        LogPolicy(WITNESS_LA.vkey)
    with pytest.raises(InvalidField):
        LogPolicy.from_text("not a vkey")


# --- the trusted checkpoint: forks, rewrites, rollbacks ----------------------------------------


def trusted_after(log: LogBuilder, directory: Path) -> TrustedState:
    result = verify(log.export(directory))
    assert result.new_state is not None
    return result.new_state


def test_a_grown_log_extends_the_trusted_checkpoint(tmp_path: Path) -> None:
    log = built(20)
    trusted = trusted_after(log, tmp_path / "before")
    log.fill(15)
    export = log.export(tmp_path / "after")
    full = verify(export, trusted=trusted)
    assert full.ok, full.lines()
    assert full.checked == len(log.leaves)
    resumed = verify(export, trusted=trusted, resume=True)
    assert resumed.ok, resumed.lines()
    assert (resumed.start, resumed.checked) == (trusted.size, 15)
    assert resumed.new_state == full.new_state


def test_a_log_rewritten_and_resigned_with_the_same_key_is_a_fork(tmp_path: Path) -> None:
    log = built(20)
    trusted = trusted_after(log, tmp_path / "before")
    rewritten = LogBuilder()
    for n, leaf in enumerate(log.leaves):
        rewritten.add_raw(replaced(leaf) if n == 12 else leaf)
    rewritten.time = log.time
    rewritten.fill(10)
    result = verify(rewritten.export(tmp_path / "after"), trusted=trusted)
    assert kinds(result) == [ProblemKind.FORK]
    assert result.problems[0].index == trusted.size
    assert f"the first {trusted.size} entries hash to" in result.problems[0].message
    resumed = verify(rewritten.export(tmp_path / "after"), trusted=trusted, resume=True)
    assert kinds(resumed) == [ProblemKind.ROOT]


def test_a_different_root_at_the_trusted_size_is_a_fork(tmp_path: Path) -> None:
    log = built(20)
    trusted = trusted_after(log, tmp_path / "before")
    rewritten = LogBuilder()
    for n, leaf in enumerate(log.leaves):
        rewritten.add_raw(replaced(leaf) if n == 3 else leaf)
    result = verify(rewritten.export(tmp_path / "after"), trusted=trusted)
    assert ProblemKind.FORK in kinds(result)
    assert "two signed views of the same log" in result.problems[0].message


def test_a_checkpoint_smaller_than_the_trusted_one_is_a_rollback(tmp_path: Path) -> None:
    log = built(20)
    trusted = trusted_after(log, tmp_path / "before")
    shorter = LogBuilder()
    for leaf in log.leaves[:10]:
        shorter.add_raw(leaf)
    result = verify(shorter.export(tmp_path / "after"), trusted=trusted)
    assert kinds(result) == [ProblemKind.ROLLBACK]


def test_the_trusted_state_is_saved_atomically_with_mode_0600_and_read_back(tmp_path: Path) -> None:
    log = built(10)
    state = trusted_after(log, tmp_path / "export")
    path = save_state(tmp_path / "state", state)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load_state(tmp_path / "state") == state
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    assert load_state(tmp_path / "nowhere") is None


def test_a_damaged_trusted_state_is_refused_never_reset(tmp_path: Path) -> None:
    log = built(10)
    path = save_state(tmp_path / "state", trusted_after(log, tmp_path / "export"))
    text = path.read_text(encoding="utf-8")
    border = TrustedState.parse(text.encode()).border[0]
    path.write_text(text.replace(base64.b64encode(border).decode(), base64.b64encode(bytes(32)).decode()))
    with pytest.raises(MalformedInput) as caught:
        load_state(tmp_path / "state")
    assert "border does not fold" in caught.value.reason


def test_a_trusted_state_not_signed_by_the_log_key_is_refused(tmp_path: Path) -> None:
    log = built(10)
    state = trusted_after(log, tmp_path / "export")
    other = LogPolicy(NoteSigner(ORIGIN, seed_key("rotated")).vkey)
    with pytest.raises(VerificationError):
        verify(log.export(tmp_path / "export"), other, trusted=state)


# --- bounded memory, progress ------------------------------------------------------------------


def test_verifying_streams_the_leaves_in_bounded_memory(tmp_path: Path) -> None:
    log = LogBuilder()
    for n in range(20_000):
        log.add_raw(operator_action(T0 + n, n))
    export = log.export(tmp_path / "export")
    size = (export / "entries").stat().st_size
    tracemalloc.start()
    try:
        result = verify(export)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.ok
    assert peak < size / 2, f"peak {peak} bytes for {size} bytes of entries"


def test_the_progress_bar_is_drawn_at_most_once_per_tenth_of_a_percent_and_ends_its_line() -> None:
    stream = io.StringIO()
    bar = TextProgress("verifying", stream)
    for done in range(1, 5001):
        bar.update(done, 5000)
    bar.close()
    out = stream.getvalue()
    assert bar.draws == 1001
    assert out.endswith("100.0% 5000/5000 leaves\n")
    assert out.count("\r") == 1001


def test_no_progress_bar_when_stderr_is_not_a_terminal_unless_forced() -> None:
    quiet = io.StringIO()
    silent = progress_for("verifying", forced=False, stream=quiet)
    silent.update(1, 2)
    silent.close()
    assert quiet.getvalue() == ""
    assert isinstance(progress_for("verifying", forced=True, stream=quiet), TextProgress)


# --- the command: exit status, one line per problem --------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["audit", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_verify_exits_0_and_remembers_the_checkpoint_only_when_everything_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = built(20)
    export = log.export(tmp_path / "export")
    common = ["--from", str(export), "--log-key", LOG.vkey.encode(), "--state", str(tmp_path / "state")]
    status, out, _ = run_cli(capsys, "verify", *common)
    assert status == 0
    assert "result: VERIFIED" in out
    assert load_state(tmp_path / "state") is not None
    leaves = list(log.leaves)
    leaves[7] = replaced(leaves[7])
    log.export(export, leaves=leaves)
    status, out, _ = run_cli(capsys, "verify", *common)
    assert status == 1
    problems = [line for line in out.splitlines() if line.startswith(("altered:", "fork:"))]
    assert problems == [
        "altered: leaf 7 (operator_action) is not the entry the checkpoint commits to: it was changed, "
        "or entries were removed, inserted or reordered"
    ]
    assert out.splitlines()[-1] == "result: FAILED (1 problem(s))"


def test_verify_prints_json_and_draws_progress_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = built(300).export(tmp_path / "export")
    status, out, err = run_cli(
        capsys, "verify", "--from", str(export), "--log-key", LOG.vkey.encode(), "--json", "--progress"
    )
    assert status == 0
    document = json.loads(out)
    assert document["verified"] is True
    assert document["checkpoint"]["size"] == 304
    assert err.startswith("\rverifying [")
    assert err.endswith("100.0% 304/304 leaves\n")


def test_a_bad_log_key_is_one_plain_line_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = built(3).export(tmp_path / "export")
    status, out, err = run_cli(capsys, "verify", "--from", str(export), "--log-key", "casebridge+00+AA==")
    assert (status, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert err.startswith("casebridge: Invalid input: field 'log key'")


def test_a_missing_log_key_is_refused_before_anything_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run_cli(capsys, "verify", "--from", str(tmp_path))
    assert status == 1
    assert "--log-key" in err
