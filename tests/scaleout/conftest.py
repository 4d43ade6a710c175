"""Fixtures of the scale-out tests: an index database that the migration job prepared."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.scaleout.processes import ServiceProcess, run_migration_job


def create_database(postgres_server: str) -> str:
    """Create an empty database on the test cluster and return its URL."""
    name = f"scaleout_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"{postgres_server}/{name}"


def drop_database(postgres_server: str, database_url: str) -> None:
    name = database_url.rsplit("/", 1)[1]
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@pytest.fixture(scope="module")
def migrated_database(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A PostgreSQL index that ``python -m noctis_common.db upgrade`` brought to head."""
    database_url = create_database(postgres_server)
    log_dir = tmp_path_factory.mktemp("migration-job")
    try:
        run_migration_job({"NOCTIS_DATABASE_URL": database_url}, log_dir)
        yield database_url
    finally:
        drop_database(postgres_server, database_url)


@pytest.fixture
def services(tmp_path: Path) -> Iterator[list[ServiceProcess]]:
    """Collects the processes a test starts and stops those that still run."""
    started: list[ServiceProcess] = []
    yield started
    for service in started:
        service.close()
