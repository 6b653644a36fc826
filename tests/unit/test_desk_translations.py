"""The desk's interface is whole in Thai and Lao: every msgid the templates and the label
tables use has a translation in both catalogues, every schema field and code has a label, and
the catalogues compile."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from clients.desk import labels
from clients.desk.forms import widgets_for
from clients.desk.i18n import LOCALE_DIR, load_translations, po_path
from protocol import codec
from protocol.referral import MESSAGE_CLASSES, MessageType, schema_of
from protocol.referral.case_state import CasePhase
from protocol.referral.fields import Nested
from protocol.referral.kinds import Code, ListOf
from protocol.referral.waiting import WaitingKind

TEMPLATES = Path(labels.__file__).parent / "templates"
SOURCES = Path(labels.__file__).parent


def used_msgids() -> set[str]:
    ids = set(labels.all_msgids())
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        ids |= set(re.findall(r'_\("([^"]+)"\)', text)) | set(re.findall(r"_\('([^']+)'\)", text))
    for path in SOURCES.glob("*.py"):
        ids |= set(re.findall(r'_\("([^"]+)"\)', path.read_text(encoding="utf-8")))
    return ids


@pytest.mark.parametrize("language", ["th", "lo"])
def test_every_msgid_has_a_translation(language: str) -> None:
    with po_path(language).open("rb") as f:
        catalog = read_po(f, locale=language)
    translated = {m.id: m.string for m in catalog if m.id and m.string and not m.fuzzy}
    missing = sorted(used_msgids() - set(translated))
    assert not missing, f"untranslated in {language}: {missing}"
    script = "\u0e00-\u0e7f" if language == "th" else "\u0e80-\u0eff"
    for msgid, text in translated.items():
        assert text == codec.nfc(text), msgid
        assert re.search(f"[{script}]", text), f"{language} translation of {msgid!r} has no {language} letter"


def test_template_catalogue_lists_every_msgid() -> None:
    with (LOCALE_DIR / "desk.pot").open("rb") as f:
        pot = {m.id for m in read_po(f) if m.id}
    assert used_msgids() <= pot


def test_catalogues_compile_and_translate() -> None:
    translations = load_translations()
    assert translations["th"].gettext("Inbox") == "กล่องรับ"
    assert translations["lo"].gettext("Inbox") == "ກ່ອງຮັບ"
    assert translations["en"].gettext("Inbox") == "Inbox"


def test_every_schema_field_code_type_phase_and_wait_has_a_label() -> None:
    names: set[str] = set()
    codes: set[str] = set()

    def walk(cls: type) -> None:
        for spec in schema_of(cls):
            if spec.name == "header":
                continue
            kind = spec.kind.item if isinstance(spec.kind, ListOf) else spec.kind
            names.add(spec.name)
            if isinstance(kind, Nested):
                walk(kind.record)
            if isinstance(kind, Code):
                codes.update(m.value for m in kind.enum)

    for cls in MESSAGE_CLASSES.values():
        walk(cls)
    shown = {w.name for t in MessageType for w in widgets_for(t)}
    assert shown <= names
    assert not (names - set(labels.FIELDS)), sorted(names - set(labels.FIELDS))
    assert not (codes - set(labels.CODES)), sorted(codes - set(labels.CODES))
    assert {t.value for t in MessageType} == set(labels.TYPES)
    assert {p.value for p in CasePhase} == set(labels.PHASES)
    assert {w.value for w in WaitingKind} == set(labels.WAITING)
