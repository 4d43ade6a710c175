"""Index database: engine set-up, sessions and schema migrations."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000


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
    """The index engine with a session factory for reads and one for writes."""

    def __init__(self, url: str) -> None:
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
            self.engine = create_engine(url, pool_pre_ping=True, hide_parameters=True)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._read_sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(
            self.engine.execution_options(noctis_write=True), expire_on_commit=False
        )

    def read_session(self) -> Session:
        return self._read_sessions()

    def write_session(self) -> Session:
        """Open a session whose transaction takes the write lock on SQLite at once."""
        return self._write_sessions()

    def upgrade(self) -> None:
        """Apply every pending schema migration."""
        upgrade_database(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine) -> None:
    logger.info("applying index migrations on %s", engine.url.render_as_string(hide_password=True))
    command.upgrade(alembic_config(engine), "head")
