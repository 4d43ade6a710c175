"""DIMSE and forwarding metrics, scraped from /metrics over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from tests.common.test_metrics import Samples, parse_exposition, value
from tests.ingest_scp.helpers import run_dcmtk, running_scp
from tests.ingest_scp.qr_support import (
    NO_PERMISSION_AE,
    find,
    identifier,
    move,
    populate,
    qr_settings,
    storescp,
)
from tests.ingest_scp.test_forwarding import (
    Destination,
    forwarding_scp,
    store_as_modality,
    wait_until,
)
from tests.support import free_port, make_dataset, wait_for_port


@contextmanager
def metrics_client(context: ArchiveContext) -> Iterator[TestClient]:
    """An HTTP app over ``context`` with no DICOMweb routes, for GET /metrics."""
    app = create_app("Noctis metrics test", [], context.settings, context)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def destination() -> Iterator[Destination]:
    """The forwarding destination, not started: each test starts it when it should be up."""
    router = Destination()
    yield router
    router.stop()


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    return parse_exposition(response.text)


def test_forward_counts_failures_then_success(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    ct = make_dataset(modality="CT")
    with (
        forwarding_scp(sqlite_settings, tmp_path, destination) as running,
        metrics_client(running.context) as client,
    ):
        before = scrape(client)
        store_as_modality(running, ct)
        # The destination is down: the first attempt fails and the job waits for a retry.
        assert wait_until(
            lambda: (
                value(scrape(client), "noctis_forward_failed_attempts_total", destination="ROUTER")
                > value(before, "noctis_forward_failed_attempts_total", destination="ROUTER")
            )
        )
        during = scrape(client)
        destination.start()
        assert wait_until(lambda: str(ct.SOPInstanceUID) in destination.received)
        assert wait_until(
            lambda: value(scrape(client), "noctis_forward_queue_jobs", status="pending") == 0
        )
        after = scrape(client)

    assert value(during, "noctis_forward_queue_jobs", status="pending") == 1
    assert value(after, "noctis_forward_instances_total", destination="ROUTER") == (
        value(before, "noctis_forward_instances_total", destination="ROUTER") + 1
    )
    assert value(after, "noctis_forward_jobs_given_up_total", destination="ROUTER") == value(
        before, "noctis_forward_jobs_given_up_total", destination="ROUTER"
    )
    stored = {"outcome": "stored", "status": "0x0000"}
    assert value(after, "noctis_dimse_store_requests_total", **stored) == (
        value(before, "noctis_dimse_store_requests_total", **stored) + 1
    )
    assert value(after, "noctis_dimse_associations_total", outcome="released") == (
        value(before, "noctis_dimse_associations_total", outcome="released") + 1
    )
    assert value(after, "noctis_outbox_events_published_total") >= (
        value(before, "noctis_outbox_events_published_total") + 1
    )


def test_forward_given_up_counted(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    with (
        forwarding_scp(sqlite_settings, tmp_path, destination, forward_max_attempts=1) as running,
        metrics_client(running.context) as client,
    ):
        before = scrape(client)
        store_as_modality(running, make_dataset(modality="CT"))
        assert wait_until(
            lambda: value(scrape(client), "noctis_forward_queue_jobs", status="failed") == 1
        )
        after = scrape(client)

    assert value(after, "noctis_forward_jobs_given_up_total", destination="ROUTER") == (
        value(before, "noctis_forward_jobs_given_up_total", destination="ROUTER") + 1
    )
    assert value(after, "noctis_forward_queue_jobs", status="pending") == 0


@pytest.mark.dcmtk
def test_query_retrieve_counted_by_status(sqlite_settings: Settings, tmp_path: Path) -> None:
    destination_port = free_port()
    settings = qr_settings(sqlite_settings, tmp_path / "config", destination_port)
    with (
        running_scp(settings) as running,
        metrics_client(running.context) as client,
        storescp(destination_port, tmp_path / "received"),
    ):
        catalog = populate(running.context)
        study_instance_uid = next(iter(catalog.series))
        before = scrape(client)
        find(running.port, identifier("STUDY", StudyInstanceUID=""))
        find(running.port, identifier("STUDY"), ae_title=NO_PERMISSION_AE)
        move(running.port, identifier("STUDY", StudyInstanceUID=study_instance_uid))
        move(running.port, identifier("STUDY", StudyInstanceUID=generate_uid()))
        after = scrape(client)

    def increase(command: str, status: str) -> float:
        labels = {"command": command, "status": status}
        return value(after, "noctis_dimse_query_retrieve_requests_total", **labels) - value(
            before, "noctis_dimse_query_retrieve_requests_total", **labels
        )

    assert increase("C-FIND", "0x0000") == 1
    assert increase("C-FIND", "0x0124") == 1
    # A study with instances, then a study that matches nothing: both end in Success.
    assert increase("C-MOVE", "0x0000") == 2


@pytest.mark.slow
@pytest.mark.dcmtk
def test_standalone_gateway_serves_metrics_port(tmp_path: Path) -> None:
    dimse_port = free_port()
    metrics_port = free_port()
    environment = {
        **os.environ,
        "NOCTIS_DATA_DIR": str(tmp_path / "var"),
        "NOCTIS_DIMSE_PORT": str(dimse_port),
        "NOCTIS_METRICS_PORT": str(metrics_port),
        "NOCTIS_AE_TITLE": "GATEWAY",
    }
    log_path = tmp_path / "scp.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "noctis_ingest_scp"], env=environment, stdout=log, stderr=log
        )
    try:
        wait_for_port(dimse_port)
        wait_for_port(metrics_port)
        echo = run_dcmtk("echoscu", "-aec", "GATEWAY", "127.0.0.1", dimse_port)
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert wait_until(
            lambda: (
                value(
                    parse_exposition(httpx.get(metrics_url).text),
                    "noctis_dimse_associations_total",
                    outcome="released",
                )
                == 1
            )
        )
        samples = parse_exposition(httpx.get(metrics_url).text)
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert echo.returncode == 0, echo.stdout
    assert returncode == 0, log_path.read_text(errors="replace")
    assert value(samples, "noctis_dimse_active_associations") == 0
    assert value(samples, "noctis_outbox_pending_events") == 0
