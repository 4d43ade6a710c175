"""Migrations as a job: the schema check, the migration command and the connection pool."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from noctis_common.context import ArchiveContext
from noctis_common.db import UPGRADE_COMMAND, Database, IndexSchemaOutdatedError
from noctis_common.settings import Settings


def test_empty_index_is_outdated(database_url: str) -> None:
    database = Database(database_url)
    try:
        with pytest.raises(IndexSchemaOutdatedError, match=re.escape(UPGRADE_COMMAND)):
            database.require_current_schema()
    finally:
        database.dispose()


def test_upgraded_index_is_current(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        database.require_current_schema()
    finally:
        database.dispose()


def test_index_one_migration_behind_is_outdated(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        head = database.schema_revision()
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))

        with pytest.raises(IndexSchemaOutdatedError) as raised:
            database.require_current_schema()
    finally:
        database.dispose()

    assert f"at schema revision 0001 but this version needs revision {head}" in str(raised.value)


def test_newer_unknown_revision_is_accepted(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        with database.engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))

        database.require_current_schema()
    finally:
        database.dispose()

    assert "a newer version migrated it" in caplog.text


def test_context_without_migration_refuses_empty_index(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", db_migrate_on_start=False, auth_mode="off")

    with pytest.raises(IndexSchemaOutdatedError, match="NOCTIS_DB_MIGRATE_ON_START"):
        ArchiveContext.create(settings)


def test_context_migrates_by_default(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var", auth_mode="off")

    context = ArchiveContext.create(settings)
    try:
        context.database.require_current_schema()
    finally:
        context.close()


def run_db_command(command: str, database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noctis_common.db", command],
        env={**os.environ, "NOCTIS_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_db_command_checks_and_upgrades(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'index.sqlite'}"

    before = run_db_command("check", database_url)
    upgrade = run_db_command("upgrade", database_url)
    after = run_db_command("check", database_url)

    assert before.returncode == 1
    assert UPGRADE_COMMAND in before.stderr
    assert upgrade.returncode == 0, upgrade.stderr
    assert after.returncode == 0, after.stderr


@pytest.mark.postgres
def test_pool_settings_reach_engine(postgres_url: str) -> None:
    settings = Settings(
        database_url=postgres_url,
        db_pool_size=3,
        db_max_overflow=2,
        db_pool_recycle_s=600,
        db_pool_timeout_s=7.5,
        auth_mode="off",
    )
    database = Database.from_settings(settings)
    try:
        pool = database.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool._max_overflow == 2  # type: ignore[attr-defined]
        assert pool._recycle == 600
        assert pool._timeout == 7.5  # type: ignore[attr-defined]
    finally:
        database.dispose()


@pytest.mark.postgres
def test_pool_timeout_fails_waiting_request(postgres_url: str) -> None:
    database = Database(postgres_url, pool_size=1, max_overflow=0, pool_timeout_s=0.2)
    try:
        with (
            database.engine.connect(),
            pytest.raises(PoolTimeoutError, match="QueuePool limit of size 1 overflow 0"),
        ):
            database.check()
    finally:
        database.dispose()


@pytest.mark.postgres
@pytest.mark.slow
def test_concurrent_upgrade_jobs_both_succeed(postgres_url: str) -> None:
    jobs = [
        subprocess.Popen(
            [sys.executable, "-m", "noctis_common.db", "upgrade"],
            env={**os.environ, "NOCTIS_DATABASE_URL": postgres_url},
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [job.communicate(timeout=120)[1] for job in jobs]
    database = Database(postgres_url)
    try:
        database.require_current_schema()
    finally:
        database.dispose()

    assert jobs[0].returncode == 0, outputs[0]
    assert jobs[1].returncode == 0, outputs[1]
