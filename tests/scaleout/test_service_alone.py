"""Each service runs alone over PostgreSQL, migrated by the job, with its own readiness."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.scaleout.conftest import create_database, drop_database
from tests.scaleout.processes import ServiceProcess, dimse_gateway

pytestmark = [pytest.mark.scaleout, pytest.mark.slow, pytest.mark.postgres]

# Module, and the dependencies its readiness reports.
SERVICES = {
    "qido": ("noctis_qido", {"database"}),
    "wado": ("noctis_wado", {"database", "object_store"}),
    "stow": ("noctis_stow", {"database", "object_store"}),
    "events": ("noctis_events", {"database"}),
}


def test_each_service_runs_alone(
    migrated_database: str, tmp_path: Path, services: list[ServiceProcess]
) -> None:
    environment = {
        "NOCTIS_DATABASE_URL": migrated_database,
        "NOCTIS_DB_MIGRATE_ON_START": "false",
    }
    for name, (module, _) in sorted(SERVICES.items()):
        services.append(ServiceProcess(name, module, environment, tmp_path))
    gateway = dimse_gateway("ingest-scp", environment, tmp_path)
    services.append(gateway)
    for service in services:
        service.start(wait=False)
    for service in services:
        service.wait_until_ready()

    live = {
        service.name: httpx.get(f"{service.url}/health/live", timeout=10) for service in services
    }
    ready = {
        service.name: httpx.get(f"{service.url}/health/ready", timeout=10) for service in services
    }
    gateway_metrics = httpx.get(f"{gateway.url}/metrics", timeout=10)
    returncodes = {service.name: service.terminate() for service in services}

    for service in services:
        assert live[service.name].status_code == 200, service.name
        assert ready[service.name].status_code == 200, service.name
        assert returncodes[service.name] == 0, service.log_tail()
        assert "applying index migrations" not in service.log_text(), service.name
    for name, (_, dependencies) in SERVICES.items():
        assert set(ready[name].json()["dependencies"]) == dependencies, name
    assert set(ready["ingest-scp"].json()["dependencies"]) == {"database", "object_store"}
    assert "noctis_dimse_active_associations" in gateway_metrics.text


def test_service_refuses_outdated_index(
    postgres_server: str, tmp_path: Path, services: list[ServiceProcess]
) -> None:
    database_url = create_database(postgres_server)
    environment = {"NOCTIS_DATABASE_URL": database_url, "NOCTIS_DB_MIGRATE_ON_START": "false"}
    service = ServiceProcess("qido", "noctis_qido", environment, tmp_path)
    services.append(service)
    try:
        service.start(wait=False)
        returncode = service.wait_for_exit()
    finally:
        drop_database(postgres_server, database_url)

    assert returncode == 1
    assert "Noctis QIDO-RS cannot start" in service.log_text()
    assert "run `python -m noctis_common.db upgrade`" in service.log_text()


def test_service_reports_unreachable_database(
    tmp_path: Path, services: list[ServiceProcess]
) -> None:
    closed_port_url = "postgresql+psycopg://noctis@127.0.0.1:1/absent"
    service = ServiceProcess(
        "wado", "noctis_wado", {"NOCTIS_DATABASE_URL": closed_port_url}, tmp_path
    )
    services.append(service)

    service.start(wait=False)
    returncode = service.wait_for_exit()

    assert returncode == 1
    assert "opening the index database postgresql+psycopg://noctis@127.0.0.1:1/absent failed" in (
        service.log_text()
    )
