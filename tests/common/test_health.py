"""Liveness and readiness endpoints: which dependencies they check and how they fail."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from noctis_common.context import ArchiveContext
from noctis_common.health import Dependency, ReadinessProbe
from noctis_common.settings import Settings
from noctis_common.web import create_app


@pytest.fixture
def health_client(context: ArchiveContext) -> Iterator[TestClient]:
    app = create_app("test", [], context.settings, context)
    with TestClient(app) as client:
        yield client


def test_live_answers_alive(health_client: TestClient) -> None:
    response = health_client.get("/health/live")

    assert response.status_code == 200
    assert response.json() == {"status": "alive"}


def test_plain_health_unchanged(health_client: TestClient) -> None:
    assert health_client.get("/health").json() == {"status": "ok"}


def test_ready_checks_database_and_store(health_client: TestClient) -> None:
    response = health_client.get("/health/ready")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert body["dependencies"]["database"] == {"status": "ok", "required": True}
    assert body["dependencies"]["object_store"] == {"status": "ok", "required": True}


def test_ready_without_broker_in_process(health_client: TestClient) -> None:
    body = health_client.get("/health/ready").json()

    assert "broker" not in body["dependencies"]


def test_ready_names_missing_object_store(
    health_client: TestClient, context: ArchiveContext
) -> None:
    shutil.rmtree(context.settings.objects_dir)

    response = health_client.get("/health/ready")

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "not ready"
    assert body["failing"] == ["object_store"]
    assert "is missing" in body["dependencies"]["object_store"]["error"]
    assert body["dependencies"]["database"]["status"] == "ok"


@pytest.mark.postgres
def test_ready_names_dropped_database(postgres_server: str, tmp_path: Path) -> None:
    name = f"health_{uuid.uuid4().hex[:12]}"
    admin = create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    settings = Settings(
        data_dir=tmp_path / "var", database_url=f"{postgres_server}/{name}", auth_mode="off"
    )
    context = ArchiveContext.create(settings)
    try:
        app = create_app("test", [], settings, context)
        with TestClient(app) as client:
            assert client.get("/health/ready").status_code == 200
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))

            response = client.get("/health/ready")
    finally:
        context.close()
        admin.dispose()

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["database"]
    assert name in body["dependencies"]["database"]["error"]


def test_only_required_dependencies_checked(context: ArchiveContext) -> None:
    app = create_app(
        "test",
        [],
        context.settings,
        context,
        required_dependencies=[Dependency.DATABASE],
        optional_dependencies=[],
    )
    shutil.rmtree(context.settings.objects_dir)
    with TestClient(app) as client:
        response = client.get("/health/ready")

    assert response.status_code == 200
    assert list(response.json()["dependencies"]) == ["database"]


class BlockingStore:
    """An object store whose check blocks until released, like a hung S3 endpoint."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        self.release.wait(timeout=30)


def test_hung_check_times_out_once(sqlite_settings: Settings) -> None:
    settings = sqlite_settings.model_copy(update={"readiness_timeout_s": 0.2})
    context = ArchiveContext.create(settings)
    store = BlockingStore()
    context.store = store  # type: ignore[assignment]
    try:
        probe = ReadinessProbe(context, [Dependency.DATABASE, Dependency.OBJECT_STORE])
        first = probe.check()
        second = probe.check()
    finally:
        store.release.set()
        context.close()

    assert not first.ready
    assert first.failing == ["object_store"]
    assert first.to_json()["dependencies"]["object_store"]["error"] == (
        "check timed out after 0.2 s"
    )
    assert not second.ready
    assert store.calls == 1


def test_shutting_down_is_not_ready(context: ArchiveContext) -> None:
    probe = ReadinessProbe(context, [Dependency.DATABASE])
    probe.shutting_down = True

    report = probe.check()

    assert report.status_code == 503
    assert report.to_json()["status"] == "shutting down"


def test_hung_optional_check_never_waited(sqlite_settings: Settings) -> None:
    context = ArchiveContext.create(sqlite_settings)
    broker = BlockingStore()
    context.kafka_publisher = broker  # type: ignore[assignment]
    try:
        probe = ReadinessProbe(context, [Dependency.DATABASE], optional=[Dependency.BROKER])
        first = probe.check()
        second = probe.check()
    finally:
        broker.release.set()
        context.kafka_publisher = None
        context.close()

    assert first.ready
    assert first.to_json()["dependencies"]["broker"] == {"status": "pending", "required": False}
    assert second.ready
    assert broker.calls == 1


class FailingBroker:
    """A publisher whose check fails at once, like a broker that refuses connections."""

    def check(self) -> None:
        raise ConnectionRefusedError("broker refused the connection")


def test_optional_check_reports_last_result(sqlite_settings: Settings) -> None:
    context = ArchiveContext.create(sqlite_settings)
    context.kafka_publisher = FailingBroker()  # type: ignore[assignment]
    try:
        probe = ReadinessProbe(context, [Dependency.DATABASE], optional=[Dependency.BROKER])
        probe.check()
        for _ in range(100):
            report = probe.check()
            if not report.statuses[-1].pending:
                break
            time.sleep(0.02)
    finally:
        context.kafka_publisher = None
        context.close()

    broker = report.to_json()["dependencies"]["broker"]
    assert report.ready
    assert broker["status"] == "failed"
    assert broker["error"] == "ConnectionRefusedError: broker refused the connection"


@pytest.mark.parametrize("path", ["/health", "/health/live", "/health/ready"])
def test_health_answers_head(health_client: TestClient, path: str) -> None:
    response = health_client.head(path)

    assert response.status_code == 200
