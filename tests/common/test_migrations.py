"""The Alembic migrations create exactly the schema the models declare."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from noctis_common.db import Database
from noctis_common.db.models import Base


def test_migrations_match_models(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert differences == []
    finally:
        database.dispose()


def test_upgrade_twice_is_harmless(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        database.upgrade()
        tables = set(inspect(database.engine).get_table_names())
        assert {"patient", "study", "series", "instance", "outbox_event"} <= tables
    finally:
        database.dispose()
