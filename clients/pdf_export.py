"""A case thread, or one message of it, as a PDF for the Case Management Meeting file and the
handover paperwork.

Invariants:
- Text is shaped: fpdf2 with text shaping on runs HarfBuzz (uharfbuzz), so Thai and Lao vowels
  and tone marks are placed by the fonts' OpenType rules. Each value is set in the font of its
  script (Lao: Phetsarath OT; Thai: a TLWG font; else DejaVu Sans) with the other two as
  fallbacks, so a line mixing scripts renders; fonts come from Debian packages (`pdf_fonts`).
- Every field a printed message carries is shown with its English label and its PD / S mark,
  with the consent in force, the overrides and (for a whole case) what waits for whom; every
  page has a footer with its number, the page count and the generation time.
- `write_pdf` writes the bytes to the path the person gave and nowhere else (no temporary
  file, no font cache), with mode 0600; an existing file is replaced only when asked.
- The document's metadata holds no personal data (a fixed title, the creator, the time).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.enums import MethodReturnValue, XPos, YPos

from clients.case_threads import CaseThread, StoredMessage
from clients.case_view import (
    case_refs,
    consent_summary,
    item_text,
    local_time,
    message_fields,
    override_lines,
    person_text,
    short_id,
    type_label,
)
from clients.pdf_fonts import FoundFont, find_fonts
from keys.files import FileAccessError
from protocol.errors import Conflict, NotFound

LABEL_WIDTH_MM = 66.0
MARK_WIDTH_MM = 9.0
LINE_MM = 5.6
SCRIPT_SCALE = {"Latin": 1.0, "Thai": 1.05, "Lao": 1.12}
"""Phetsarath OT and the TLWG fonts draw smaller than DejaVu Sans at the same point size."""
LEGEND = "PD: personal data. S: sensitive data (health, criminal matters, ethnicity). Handle as restricted."


def script_of(text: str) -> str:
    """The script that decides a value's font: Lao if it has a Lao letter, else Thai if it has a
    Thai letter, else Latin."""
    if any("\u0e80" <= c <= "\u0eff" for c in text):
        return "Lao"
    if any("\u0e00" <= c <= "\u0e7f" for c in text):
        return "Thai"
    return "Latin"


class _CaseDocument(FPDF):
    def __init__(self, fonts: Mapping[str, FoundFont], footer_text: str) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self._fonts = fonts
        self._footer_text = footer_text
        for found in fonts.values():
            self.add_font(found.family, "", str(found.regular))
            self.add_font(found.family, "B", str(found.bold))
        self.set_text_shaping(True)
        self.set_auto_page_break(auto=True, margin=18)
        self.set_margins(16, 16, 16)
        self.alias_nb_pages()

    def use(self, text: str, *, size: float = 10, bold: bool = False) -> None:
        """Set the font for `text`'s script, with the other scripts' fonts as fallbacks."""
        script = script_of(text)
        primary = self._fonts[script].family
        self.set_font(primary, "B" if bold else "", size * SCRIPT_SCALE[script])
        self.set_fallback_fonts([f.family for f in self._fonts.values() if f.family != primary])

    def footer(self) -> None:
        self.set_y(-13)
        text = f"{self._footer_text} · page {self.page_no()} of {{nb}}"
        self.use(text, size=7.5)
        self.set_text_color(90)
        self.cell(0, 5, text, align="C")
        self.set_text_color(0)

    # --- blocks ----------------------------------------------------------------------------

    def heading(self, text: str, size: float = 12) -> None:
        self.ln(2)
        if self.will_page_break(size):
            self.add_page()
        self.use(text, size=size, bold=True)
        self.multi_cell(0, size * 0.55, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.ln(1)

    def para(self, text: str, *, size: float = 9.5) -> None:
        self.use(text, size=size)
        self.multi_cell(0, LINE_MM, text, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def _height(self, width: float, text: str) -> float:
        """The height `text` takes in a cell `width` wide, in the current font."""
        height = self.multi_cell(
            width, LINE_MM, text, align="L", dry_run=True, output=MethodReturnValue.HEIGHT
        )
        return float(height)  # type: ignore[arg-type]

    def row(self, label: str, value: str, mark: str = "") -> None:
        """A label and its value side by side; the row moves to the next page whole when it fits
        on one page."""
        value_width = self.epw - LABEL_WIDTH_MM - MARK_WIDTH_MM
        self.use(value)
        needed = self._height(value_width, value)
        self.use(label, size=8, bold=True)
        needed = max(needed, self._height(LABEL_WIDTH_MM, label))
        if needed < self.eph and self.will_page_break(needed):
            self.add_page()
        top = self.get_y()
        self.multi_cell(LABEL_WIDTH_MM, LINE_MM, label, align="L", new_x=XPos.RIGHT, new_y=YPos.TOP)
        self.set_font(self._fonts["Latin"].family, "B", 8)
        self.set_text_color(160, 0, 0)
        self.cell(MARK_WIDTH_MM, LINE_MM, mark)
        self.set_text_color(0)
        self.use(value)
        self.multi_cell(value_width, LINE_MM, value, align="L", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        if self.page == self.pages_count and self.get_y() < top + needed:
            self.set_y(top + needed)
        self.ln(0.6)


def _message_block(pdf: _CaseDocument, thread: CaseThread, stored: StoredMessage, number: int) -> None:
    m = stored.message
    h = m.header
    pdf.heading(f"{number}. {type_label(m.TYPE)} — {local_time(h.created_at)}", size=11)
    pdf.row("From", f"{h.sender_agency_id} (case {h.sender_case_ref or '-'})")
    pdf.row("To", f"{h.receiver_agency_id} (case {h.receiver_case_ref or 'not yet set'})")
    pdf.row("Message id", h.message_id.hex())
    if h.in_reply_to is not None:
        answered = thread.message(h.in_reply_to)
        what = f"{type_label(answered.message.TYPE)} " if answered else ""
        pdf.row("In reply to", f"{what}{h.in_reply_to.hex()}")
    pdf.row("Consent version", h.consent_ref.hex())
    envelope = stored.envelope_id or "not sealed (sending was interrupted)"
    pdf.row("Envelope", f"{stored.direction.value}: {envelope}")
    if stored.attachments:
        pdf.row("Attached files", ", ".join(stored.attachments))
    for line in message_fields(m):
        pdf.row(line.label, line.value, line.mark)
    for o in h.overrides:
        second = f"; second approver {o.second_approver}" if o.second_approver else ""
        pdf.row(
            "Consent override",
            f"{', '.join(o.field_paths)} by {o.officer}{second}; legal basis {o.legal_basis.value}; "
            f"reason: {o.reason}",
            "!",
        )


def render_pdf(
    thread: CaseThread,
    *,
    exported_by: str,
    generated_at: int,
    message_id: bytes | None = None,
    fonts: Mapping[str, FoundFont] | None = None,
) -> bytes:
    """The case (or only the message `message_id` of it) as PDF bytes."""
    state = thread.state
    chosen = list(thread.messages)
    if message_id is not None:
        chosen = [m for m in thread.messages if m.message.message_id == message_id]
        if not chosen:
            raise NotFound(f"no message {message_id.hex()} in this case; `casebridge cases show` lists them.")
    footer = f"CaseBridge · exported by {exported_by} · generated at {local_time(generated_at)}"
    pdf = _CaseDocument(fonts if fonts is not None else find_fonts(), footer)
    pdf.set_title("CaseBridge case file" if message_id is None else "CaseBridge referral message")
    pdf.set_creator("CaseBridge")
    pdf.set_creation_date(dt.datetime.fromtimestamp(generated_at, dt.UTC))
    pdf.add_page()
    pdf.heading("CaseBridge case file" if message_id is None else "CaseBridge referral message", size=16)
    pdf.row("Case numbers", case_refs(state))
    pdf.row("Case link id", state.case_link_id.hex())
    pdf.row("Person", person_text(thread), "PD")
    pdf.row("Phase", f"{state.phase.value} (as held by {state.local_agency_id})")
    pdf.para(LEGEND, size=8)
    pdf.heading("Consent in force")
    for line in consent_summary(state.consent):
        pdf.para(line)
    overrides = [o for o in state.overrides if message_id is None or o.message_id == message_id]
    if overrides:
        pdf.heading("Consent overrides")
        for line in override_lines(tuple(overrides), state):
            pdf.para(line)
    if message_id is None:
        pdf.heading("What waits for whom")
        items = thread.open_items(local_time(generated_at)[:10])
        for item in items:
            pdf.para(item_text(item, thread))
        if not items:
            pdf.para("Nothing: no step is owed on this case.")
    pdf.heading("Messages" if message_id is None else "Message")
    for stored in chosen:
        _message_block(pdf, thread, stored, thread.messages.index(stored) + 1)
    if message_id is None and thread.refused:
        pdf.heading("Messages refused on receipt")
        for r in thread.refused:
            kind = type_label(r.message.TYPE) if r.message is not None else "undecodable message"
            envelope = short_id(bytes.fromhex(r.envelope_id))
            pdf.para(
                f"{local_time(r.refused_at)}: {kind} from {r.sender_id} (envelope {envelope}), "
                f"rejected as {r.reason}: {r.detail}"
            )
    data: Any = pdf.output()
    return bytes(data)


def write_pdf(data: bytes, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write `data` to `path` only (mode 0600, fsynced); refuse to replace a file unless asked."""
    target = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(target, flags, 0o600)
    except FileExistsError:
        raise Conflict(f"{target} already exists; choose another name or pass --overwrite.") from None
    except OSError as e:
        raise FileAccessError(
            f"cannot write {target}: {e.strerror}. Check the path and its permissions."
        ) from e
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return target
