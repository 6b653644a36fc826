"""The fonts of CaseBridge PDFs, found by path under the system font folders.

Each script has its font from a Debian package: Latin and everything else from DejaVu Sans
(`fonts-dejavu-core`), Thai from a TLWG font (`fonts-thai-tlwg`: Garuda, else Loma, Norasi or
Waree), Lao from Phetsarath OT (`fonts-lao`). All are OpenType fonts whose GSUB/GPOS rules place
Thai and Lao vowels and tone marks once HarfBuzz shapes the text. A missing font is a
`FontMissing` error naming the package to install; nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from protocol.errors import InputError

FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


class FontMissing(InputError):
    """A font a PDF needs is not installed."""

    title = "Font missing"
    remedy = "Install the named Debian package (apt-get install PACKAGE) and try again."


@dataclass(frozen=True, slots=True)
class FontNeed:
    """A script's font: the family name used inside the PDF, the file names to look for in
    order of preference (regular, bold), and the Debian package that ships them."""

    family: str
    script: str
    candidates: tuple[tuple[str, str | None], ...]
    package: str


LATIN = FontNeed("CBLatin", "Latin", (("DejaVuSans.ttf", "DejaVuSans-Bold.ttf"),), "fonts-dejavu-core")
THAI = FontNeed(
    "CBThai",
    "Thai",
    (
        ("Garuda.ttf", "Garuda-Bold.ttf"),
        ("Loma.ttf", "Loma-Bold.ttf"),
        ("Norasi.ttf", "Norasi-Bold.ttf"),
        ("Waree.ttf", "Waree-Bold.ttf"),
    ),
    "fonts-thai-tlwg",
)
LAO = FontNeed("CBLao", "Lao", (("Phetsarath_OT.ttf", None),), "fonts-lao")
NEEDED = (LATIN, THAI, LAO)


@dataclass(frozen=True, slots=True)
class FoundFont:
    family: str
    regular: Path
    bold: Path
    """The bold file; the regular one again when the family has no bold."""


def _index(font_dirs: Sequence[Path]) -> dict[str, Path]:
    """File name -> first path found, walking the folders in order (sorted, so stable)."""
    found: dict[str, Path] = {}
    for root in font_dirs:
        for directory, subdirs, files in os.walk(root):
            subdirs.sort()
            for name in sorted(files):
                found.setdefault(name, Path(directory) / name)
    return found


def find_fonts(font_dirs: Sequence[Path] = FONT_DIRS) -> dict[str, FoundFont]:
    """The font of each script, by script name ("Latin", "Thai", "Lao")."""
    files = _index(font_dirs)
    out: dict[str, FoundFont] = {}
    for need in NEEDED:
        for regular, bold in need.candidates:
            if regular in files:
                bold_path = files.get(bold) if bold is not None else None
                out[need.script] = FoundFont(need.family, files[regular], bold_path or files[regular])
                break
        else:
            names = ", ".join(r for r, _ in need.candidates)
            where = ", ".join(str(d) for d in font_dirs)
            raise FontMissing(
                f"no {need.script} font ({names}) under {where}; install the Debian package "
                f"{need.package} (apt-get install {need.package}) and try again."
            )
    return out
