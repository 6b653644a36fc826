"""PDF export of a case and of one message, with Thai and Lao text shaped by HarfBuzz.

What the text checks verify: pypdf extracts each page's text through the fonts' ToUnicode maps,
which fpdf2 writes from HarfBuzz's glyph clusters, so a shaped Thai or Lao run maps back to its
code points in logical order. Names, case numbers and single-line values are compared after NFC
normalisation with each run of spaces read as one space, because the extractor inserts a space
where a positioned mark leaves a gap between glyph runs (seen with Phetsarath OT after a Lao
tone mark: "ໝີ່  ໜູ", and even inside a word: "ທ່ ານ"). Values where that happens inside a word,
and multi-line notes (which also wrap), are compared with all whitespace removed. The glyph
placement itself (marks above and below their bases, no boxes) is checked by eye on pages
rendered with pdftoppm, not here.
"""

from __future__ import annotations

import io
import os
import stat
import unicodedata
from pathlib import Path

import pytest
from pypdf import PdfReader

from clients.case_store import CaseStore
from clients.case_threads import CaseThread
from clients.pdf_export import render_pdf, script_of, write_pdf
from clients.pdf_fonts import FONT_DIRS, FontMissing, find_fonts
from keys.lifecycle import create_agency
from protocol.errors import Conflict, NotFound
from protocol.referral import Side
from tests.referral_fixtures import DEST_REF, DESTINATION, MT, NOW, ORIGIN_REF, TEXT, make, referral


def _thread(tmp_path: Path, lang: str) -> CaseThread:
    """A referral in `lang`, acknowledged and accepted, and a question with a due date."""
    with CaseStore(tmp_path / lang, create_agency(DESTINATION, "DSDW", NOW)) as store:
        opening = referral(lang, header={"case_link_id": os.urandom(16)})
        state = store.record_sent(opening, now=NOW)
        store.mark_sealed(opening, os.urandom(16).hex())
        for mtype in (MT.ACKNOWLEDGEMENT, MT.ACCEPTANCE):
            state = store.record_received(
                make(state, mtype, Side.ORIGIN, lang=lang), envelope_id="ab" * 16, now=NOW
            )
        store.record_sent(make(state, MT.INFO_REQUEST, Side.DESTINATION, lang=lang), now=NOW)
        thread = store.thread(opening.header.case_link_id, now=NOW)
    assert thread is not None
    return thread


def _text(pdf: bytes) -> str:
    """The extracted text, NFC, with each run of spaces as one space (lines kept)."""
    pages = PdfReader(io.BytesIO(pdf)).pages
    text = unicodedata.normalize("NFC", "\n".join(page.extract_text() for page in pages))
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def _squeezed(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("lang", ["th", "lo"])
def test_a_case_in_thai_or_lao_extracts_back_to_its_names_and_fields(tmp_path: Path, lang: str) -> None:
    thread = _thread(tmp_path, lang)
    pdf = render_pdf(thread, exported_by=DESTINATION, generated_at=NOW + 3600)
    assert pdf.startswith(b"%PDF-")
    text = _text(pdf)
    t = TEXT[lang]
    for exact in (
        t["full"],
        t["given"],
        t["family"],
        t["romanised"],
        t["alias"],
        t["province"],
        DEST_REF,
        ORIGIN_REF,
    ):
        assert unicodedata.normalize("NFC", exact) in text
    assert _squeezed(t["note"]) in _squeezed(text)
    for label in ("Person › Name › Full name (own script)", "Identified by", "Wish to return", "Due on"):
        assert label in text
    assert f"PD {t['full']}" in text
    assert "Scopes granted: s1_notify_origin, s2_verification" in text
    assert "due 2025-03-07, OVERDUE" in text
    assert thread.case_link_id.hex() in text
    pages = len(PdfReader(io.BytesIO(pdf)).pages)
    assert f"generated at 2025-04-01 08:00 (UTC+7) · page {pages} of {pages}" in text


def test_one_message_exports_alone_with_its_overrides_marked(tmp_path: Path) -> None:
    thread = _thread(tmp_path, "lo")
    question = thread.messages[-1].message
    pdf = render_pdf(thread, exported_by=DESTINATION, generated_at=NOW, message_id=question.message_id)
    text = _text(pdf)
    assert "CaseBridge referral message" in text
    assert "Info request" in text
    assert "Identified by" not in text
    assert _squeezed(TEXT["lo"]["note"]) in _squeezed(text)
    with pytest.raises(NotFound):
        render_pdf(thread, exported_by=DESTINATION, generated_at=NOW, message_id=bytes(16))


def test_sensitive_fields_are_marked_s(tmp_path: Path) -> None:
    with CaseStore(tmp_path, create_agency(DESTINATION, "DSDW", NOW)) as store:
        opening = referral("th", health_needs="ต้องการพบแพทย์ ຕ້ອງການພົບທ່ານໝໍ")
        store.record_sent(opening, now=NOW)
        thread = store.thread(opening.header.case_link_id, now=NOW)
    assert thread is not None
    text = _text(render_pdf(thread, exported_by=DESTINATION, generated_at=NOW))
    assert _squeezed("Health needs S ต้องการพบแพทย์ ຕ້ອງການພົບທ່ານໝໍ") in _squeezed(text)
    assert "Health needs S ต้องการพบแพทย์" in text


def test_each_value_is_set_in_the_font_of_its_script() -> None:
    assert script_of("ນາງ ສົມພອນ (Somphone) สมพร") == "Lao"
    assert script_of("สมชาย ใจดี / Somchai") == "Thai"
    assert script_of("Somchai Jaidee 2025-04-01") == "Latin"
    fonts = find_fonts()
    assert fonts["Thai"].regular.name in {"Garuda.ttf", "Loma.ttf", "Norasi.ttf", "Waree.ttf"}
    assert fonts["Lao"].regular.name == "Phetsarath_OT.ttf"
    assert fonts["Latin"].regular.name == "DejaVuSans.ttf"
    assert all(
        f.regular.is_relative_to(FONT_DIRS[0]) or f.regular.is_relative_to(FONT_DIRS[1])
        for f in fonts.values()
    )


def test_a_missing_font_names_the_debian_package(tmp_path: Path) -> None:
    (tmp_path / "DejaVuSans.ttf").write_bytes(b"")
    with pytest.raises(FontMissing, match="fonts-thai-tlwg"):
        find_fonts([tmp_path])
    (tmp_path / "Loma.ttf").write_bytes(b"")
    with pytest.raises(FontMissing, match=r"apt-get install fonts-lao"):
        find_fonts([tmp_path])


def test_the_pdf_is_written_only_where_asked_private_and_never_over_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out" / "ກໍລະນີ ศคม.pdf"
    target.parent.mkdir()
    written = write_pdf(b"%PDF-1.7 test", target)
    assert written == target
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["out", "ກໍລະນີ ศคม.pdf"]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    with pytest.raises(Conflict, match="already exists"):
        write_pdf(b"%PDF-1.7 other", target)
    assert target.read_bytes() == b"%PDF-1.7 test"
    write_pdf(b"%PDF-1.7 other", target, overwrite=True)
    assert target.read_bytes() == b"%PDF-1.7 other"
