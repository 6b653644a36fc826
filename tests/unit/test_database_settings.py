"""Choosing the storage engine in the settings: `database_url` names PostgreSQL, never with a
password in it; anything else is a clear ConfigError before the broker starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.settings import from_values
from broker.storage.factory import engine_name
from protocol.errors import ConfigError

BASE = {
    "broker_id": "TH-CASEBRIDGE",
    "data_dir": "ข้อมูล",
    "root_cert_files": ["roots/th-root.cert"],
}


def test_no_database_url_means_sqlite_in_the_data_directory() -> None:
    settings = from_values(BASE, base_dir=Path("/srv/casebridge"), environ={})
    assert engine_name(settings) == "sqlite"
    assert settings.database_url == ""


def test_a_postgresql_url_from_the_file_or_the_environment_selects_postgresql() -> None:
    url = "postgresql://casebridge_app@db.internal:5432/casebridge"
    settings = from_values(
        {**BASE, "database_url": url},
        base_dir=Path("/srv"),
        environ={"CASEBRIDGE_DATABASE_OWNER_URL": "postgres://casebridge_owner@db.internal/casebridge"},
    )
    assert engine_name(settings) == "postgresql"
    assert settings.database_url == url
    assert settings.database_owner_url == "postgres://casebridge_owner@db.internal/casebridge"
    assert settings.database_max_connections == 10


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("database_url", "postgresql://casebridge_app:hunter2@db/casebridge"),
        ("database_url", "mysql://casebridge@db/casebridge"),
        ("database_url", "postgresql://casebridge@db"),
        ("database_url", "postgresql://casebridge@db:notaport/casebridge"),
        ("database_owner_url", "postgresql://owner@db/casebridge"),
        ("database_max_connections", 1),
    ],
)
def test_bad_database_settings_are_refused_by_name(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=name):
        from_values({**BASE, name: value}, base_dir=Path("/srv"), environ={})
