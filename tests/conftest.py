"""Fixtures: settings in a temporary folder, a throwaway PostgreSQL cluster, live servers."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.tansu import TansuBroker
from tests.support import ArchiveProcess, free_port, running_archive

POSTGRES_SUPERUSER = "noctis"

# Tests call the APIs without tokens unless they test access control: every Settings()
# built in this process, and every archive subprocess it starts, has auth off unless the
# test passes auth_mode itself. The access control tests in tests/auth set it explicitly.
os.environ["NOCTIS_AUTH_MODE"] = "off"


def _postgres_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if candidates:
        return candidates[-1]
    raise RuntimeError(
        f"PostgreSQL's {name} is not installed; install Debian's postgresql package "
        "(.ci/run does) to run the PostgreSQL index tests"
    )


def _as_postgres_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root, so root runs it as the 'postgres' user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Start a PostgreSQL cluster on a free loopback port; yield its server URL."""
    initdb = _postgres_binary("initdb")
    pg_ctl = _postgres_binary("pg_ctl")
    # Not under pytest's temporary folder: that one is private to root, and the
    # server runs as the 'postgres' user when the tests run as root.
    root = Path(tempfile.mkdtemp(prefix="noctis-postgres-"))
    data_dir = root / "data"
    data_dir.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data_dir, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres_user(
            [initdb, "-D", str(data_dir), "-U", POSTGRES_SUPERUSER, "--auth=trust", "-E", "UTF8"]
        ),
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres_user(
            [pg_ctl, "-D", str(data_dir), "-o", options, "-l", str(root / "log"), "-w", "start"]
        ),
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://{POSTGRES_SUPERUSER}@127.0.0.1:{port}"
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data_dir), "-m", "immediate", "stop"]),
            check=False,
            capture_output=True,
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedFS]:
    """Start SeaweedFS's S3 server on free loopback ports for the whole session.

    Credentials are checked; ``s3_server.noctis_settings(bucket)`` gives the Settings
    arguments for a bucket. Tests use buckets of their own, so they do not share objects.
    """
    server = SeaweedFS()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """Create an empty database for one test and yield its URL."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{postgres_server}/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The index URL, once for SQLite and once for PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(data_dir=tmp_path / "var", database_url=database_url, auth_mode="off")


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "var", auth_mode="off")


@pytest.fixture
def context(settings: Settings) -> Iterator[ArchiveContext]:
    """An archive context over the index that ``database_url`` selects."""
    archive_context = ArchiveContext.create(settings)
    try:
        yield archive_context
    finally:
        archive_context.close()


@pytest.fixture
def client(context: ArchiveContext) -> Iterator[TestClient]:
    """A test client for QIDO-RS, WADO-RS and STOW-RS over ``context``."""
    from noctis_qido.routes import router as qido_router
    from noctis_stow.delete import router as delete_router
    from noctis_stow.routes import router as stow_router
    from noctis_wado.routes import router as wado_router

    app = create_app(
        "Noctis test",
        [qido_router, wado_router, stow_router, delete_router],
        context.settings,
        context,
    )
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def archive_process(tmp_path: Path) -> Iterator[ArchiveProcess]:
    """``python -m noctis_archive`` on free loopback ports with its data in ``tmp_path``."""
    yield from running_archive(tmp_path / "var")


@pytest.fixture
def kafka_broker() -> Iterator[TansuBroker]:
    """A Tansu Kafka broker with memory storage on a free loopback port, for one test."""
    with TansuBroker() as broker:
        yield broker
