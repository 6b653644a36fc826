"""The desk's languages: Thai, Lao and English, from standard gettext catalogues.

The `.po` files under `locale/<lang>/LC_MESSAGES/desk.po` are the source (English msgids);
they are compiled with Babel in memory when the desk starts (no `.mo` file to keep in step).
English is the msgids themselves. A test checks that every msgid the templates and
`clients.desk.labels` use has a Thai and a Lao translation.
"""

from __future__ import annotations

import gettext
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

LANGUAGES = ("th", "lo", "en")
LANGUAGE_NAMES = {"th": "ไทย", "lo": "ລາວ", "en": "English"}
LOCALE_DIR = Path(__file__).parent / "locale"
DOMAIN = "desk"


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def load_translations() -> dict[str, gettext.NullTranslations]:
    """Every language's translations, compiled from the `.po` sources."""
    out: dict[str, gettext.NullTranslations] = {"en": gettext.NullTranslations()}
    for language in LANGUAGES:
        if language == "en":
            continue
        with po_path(language).open("rb") as f:
            catalog = read_po(f, locale=language, domain=DOMAIN)
        compiled = io.BytesIO()
        write_mo(compiled, catalog)
        compiled.seek(0)
        out[language] = gettext.GNUTranslations(compiled)
    return out


def pick_language(value: str | None, default: str) -> str:
    return value if value in LANGUAGES else default
