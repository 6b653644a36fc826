"""What `casebridge audit verify|trace|search|export` run (parsing is in `clients.audit.cli`).

Each command opens the log (a live broker with the auditor's keystore, or an export directory),
the officer's policy and trusted state, streams the log once through the verifier with the
observers it needs, prints or writes its result, and returns 0 only if everything verified.
Only `verify` moves the trusted checkpoint forward; the others check against it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clients.agency import load_pinned_roots, system_clock
from clients.audit import report_html
from clients.audit.atomic_output import atomic_binary, atomic_text
from clients.audit.broker_log import BrokerAuditLog
from clients.audit.export import json_line, row_file
from clients.audit.leaf_records import LeafRecord
from clients.audit.policy import LogPolicy, Problem
from clients.audit.progress import progress_for
from clients.audit.registry import CertificateRegistry
from clients.audit.search import Matches, SearchFilter, Tally, parse_time
from clients.audit.sources import BROKER_CERT_FILE, ExportDirectory, LogSource, RawExport
from clients.audit.trace import Trace, check_tlog_proof, trace_envelope
from clients.audit.tree_check import Observer
from clients.audit.trusted_state import TrustedState, load_state, save_state
from clients.audit.verifier import Verification, verify_log
from clients.cli_output import when
from clients.download import check_envelope_id
from clients.transport import BrokerTransport, RetryPolicy
from keys.files import FileAccessError, read_bytes
from keys.keystore import KeystoreKind, load_agency, peek_kind
from keys.passphrase import DEFAULT_ENV, read_passphrase
from protocol.errors import InvalidField

AUDIT_RETRY = RetryPolicy(max_attempts=4, base_delay_seconds=0.5, max_delay_seconds=5.0)


@dataclass
class OpenedLog:
    source: LogSource
    policy: LogPolicy
    trusted: TrustedState | None
    state_dir: Path | None


def _policy(args: argparse.Namespace) -> LogPolicy:
    if not args.log_key:
        raise InvalidField(
            "--log-key", "the log's vkey from the broker operator (or set CASEBRIDGE_AUDIT_LOG_KEY)"
        )
    env = os.environ.get("CASEBRIDGE_AUDIT_WITNESS_KEYS", "").replace(",", " ").split()
    witnesses = args.witness_key if args.witness_key is not None else env
    return LogPolicy.from_text(
        args.log_key, witnesses, min_cosignatures=args.min_cosignatures, origin=args.origin
    )


def _transport(args: argparse.Namespace) -> BrokerTransport:
    if not args.keystore:
        raise InvalidField("--keystore", "the auditor's keystore, to sign requests to --broker")
    peek_kind(args.keystore, KeystoreKind.AGENCY)
    secret = read_passphrase(args.passphrase_env, DEFAULT_ENV, what=f"the auditor keystore {args.keystore}")
    identity = load_agency(args.keystore, secret).identity
    if identity.certificate is None:
        raise InvalidField(
            "--keystore", "a keystore with its certificate imported (casebridge keys agency import-cert)"
        )
    return BrokerTransport(args.broker, identity.signing_key, clock=system_clock, retry=AUDIT_RETRY)


@contextlib.asynccontextmanager
async def opened_log(args: argparse.Namespace) -> AsyncIterator[OpenedLog]:
    policy = _policy(args)
    state_dir = Path(args.state) if args.state else None
    trusted = load_state(state_dir) if state_dir is not None else None
    if args.from_dir:
        yield OpenedLog(ExportDirectory(args.from_dir), policy, trusted, state_dir)
        return
    if not args.broker:
        raise InvalidField("--broker", "a broker URL, or --from an export directory")
    transport = _transport(args)
    try:
        yield OpenedLog(BrokerAuditLog(transport, fetch=args.fetch), policy, trusted, state_dir)
    finally:
        await transport.close()


def _run(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(main())
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        raise FileAccessError(
            f"{where}{e.strerror or type(e).__name__}. Check the path and its permissions."
        ) from e


def _verify(
    log: OpenedLog, args: argparse.Namespace, label: str, **kwargs: Any
) -> Coroutine[Any, Any, Verification]:
    return verify_log(
        log.source,
        log.policy,
        trusted=log.trusted,
        now=system_clock(),
        resume=args.incremental and log.trusted is not None,
        progress=progress_for(label, forced=args.progress),
        **kwargs,
    )


def _print_problems(problems: tuple[Problem, ...] | list[Problem], stream: Any = None) -> None:
    for problem in problems:
        print(problem.line(), file=stream or sys.stdout)


# --- verify -------------------------------------------------------------------------------------


def verify(args: argparse.Namespace) -> int:
    async def main() -> int:
        async with opened_log(args) as log:
            result = await _verify(log, args, "verifying")
        saved = None
        if result.new_state is not None and log.state_dir is not None:
            saved = save_state(log.state_dir, result.new_state)
        if args.json:
            print(
                json.dumps(
                    {**result.as_json(), "state": None if saved is None else str(saved)}, ensure_ascii=False
                )
            )
        else:
            print("\n".join(result.lines()))
            if saved is not None:
                print(f"trusted checkpoint saved: {saved}")
            elif log.state_dir is None and result.ok:
                print(
                    "no --state: nothing remembered, so the next run cannot check consistency with this one"
                )
        return 0 if result.ok else 1

    return _run(main)


# --- trace --------------------------------------------------------------------------------------


def _roots(args: argparse.Namespace) -> list[Any]:
    paths = args.trust or [p for p in os.environ.get("CASEBRIDGE_TRUST", "").split(os.pathsep) if p]
    return load_pinned_roots(paths)


def _broker_cert(args: argparse.Namespace, source: LogSource) -> bytes | None:
    if args.broker_cert:
        return read_bytes(args.broker_cert)
    if isinstance(source, ExportDirectory) and (source.path / BROKER_CERT_FILE).is_file():
        return read_bytes(source.path / BROKER_CERT_FILE)
    return None


def trace_lines(trace: Trace) -> list[str]:
    lines = [f"envelope {trace.envelope_id.hex()}"]
    for step in trace.steps:
        lines.append(f"  [{step.record.index}] {when(step.record.time)}  {step.summary}")
        lines.append(f"        {step.proof}")
    if trace.pending:
        lines.append(f"  {trace.pending} more leaf(s) not yet covered by a checkpoint")
    return lines


def trace_json(trace: Trace) -> dict[str, Any]:
    return {
        "envelope_id": trace.envelope_id.hex(),
        "verified": trace.ok,
        "verification": trace.verification.as_json(),
        "steps": [{**s.record.row(), "summary": s.summary, "proof": s.proof} for s in trace.steps],
        "pending": trace.pending,
        "problems": [p.as_json() for p in trace.all_problems],
    }


async def _trace(
    log: OpenedLog,
    args: argparse.Namespace,
    envelope_id: bytes,
    registry: CertificateRegistry,
    observers: tuple[Observer, ...] = (),
) -> Trace:
    broker_cert = _broker_cert(args, log.source)
    if broker_cert is None and isinstance(log.source, BrokerAuditLog):
        broker_cert = await log.source.broker_certificate()
    return await trace_envelope(
        log.source,
        log.policy,
        registry.roots,
        envelope_id,
        trusted=log.trusted,
        now=system_clock(),
        resume=args.incremental,
        broker_certificate=broker_cert,
        registry=registry,
        observers=observers,
        progress=progress_for("tracing", forced=args.progress),
    )


async def _save_tlog_proof(log: OpenedLog, args: argparse.Namespace, result: Trace) -> list[Problem]:
    """Fetch the broker's tlog-proof of the acceptance, check it, and save it only if it verifies."""
    if not isinstance(log.source, BrokerAuditLog):
        raise InvalidField("--tlog-proof-out", "a live --broker (an export holds no tlog-proof)")
    data = await log.source.tlog_proof(result.envelope_id)
    problem = check_tlog_proof(data, result, log.policy)
    if problem is not None:
        return [problem]
    with atomic_binary(args.tlog_proof_out, mode=0o644) as handle:
        handle.write(data)
    return []


def trace(args: argparse.Namespace) -> int:
    envelope_id = bytes.fromhex(check_envelope_id(args.envelope_id.strip().lower()))
    registry = CertificateRegistry(_roots(args))

    async def main() -> int:
        async with opened_log(args) as log:
            result = await _trace(log, args, envelope_id, registry)
            extra = []
            if args.tlog_proof_out:
                extra = await _save_tlog_proof(log, args, result)
        ok = result.ok and not extra
        if args.json:
            document = trace_json(result)
            document["problems"] += [p.as_json() for p in extra]
            print(json.dumps({**document, "verified": ok}, ensure_ascii=False))
        else:
            print("\n".join([*result.verification.lines()[:-1], *trace_lines(result)]))
            _print_problems([*result.problems, *extra])
            count = len(result.all_problems) + len(extra)
            print("result: VERIFIED" if ok else f"result: FAILED ({count} problem(s))")
        return 0 if ok else 1

    return _run(main)


# --- search and export --------------------------------------------------------------------------


def _filter(args: argparse.Namespace) -> SearchFilter:
    envelope = bytes.fromhex(check_envelope_id(args.envelope.strip().lower())) if args.envelope else None
    return SearchFilter(
        agency=args.agency,
        kind=args.kind,
        since=None if args.since is None else parse_time(args.since, "--since"),
        until=None if args.until is None else parse_time(args.until, "--until", end_of_day=True),
        envelope_id=envelope,
    )


def search_line(record: LeafRecord) -> str:
    envelope = record.envelope_id.hex() if record.envelope_id is not None else "-"
    return (
        f"{record.index}  {when(record.time)}  {record.kind}  {envelope}  {' '.join(record.agencies) or '-'}"
    )


def search(args: argparse.Namespace) -> int:
    selection = _filter(args)

    def emit(record: LeafRecord) -> None:
        print(json_line(record) if args.json else search_line(record))

    async def main() -> int:
        async with opened_log(args) as log:
            matches = Matches(selection, limit=0, emit=emit)
            result = await _verify(log, args, "searching", observers=(matches.observe,))
        verdict = "verified" if result.ok else "NOT verified"
        print(f"{matches.count} leaf(s) match {selection.describe()}; the log is {verdict}", file=sys.stderr)
        _print_problems(result.problems, sys.stderr)
        return 0 if result.ok else 1

    return _run(main)


async def _export_raw(log: OpenedLog, args: argparse.Namespace) -> Verification:
    with RawExport(args.raw, overwrite=args.force) as raw:
        result = await verify_log(
            log.source,
            log.policy,
            trusted=log.trusted,
            now=system_clock(),
            sink=raw.write,
            progress=progress_for("exporting", forced=args.progress),
        )
        raw.note = result.note
    if isinstance(log.source, BrokerAuditLog):
        cert = await log.source.broker_certificate()
        if cert is not None:
            with atomic_binary(raw.path / BROKER_CERT_FILE) as handle:
                handle.write(cert)
    return result


async def _export_report(
    log: OpenedLog, args: argparse.Namespace, registry: CertificateRegistry
) -> tuple[Verification, Trace | None]:
    selection = _filter(args)
    tally = Tally()
    observers = [tally.observe, registry.observe]
    if args.format == "html":
        if selection.envelope_id is not None:
            trace = await _trace(log, args, selection.envelope_id, registry, observers=(tally.observe,))
            _write_html(args, trace.verification, tally, registry, selection, trace=trace)
            return trace.verification, trace
        matches = Matches(selection, limit=max(args.limit, 0))
        result = await _verify(log, args, "exporting", observers=(*observers, matches.observe))
        _write_html(args, result, tally, registry, selection, rows=matches)
        return result, None
    with row_file(args.out, args.format) as rows:
        matches = Matches(selection, limit=0, emit=rows.write)
        result = await _verify(log, args, "exporting", observers=(*observers, matches.observe))
    return result, None


def _write_html(
    args: argparse.Namespace,
    result: Verification,
    tally: Tally,
    registry: CertificateRegistry,
    selection: SearchFilter,
    *,
    rows: Matches | None = None,
    trace: Trace | None = None,
) -> None:
    cp = result.checkpoint
    title = f"CaseBridge audit report: {cp.origin if cp is not None else 'unverified log'}"
    data = report_html.ReportData(
        title=title,
        generated_at=system_clock(),
        verification=result,
        tally=tally,
        names=dict(registry.names),
        selection=selection.describe(),
        rows=rows.kept if rows is not None else (),
        rows_not_shown=rows.not_kept if rows is not None else 0,
        trace=trace,
    )
    with atomic_text(args.out) as handle:
        handle.write(report_html.render_report(data))


def export(args: argparse.Namespace) -> int:
    if args.out is not None and args.format == "html" and args.envelope:
        registry = CertificateRegistry(_roots(args))
    else:
        registry = CertificateRegistry([])

    async def main() -> int:
        async with opened_log(args) as log:
            if args.raw:
                result, trace = await _export_raw(log, args), None
                where = args.raw
            else:
                result, trace = await _export_report(log, args, registry)
                where = args.out
        problems = trace.all_problems if trace is not None else result.problems
        print(f"wrote {where}; the log is {'verified' if not problems else 'NOT verified'}")
        _print_problems(problems)
        return 0 if not problems and (trace is None or trace.ok) else 1

    return _run(main)
