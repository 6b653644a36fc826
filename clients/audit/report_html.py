"""A readable, printable HTML report of a verified (or not) audit log.

One self-contained UTF-8 page: inline CSS, no script, no external font, image or link, so it
opens the same offline, in an archive and on paper. Sections: the verification result (with one
line per problem), the checkpoint and its cosigners, counts by kind and by agency, then the trace
steps or the matching rows.

Invariants: every value goes through `html.escape`; text in Thai or Lao script is wrapped with
its `lang` ("th", "lo") so browsers pick the right fonts and line breaking; the report holds only
what leaves hold (ids, times, sizes, hashes, agency names), never personal data.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clients.audit.leaf_records import LeafRecord
from clients.audit.search import Tally
from clients.audit.trace import Trace
from clients.audit.verifier import Verification
from clients.cli_output import when

CSS = """
body { font-family: "Noto Sans", "Noto Sans Thai", "Noto Sans Lao", "Leelawadee UI", "Phetsarath OT",
  "Saysettha OT", Tahoma, "DejaVu Sans", sans-serif; margin: 2em; color: #111; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { font-size: 1.15em; margin-top: 1.6em;
  border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; font-size: .9em; }
th, td { border: 1px solid #bbb; padding: .25em .45em; text-align: left; vertical-align: top; }
th { background: #eee; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: "DejaVu Sans Mono", Consolas, monospace; font-size: .85em;
  overflow-wrap: anywhere; }
.verdict { font-size: 1.2em; font-weight: bold; padding: .4em .6em; border: 2px solid;
  display: inline-block; }
.ok { color: #0a5d1e; border-color: #0a5d1e; } .failed { color: #a30000; border-color: #a30000; }
ul.problems li { color: #a30000; }
.meta td:first-child { width: 14em; font-weight: bold; }
@media print { body { margin: 0; font-size: 10pt; } h2 { break-after: avoid; } tr { break-inside: avoid; }
  .verdict { border-width: 1px; } }
"""


def script_lang(text: str) -> str | None:
    """ "th" for text with Thai letters, "lo" for Lao, else None."""
    for char in text:
        code = ord(char)
        if 0x0E00 <= code <= 0x0E7F:
            return "th"
        if 0x0E80 <= code <= 0x0EFF:
            return "lo"
    return None


def text(value: object) -> str:
    """Escaped text, in a span carrying its language when it is Thai or Lao."""
    plain = "" if value is None else str(value)
    escaped = html.escape(plain)
    lang = script_lang(plain)
    return f'<span lang="{lang}">{escaped}</span>' if lang else escaped


@dataclass(frozen=True, slots=True)
class ReportData:
    title: str
    generated_at: int
    verification: Verification
    tally: Tally
    names: dict[str, str]
    selection: str
    rows: Sequence[LeafRecord] = ()
    rows_not_shown: int = 0
    trace: Trace | None = None


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row))
        + "</tr>\n"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody></table>\n"


def _verdict(data: ReportData) -> str:
    problems = data.trace.all_problems if data.trace is not None else data.verification.problems
    ok = not problems and (data.trace is None or data.trace.ok)
    verdict = (
        '<p class="verdict ok">Verified: the log is consistent and every check passed.</p>'
        if ok
        else f'<p class="verdict failed">Verification FAILED: {len(problems)} problem(s).</p>'
    )
    items = "".join(f"<li>{text(p.line())}</li>" for p in problems)
    return verdict + (f'<ul class="problems">{items}</ul>' if items else "")


def _checkpoint(v: Verification) -> str:
    cp = v.checkpoint
    rows = [("Source", text(v.source))]
    if cp is not None:
        rows += [
            ("Log origin", text(cp.origin)),
            ("Tree size", str(cp.size)),
            ("Root hash", f'<span class="mono">{cp.root_hash.hex()}</span>'),
            ("Witness cosignatures", text(", ".join(v.cosigners) or "none from a configured witness")),
            ("Leaves recomputed", f"{v.checked} (from index {v.start})"),
        ]
    trusted = v.trusted
    rows.append(
        (
            "Previously trusted",
            "none"
            if trusted is None
            else f'size {trusted.size}, root <span class="mono">{trusted.root_hash.hex()}</span>',
        )
    )
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{val}</td></tr>" for k, val in rows)
    note = f'<h3>Checkpoint note</h3><pre class="mono">{html.escape(v.note.decode("utf-8", "replace"))}</pre>'
    return f'<table class="meta"><tbody>{body}</tbody></table>{note if cp is not None else ""}'


def _counts(data: ReportData) -> str:
    tally = data.tally
    kinds = _table(("Kind", "Leaves"), ((text(k), str(n)) for k, n in sorted(tally.by_kind.items())), (1,))
    agencies = _table(
        ("Agency", "Name", "Leaves naming it"),
        ((text(a), text(data.names.get(a, "")), str(n)) for a, n in sorted(tally.by_agency.items())),
        (2,),
    )
    span = (
        f"<p>Leaves from {when(tally.first_time)} to {when(tally.last_time)}.</p>" if tally.first_time else ""
    )
    return f"<h2>Counts by kind</h2>{span}{kinds}<h2>Counts by agency</h2>{agencies}"


def _detail(record: LeafRecord) -> str:
    row = record.row()
    for key in ("index", "kind", "time", "envelope_id", "agencies", "leaf_hash"):
        row.pop(key, None)
    parts = [
        f"{html.escape(k)}: {text(v if not isinstance(v, list) else ', '.join(map(str, v)))}"
        for k, v in row.items()
    ]
    return "<br>".join(parts)


def _agency_cell(agencies: Sequence[str], names: dict[str, str]) -> str:
    return "<br>".join(f"{text(a)} {text(names[a]) if a in names else ''}".strip() for a in agencies)


def _rows(data: ReportData) -> str:
    if data.trace is not None:
        steps = (
            (
                str(s.record.index),
                text(when(s.record.time)),
                text(s.record.kind),
                text(s.summary),
                text(s.proof),
            )
            for s in data.trace.steps
        )
        title = f'Life of envelope <span class="mono">{data.trace.envelope_id.hex()}</span>'
        return f"<h2>{title}</h2>" + _table(
            ("Index", "Time (UTC)", "Kind", "What happened", "Proof"), steps, (0,)
        )
    rows = (
        (
            str(r.index),
            text(when(r.time)),
            text(r.kind),
            f'<span class="mono">{r.envelope_id.hex() if r.envelope_id else ""}</span>',
            _agency_cell(r.agencies, data.names),
            _detail(r),
        )
        for r in data.rows
    )
    more = f"<p>{data.rows_not_shown} more matching rows are not shown; export JSON Lines for all.</p>"
    return (
        f"<h2>Leaves: {text(data.selection)}</h2>"
        + _table(("Index", "Time (UTC)", "Kind", "Envelope", "Agencies", "Details"), rows, (0,))
        + (more if data.rows_not_shown else "")
    )


def render_report(data: ReportData) -> str:
    """The whole report as one HTML document (UTF-8 text)."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(data.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(data.title)}</h1>\n"
        f"<p>Generated {when(data.generated_at)} by casebridge audit. "
        f"Selection: {text(data.selection)}.</p>\n"
        f"<h2>Verification</h2>\n{_verdict(data)}\n{_checkpoint(data.verification)}\n"
        f"{_counts(data)}\n{_rows(data)}\n</body>\n</html>\n"
    )
