"""Prometheus metrics: the HTTP middleware, /metrics, and what STOW-RS and C-STORE count."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.storage import StorageError
from noctis_common.web import create_app
from tests.stow.bodies import content_type, dicom_body, part10_bytes
from tests.support import ArchiveProcess, dataset_bytes, make_dataset, require_tool

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_exposition(text: str) -> Samples:
    """Return every sample of a text exposition, keyed by name and label set."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """Return one sample's value; a series not yet created counts as 0."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    """Return the sum of a metric over all its label sets."""
    return sum(sample for (sample_name, _), sample in samples.items() if sample_name == name)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def sqlite_context(sqlite_settings: Settings) -> Iterator[ArchiveContext]:
    """An archive context on SQLite whose outbox relay is not started."""
    archive_context = ArchiveContext.create(sqlite_settings)
    try:
        yield archive_context
    finally:
        archive_context.close()


@pytest.fixture
def client(sqlite_context: ArchiveContext) -> Iterator[TestClient]:
    """A test client for QIDO-RS and STOW-RS; one database is enough for the middleware."""
    from noctis_qido.routes import router as qido_router
    from noctis_stow.routes import router as stow_router

    app = create_app(
        "Noctis metrics test", [qido_router, stow_router], sqlite_context.settings, sqlite_context
    )
    with TestClient(app) as test_client:
        yield test_client


def test_metrics_endpoint_serves_text_format(client: TestClient) -> None:
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    assert "noctis_http_requests_total" in response.text


def test_route_label_is_template_not_path(client: TestClient) -> None:
    study_instance_uid = "1.2.826.0.1.3680043.8.498.1234567890"
    before = parse_exposition(client.get("/metrics").text)

    response = client.get(f"/dicom-web/studies/{study_instance_uid}/series")
    after = parse_exposition(client.get("/metrics").text)

    labels = {
        "method": "GET",
        "route": "/dicom-web/studies/{study_instance_uid}/series",
        "status": str(response.status_code),
    }
    requests_before = value(before, "noctis_http_requests_total", **labels)
    assert value(after, "noctis_http_requests_total", **labels) == requests_before + 1
    durations_before = value(before, "noctis_http_request_duration_seconds_count", **labels)
    assert (
        value(after, "noctis_http_request_duration_seconds_count", **labels) == durations_before + 1
    )
    routes = {
        dict(label_set)["route"]
        for name, label_set in after
        if name == "noctis_http_requests_total"
    }
    assert not any(study_instance_uid in route for route in routes)


def test_unmatched_path_counted_as_unmatched(client: TestClient) -> None:
    before = parse_exposition(client.get("/metrics").text)

    response = client.get("/no/such/path/1.2.3.4")
    after = parse_exposition(client.get("/metrics").text)

    assert response.status_code == 404
    labels = {"method": "GET", "route": "(unmatched)", "status": "404"}
    assert value(after, "noctis_http_requests_total", **labels) == (
        value(before, "noctis_http_requests_total", **labels) + 1
    )


def test_unknown_method_counted_as_other(client: TestClient) -> None:
    before = parse_exposition(client.get("/metrics").text)

    client.request("BREW", "/health")
    after = parse_exposition(client.get("/metrics").text)

    assert total(after, "noctis_http_requests_total") > total(before, "noctis_http_requests_total")
    methods = {
        dict(label_set)["method"]
        for name, label_set in after
        if name == "noctis_http_requests_total"
    }
    assert "BREW" not in methods
    assert "other" in methods


def test_outbox_depth_counts_unpublished_events(client: TestClient) -> None:
    before = parse_exposition(client.get("/metrics").text)

    response = client.post(
        "/dicom-web/studies",
        content=dicom_body([make_dataset(), make_dataset()]),
        headers={"Content-Type": content_type()},
    )
    after = parse_exposition(client.get("/metrics").text)

    assert response.status_code == 200
    assert value(after, "noctis_outbox_pending_events") == (
        value(before, "noctis_outbox_pending_events") + 2
    )
    assert value(after, "noctis_forward_queue_jobs", status="pending") == 0


def test_store_pipeline_counts_stored_instances(client: TestClient) -> None:
    dataset = make_dataset()
    before = parse_exposition(client.get("/metrics").text)

    first = client.post(
        "/dicom-web/studies",
        content=dicom_body([dataset]),
        headers={"Content-Type": content_type()},
    )
    again = client.post(
        "/dicom-web/studies",
        content=dicom_body([dataset]),
        headers={"Content-Type": content_type()},
    )
    after = parse_exposition(client.get("/metrics").text)

    assert first.status_code == 200
    assert again.status_code == 200
    for outcome in ("stored", "duplicate"):
        assert value(after, "noctis_store_instances_total", outcome=outcome) == (
            value(before, "noctis_store_instances_total", outcome=outcome) + 1
        ), outcome
        assert value(after, "noctis_store_duration_seconds_count", outcome=outcome) == (
            value(before, "noctis_store_duration_seconds_count", outcome=outcome) + 1
        ), outcome
    # Only the first copy is written: File Meta Information plus the dataset.
    stored_bytes = value(after, "noctis_stored_bytes_total") - value(
        before, "noctis_stored_bytes_total"
    )
    assert stored_bytes > len(part10_bytes(dataset)) - 200
    assert stored_bytes < 2 * len(part10_bytes(dataset))


def test_object_store_failure_counted(
    client: TestClient, sqlite_context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_put(key: str, source: Path) -> None:
        raise StorageError(f"failed to store object {key!r}: disk full")

    monkeypatch.setattr(sqlite_context.archive.store, "put_file", failing_put)
    before = parse_exposition(client.get("/metrics").text)

    response = client.post(
        "/dicom-web/studies",
        content=dicom_body([make_dataset()]),
        headers={"Content-Type": content_type()},
    )
    after = parse_exposition(client.get("/metrics").text)

    assert response.status_code == 503
    assert value(after, "noctis_storage_errors_total", operation="write") == (
        value(before, "noctis_storage_errors_total", operation="write") + 1
    )
    assert value(after, "noctis_store_instances_total", outcome="failed") == (
        value(before, "noctis_store_instances_total", outcome="failed") + 1
    )


def test_database_error_counted(client: TestClient, sqlite_context: ArchiveContext) -> None:
    before = parse_exposition(client.get("/metrics").text)

    with (
        pytest.raises(OperationalError),
        sqlite_context.database.read_session() as session,
    ):
        session.execute(text("SELECT * FROM no_such_table"))
    after = parse_exposition(client.get("/metrics").text)

    assert value(after, "noctis_database_errors_total", error="OperationalError") == (
        value(before, "noctis_database_errors_total", error="OperationalError") + 1
    )


@pytest.mark.slow
@pytest.mark.dcmtk
def test_archive_counts_stow_and_c_store(archive_process: ArchiveProcess, tmp_path: Path) -> None:
    metrics_url = f"{archive_process.http_url}/metrics"
    before = parse_exposition(httpx.get(metrics_url).text)
    stow_dataset = make_dataset(modality="CT")
    c_store_dataset = make_dataset(modality="MR")
    c_store_path = tmp_path / "mr.dcm"
    c_store_dataset.save_as(c_store_path, enforce_file_format=True)

    stow_response = httpx.post(
        f"{archive_process.dicomweb_url}/studies",
        content=dicom_body([stow_dataset]),
        headers={"Content-Type": content_type()},
    )
    assert stow_response.status_code == 200, stow_response.text
    completed = subprocess.run(
        [
            require_tool("storescu"),
            "-aec",
            archive_process.ae_title,
            "127.0.0.1",
            str(archive_process.dimse_port),
            str(c_store_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr

    def scrape() -> Samples:
        return parse_exposition(httpx.get(metrics_url).text)

    # The outbox relay publishes both instance.stored events in the background.
    published_before = value(before, "noctis_outbox_events_published_total")
    assert wait_for(
        lambda: value(scrape(), "noctis_outbox_events_published_total") >= published_before + 2
    )
    # The association is counted when its release is processed, just after storescu exits.
    released_before = value(before, "noctis_dimse_associations_total", outcome="released")
    assert wait_for(
        lambda: (
            value(scrape(), "noctis_dimse_associations_total", outcome="released")
            == released_before + 1
        )
    )
    after = scrape()

    stow_labels = {"method": "POST", "route": "/dicom-web/studies", "status": "200"}
    assert value(after, "noctis_http_requests_total", **stow_labels) == (
        value(before, "noctis_http_requests_total", **stow_labels) + 1
    )
    stored_labels = {"outcome": "stored", "status": "0x0000"}
    assert value(after, "noctis_dimse_store_requests_total", **stored_labels) == (
        value(before, "noctis_dimse_store_requests_total", **stored_labels) + 1
    )
    # The stored file is the received dataset after the archive's own File Meta.
    bytes_before = value(before, "noctis_dimse_stored_bytes_total")
    assert value(after, "noctis_dimse_stored_bytes_total") > bytes_before + len(
        dataset_bytes(c_store_path)
    )
    assert value(after, "noctis_dimse_store_duration_seconds_count") == (
        value(before, "noctis_dimse_store_duration_seconds_count") + 1
    )
    assert value(after, "noctis_dimse_active_associations") == 0
    assert value(after, "noctis_outbox_pending_events") == 0
    # The store pipeline counts both instances, whichever protocol brought them.
    assert value(after, "noctis_store_instances_total", outcome="stored") == (
        value(before, "noctis_store_instances_total", outcome="stored") + 2
    )
    assert value(after, "noctis_store_duration_seconds_count", outcome="stored") == (
        value(before, "noctis_store_duration_seconds_count", outcome="stored") + 2
    )
    assert value(after, "noctis_stored_bytes_total") > value(
        before, "noctis_stored_bytes_total"
    ) + len(dataset_bytes(c_store_path))


@pytest.mark.slow
@pytest.mark.dcmtk
def test_each_service_counts_after_store(tmp_path: Path) -> None:
    from tests.scaleout.processes import ServiceProcess, dimse_gateway, run_migration_job

    # One index and one data folder (so one filesystem object store) for all services.
    shared = {
        "NOCTIS_DATA_DIR": str(tmp_path / "shared"),
        "NOCTIS_DATABASE_URL": f"sqlite:///{tmp_path / 'index.sqlite'}",
        "NOCTIS_DB_MIGRATE_ON_START": "false",
    }
    run_migration_job(shared, tmp_path)
    stow = ServiceProcess("stow", "noctis_stow", shared, tmp_path)
    qido = ServiceProcess("qido", "noctis_qido", shared, tmp_path)
    wado = ServiceProcess("wado", "noctis_wado", shared, tmp_path)
    events = ServiceProcess("events", "noctis_events", shared, tmp_path)
    gateway = dimse_gateway("ingest-scp", shared, tmp_path)
    services = [stow, qido, wado, events, gateway]
    try:
        for service in services:
            service.start(wait=False)
        for service in services:
            service.wait_until_ready()

        def scrape(service: ServiceProcess) -> Samples:
            return parse_exposition(httpx.get(f"{service.url}/metrics").text)

        before = {service.name: scrape(service) for service in services}
        stow_dataset = make_dataset(modality="CT")
        c_store_path = tmp_path / "mr.dcm"
        make_dataset(modality="MR").save_as(c_store_path, enforce_file_format=True)

        stored = httpx.post(
            f"{stow.dicomweb_url}/studies",
            content=dicom_body([stow_dataset]),
            headers={"Content-Type": content_type()},
        )
        assert stored.status_code == 200, stored.text
        sent = subprocess.run(
            [
                require_tool("storescu"),
                "-aec",
                gateway.ae_title,
                "127.0.0.1",
                str(gateway.dimse_port),
                str(c_store_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert sent.returncode == 0, sent.stdout + sent.stderr
        instance_path = (
            f"/studies/{stow_dataset.StudyInstanceUID}/series/{stow_dataset.SeriesInstanceUID}"
            f"/instances/{stow_dataset.SOPInstanceUID}"
        )
        retrieved = httpx.get(
            f"{wado.dicomweb_url}{instance_path}",
            headers={"Accept": 'multipart/related; type="application/dicom"'},
        )
        assert retrieved.status_code == 200, retrieved.text
        searched = httpx.get(f"{qido.dicomweb_url}/studies")
        assert searched.status_code == 200, searched.text
        # The gateway counts the association when it has processed the release.
        assert wait_for(
            lambda: (
                value(scrape(gateway), "noctis_dimse_associations_total", outcome="released")
                == value(
                    before[gateway.name], "noctis_dimse_associations_total", outcome="released"
                )
                + 1
            )
        )
        # Every process runs an outbox relay, and whichever relay claims a batch publishes
        # it, so the two instance.stored events are counted across all processes.
        published_before = sum(
            total(before[service.name], "noctis_outbox_events_published_total")
            for service in services
        )
        assert wait_for(
            lambda: (
                sum(
                    total(scrape(service), "noctis_outbox_events_published_total")
                    for service in services
                )
                >= published_before + 2
            )
        )
        after = {service.name: scrape(service) for service in services}
    finally:
        for service in services:
            service.close()

    def moved(service: ServiceProcess, name: str, **labels: str) -> float:
        return value(after[service.name], name, **labels) - value(
            before[service.name], name, **labels
        )

    # The events service stores nothing: it counts its requests and reads the outbox depth
    # from the shared index on each scrape.
    assert (
        moved(events, "noctis_http_requests_total", method="GET", route="/metrics", status="200")
        >= 1
    )
    assert ("noctis_outbox_pending_events", frozenset()) in after[events.name]
    for service in (stow, gateway):
        assert moved(service, "noctis_store_instances_total", outcome="stored") == 1, service.name
        assert moved(service, "noctis_store_duration_seconds_count", outcome="stored") == 1
        assert moved(service, "noctis_stored_bytes_total") > 0, service.name
    assert (
        moved(gateway, "noctis_dimse_store_requests_total", outcome="stored", status="0x0000") == 1
    )
    assert (
        moved(stow, "noctis_http_requests_total", **http_labels("POST", "/dicom-web/studies")) == 1
    )
    wado_route = (
        "/dicom-web/studies/{study_instance_uid}/series/{series_instance_uid}"
        "/instances/{sop_instance_uid}"
    )
    assert moved(wado, "noctis_http_requests_total", **http_labels("GET", wado_route)) == 1
    assert (
        moved(qido, "noctis_http_requests_total", **http_labels("GET", "/dicom-web/studies")) == 1
    )
    for service in (qido, wado):
        assert moved(service, "noctis_store_instances_total", outcome="stored") == 0, service.name


def http_labels(method: str, route: str) -> dict[str, str]:
    return {"method": method, "route": route, "status": "200"}
