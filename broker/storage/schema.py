"""Schema migrations shared by every engine: numbered scripts, one numbering for all engines.

Invariants:
- Each engine ships its scripts in its own package (`broker.storage.<engine>.migrations`),
  named `NNNN_what.sql` and numbered 1, 2, 3, ... without gaps. A number means the same change
  on every engine, under the same name: only the SQL dialect differs (a test compares them).
- The schema version only moves forward: a database whose version is above the highest script
  this code ships was written by a newer CaseBridge, and is refused (`SchemaTooNew`).
"""

from __future__ import annotations

import importlib.resources
import re
from dataclasses import dataclass

from protocol.errors import StorageUnavailable

_MIGRATION_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class SchemaTooNew(StorageUnavailable):
    title = "Database schema too new"
    remedy = "This database was written by a newer CaseBridge; upgrade the broker before starting it."


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    script: str


def numbered_scripts(package: str) -> list[Migration]:
    """The migration scripts shipped in `package`, in order (1, 2, 3, ...)."""
    found: list[Migration] = []
    for entry in importlib.resources.files(package).iterdir():
        match = _MIGRATION_NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations in {package} must be numbered 0001, 0002, ... without gaps")
    return found


def too_new(current: int, known: int, where: str) -> SchemaTooNew:
    return SchemaTooNew(
        f"the database has schema version {current}, but this broker knows only up to {known}. "
        f"Upgrade CaseBridge before starting the broker on {where}.",
        reason=f"schema version {current} > {known}",
    )
