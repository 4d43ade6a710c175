"""Snapshots and restores of the index database: SQLite's backup API, pg_dump/pg_restore.

Each snapshot also returns the object keys that its instance rows reference, read from
the same snapshot, so a backup copies exactly the objects its index needs.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

from noctis_common.backup.objects import BackupError

logger = logging.getLogger(__name__)

SQLITE_FILE = "index.sqlite"
POSTGRESQL_FILE = "index.pgdump"
INDEXED_OBJECTS_SQL = "SELECT object_key, object_size FROM instance ORDER BY object_key"
SCHEMA_REVISION_SQL = "SELECT version_num FROM alembic_version"


@dataclass(frozen=True)
class IndexSnapshot:
    """The file a snapshot wrote and what its rows reference."""

    kind: str
    file_name: str
    schema_revision: str | None
    objects: list[tuple[str, int]]


def database_kind(database_url: str) -> str:
    """Return ``sqlite`` or ``postgresql`` for an index URL, or raise :class:`BackupError`."""
    backend = make_url(database_url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise BackupError(
            f"backups support SQLite and PostgreSQL indexes, not {backend!r} (NOCTIS_DATABASE_URL)"
        )
    return backend


def sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError(f"the SQLite index {database_url!r} is not a file; nothing to back up")
    return Path(database)


def find_postgres_tool(name: str) -> str:
    """Return the path of a PostgreSQL client tool: on PATH, else the newest Debian install."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise BackupError(
        f"PostgreSQL's {name} is not installed; install the PostgreSQL client tools "
        "(Debian: postgresql-client) of the server's major version or newer"
    )


def libpq_connection(database_url: str) -> tuple[str, dict[str, str]]:
    """Return a libpq URL without the password, and the environment that carries it.

    The password goes into ``PGPASSWORD`` so that it does not show in the process list.
    """
    url: URL = make_url(database_url).set(drivername="postgresql")
    environment = dict(os.environ)
    if url.password is not None:
        environment["PGPASSWORD"] = str(url.password)
        url = url.set(password=None)
    return url.render_as_string(hide_password=False), environment


def _run(command: list[str], environment: dict[str, str], what: str) -> None:
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, check=False
    )
    if completed.returncode != 0:
        raise BackupError(
            f"{what} failed with exit status {completed.returncode}: "
            f"{completed.stderr.strip() or completed.stdout.strip()}"
        )


# -- snapshots ----------------------------------------------------------------------------


def snapshot_index(database_url: str, target_dir: Path) -> IndexSnapshot:
    """Write a consistent copy of the index into ``target_dir`` while services keep running."""
    if database_kind(database_url) == "sqlite":
        return _snapshot_sqlite(sqlite_path(database_url), target_dir / SQLITE_FILE)
    return _snapshot_postgresql(database_url, target_dir / POSTGRESQL_FILE)


def _snapshot_sqlite(source: Path, target: Path) -> IndexSnapshot:
    """Copy the SQLite index with the online backup API.

    The copy is made in one step under one read transaction, so it is a consistent
    snapshot. In WAL mode writers go on meanwhile.
    """
    if not source.is_file():
        raise BackupError(f"the SQLite index {source} does not exist; check NOCTIS_DATA_DIR")
    with closing(sqlite3.connect(source)) as live, closing(sqlite3.connect(target)) as copy:
        live.backup(copy)
        objects = [(str(key), int(size)) for key, size in copy.execute(INDEXED_OBJECTS_SQL)]
        revision = copy.execute(SCHEMA_REVISION_SQL).fetchone()
    return IndexSnapshot("sqlite", target.name, revision[0] if revision else None, objects)


def _snapshot_postgresql(database_url: str, target: Path) -> IndexSnapshot:
    """Dump the PostgreSQL index with pg_dump in the snapshot the object keys are read in.

    A repeatable-read transaction exports its snapshot, reads the object keys, and
    keeps the snapshot open while ``pg_dump --snapshot`` dumps exactly that state.
    """
    pg_dump = find_postgres_tool("pg_dump")
    conninfo, environment = libpq_connection(database_url)
    engine = create_engine(database_url, isolation_level="REPEATABLE READ")
    try:
        with engine.connect() as connection:
            snapshot_id = str(connection.execute(text("SELECT pg_export_snapshot()")).scalar())
            objects = [
                (str(key), int(size)) for key, size in connection.execute(text(INDEXED_OBJECTS_SQL))
            ]
            revision = connection.execute(text(SCHEMA_REVISION_SQL)).scalar()
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    f"--snapshot={snapshot_id}",
                    f"--file={target}",
                    f"--dbname={conninfo}",
                ],
                environment,
                "pg_dump of the index",
            )
            connection.rollback()
    finally:
        engine.dispose()
    return IndexSnapshot("postgresql", target.name, str(revision) if revision else None, objects)


# -- restore ------------------------------------------------------------------------------


def restore_index(database_url: str, snapshot_file: Path, kind: str, *, replace: bool) -> None:
    """Restore the index of a backup into the database that ``database_url`` names.

    Without ``replace`` the target must be empty: no SQLite file with tables, or a
    PostgreSQL database without tables in its schema.
    """
    target_kind = database_kind(database_url)
    if target_kind != kind:
        raise BackupError(
            f"the backup contains a {kind} index but NOCTIS_DATABASE_URL names a {target_kind} "
            "database; restore into the same kind of database"
        )
    if kind == "sqlite":
        _restore_sqlite(snapshot_file, sqlite_path(database_url), replace=replace)
    else:
        _restore_postgresql(database_url, snapshot_file, replace=replace)


def _restore_sqlite(source: Path, target: Path, *, replace: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not replace:
        with closing(sqlite3.connect(target)) as existing:
            tables = existing.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if tables:
            raise BackupError(
                f"the SQLite index {target} exists and is not empty; stop the services and "
                "move it away, or pass --replace to overwrite it"
            )
    with closing(sqlite3.connect(source)) as backup, closing(sqlite3.connect(target)) as restored:
        backup.backup(restored)


def _restore_postgresql(database_url: str, source: Path, *, replace: bool) -> None:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            tables = connection.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = current_schema()"
                )
            ).scalar()
    finally:
        engine.dispose()
    if tables and not replace:
        raise BackupError(
            "the PostgreSQL index database is not empty; restore into a new, empty "
            "database, or pass --replace to drop and recreate the backed-up tables"
        )
    conninfo, environment = libpq_connection(database_url)
    command = [
        find_postgres_tool("pg_restore"),
        "--no-owner",
        "--no-privileges",
        "--exit-on-error",
        "--single-transaction",
        f"--dbname={conninfo}",
    ]
    if replace:
        command += ["--clean", "--if-exists"]
    _run([*command, str(source)], environment, "pg_restore of the index")
