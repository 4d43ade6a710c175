"""Index database: engine set-up, sessions and schema migrations."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# The command that brings an index up to date; services name it when the index is behind.
UPGRADE_COMMAND = "python -m noctis_common.db upgrade"
# Key of the PostgreSQL advisory lock that lets one process at a time apply migrations.
MIGRATION_LOCK_KEY = 0x4E4F4354  # "NOCT"


class IndexSchemaOutdatedError(RuntimeError):
    """The index database lacks migrations that this version of Noctis needs."""


def _configure_sqlite(engine: Engine) -> None:
    """Make SQLite durable and safe for several writer threads and processes.

    WAL lets readers run during a write; ``synchronous=FULL`` makes each commit
    durable before it returns, which the acknowledgement rule needs. Write
    transactions start with ``BEGIN IMMEDIATE`` (see :func:`write_session`) so two
    writers queue on the busy timeout instead of failing when a read upgrades.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook emit BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("noctis_write"):
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")


class Database:
    """The index engine with a session factory for reads and one for writes.

    The pool arguments apply to server databases (PostgreSQL); a SQLite index uses
    SQLAlchemy's default pool for files.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_recycle_s: int = 1800,
        pool_timeout_s: float = 30.0,
        connect_timeout_s: int = 10,
    ) -> None:
        parsed = make_url(url)
        self.url = url
        # hide_parameters keeps bound values, patient names among them, out of the
        # messages of database errors, which end up in logs.
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 30},
                hide_parameters=True,
            )
            _configure_sqlite(self.engine)
        else:
            connect_args: dict[str, Any] = {}
            if parsed.get_backend_name() == "postgresql":
                connect_args["connect_timeout"] = connect_timeout_s
            self.engine = create_engine(
                url,
                pool_pre_ping=True,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_recycle=pool_recycle_s,
                pool_timeout=pool_timeout_s,
                connect_args=connect_args,
                hide_parameters=True,
            )
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        # Serialises this process's SQLite write transactions. See write_transaction().
        self.sqlite_writer_lock = threading.Lock()
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_engine = self.engine.execution_options(noctis_write=True)
        self._write_sessions = sessionmaker(self._write_engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        """Open the index that ``settings`` names, with its connection pool settings."""
        return cls(
            settings.resolved_database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            pool_recycle_s=settings.db_pool_recycle_s,
            pool_timeout_s=settings.db_pool_timeout_s,
            connect_timeout_s=settings.db_connect_timeout_s,
        )

    def read_session(self) -> Session:
        return self._read_sessions()

    def write_session(self) -> Session:
        """Open a session whose transaction takes the write lock on SQLite at once."""
        return self._write_sessions()

    @contextmanager
    def write_transaction(self) -> Iterator[Connection]:
        """Open a connection in a write transaction, committed when the block ends without error.

        For Core statements on hot paths. The transaction takes the write lock on
        SQLite at once, like :meth:`write_session`. On SQLite the threads of this
        process also queue on :attr:`sqlite_writer_lock` first: SQLite's own busy
        handler makes a waiting writer sleep 1, 2, 5, 10 ms and longer between tries,
        while a thread lock hands over at once.
        """
        if not self.is_sqlite:
            with self._write_engine.begin() as connection:
                yield connection
            return
        with self.sqlite_writer_lock, self._write_engine.begin() as connection:
            yield connection

    def upgrade(self) -> None:
        """Apply every pending schema migration."""
        upgrade_database(self.engine)

    def check(self) -> None:
        """Run a trivial query; raises :class:`sqlalchemy.exc.SQLAlchemyError` on failure."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def schema_revision(self) -> str | None:
        """Return the Alembic revision the index is at, or ``None`` for an empty index."""
        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def require_current_schema(self) -> None:
        """Raise :class:`IndexSchemaOutdatedError` when migrations are pending.

        An index at a revision this version does not know was migrated by a newer
        version, which happens while a rolling upgrade replaces old processes. Its
        migrations only add, so the index is accepted with a warning.
        """
        scripts = ScriptDirectory.from_config(alembic_config())
        head = scripts.get_current_head()
        current = self.schema_revision()
        if current == head:
            return
        known = {script.revision for script in scripts.walk_revisions()}
        if current is not None and current not in known:
            logger.warning(
                "the index is at revision %s, which this version does not know (its newest "
                "is %s); a newer version migrated it",
                current,
                head,
            )
            return
        raise IndexSchemaOutdatedError(
            f"the index database is at schema revision {current or 'none (empty)'} but "
            f"this version needs revision {head}; run `{UPGRADE_COMMAND}` with the same "
            "NOCTIS_DATABASE_URL (the migration job), or set NOCTIS_DB_MIGRATE_ON_START=true"
        )

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine) -> None:
    """Apply pending migrations; on PostgreSQL one process at a time.

    Replicas that start together with ``NOCTIS_DB_MIGRATE_ON_START`` all call this. On
    PostgreSQL an advisory lock makes the others wait, and they then find nothing to do.
    """
    logger.info("applying index migrations on %s", engine.url.render_as_string(hide_password=True))
    if engine.dialect.name != "postgresql":
        command.upgrade(alembic_config(engine), "head")
        return
    with engine.connect() as lock_connection:
        lock_connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        try:
            command.upgrade(alembic_config(engine), "head")
        finally:
            lock_connection.execute(
                text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
            lock_connection.commit()
