"""The events service and the one-process archive as running processes.

``python -m noctis_events`` relays events, announces complete studies and serves the
change feed alone. The one-process archive does the same, and a crash of it in the
middle of a study's quiet period still ends in exactly one study.complete event.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from noctis_common.context import ArchiveContext
from noctis_common.db import Database
from noctis_common.db.models import OutboxEvent
from noctis_common.settings import Settings
from noctis_common.study_complete import STUDY_COMPLETE
from tests.scaleout.processes import ServiceProcess
from tests.stow.bodies import content_type, dicom_body
from tests.support import ArchiveProcess, make_dataset

pytestmark = pytest.mark.slow

FAST_COMPLETION = {
    "NOCTIS_STUDY_COMPLETE_QUIET_S": "1",
    "NOCTIS_STUDY_COMPLETE_SWEEP_INTERVAL_S": "0.2",
    "NOCTIS_OUTBOX_POLL_INTERVAL_S": "0.2",
}
WAIT_S = 60.0


def feed_events(dicomweb_url: str, **parameters: Any) -> list[dict[str, Any]]:
    """Read the whole change feed, page by page."""
    events: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = httpx.get(
            f"{dicomweb_url}/changefeed", params={**parameters, "offset": offset}, timeout=10
        )
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return events
        events.extend(page["events"])
        offset = page["next_offset"]


def wait_for_study_complete(dicomweb_url: str, study_instance_uid: str) -> list[dict[str, Any]]:
    """Poll the change feed until it lists a study.complete event of the study."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        events = feed_events(dicomweb_url)
        if any(
            event["type"] == "noctis.study.complete.v1" and event["subject"] == study_instance_uid
            for event in events
        ):
            return events
        time.sleep(0.2)
    raise AssertionError(f"no study.complete event of {study_instance_uid} in {WAIT_S} s")


def complete_event_count(data_dir: Path) -> int:
    """Count the study.complete rows in the outbox of a stopped archive's SQLite index."""
    database = Database(f"sqlite:///{data_dir / 'index.sqlite'}")
    try:
        with database.read_session() as session:
            return len(
                session.scalars(
                    select(OutboxEvent.id).where(OutboxEvent.event_type == STUDY_COMPLETE)
                ).all()
            )
    finally:
        database.dispose()


@pytest.fixture
def events_service(tmp_path: Path, database_url: str) -> Iterator[ServiceProcess]:
    service = ServiceProcess(
        "events",
        "noctis_events",
        {"NOCTIS_DATABASE_URL": database_url, **FAST_COMPLETION},
        tmp_path / "services",
    )
    service.start()
    try:
        yield service
    finally:
        service.close()


def test_events_service_announces_and_serves_feed(
    events_service: ServiceProcess, tmp_path: Path, database_url: str
) -> None:
    # Another replica stores the instances, and the events service reads only the index.
    writer = ArchiveContext.create(
        Settings(data_dir=tmp_path / "writer", database_url=database_url)
    )
    study_instance_uid = generate_uid()
    try:
        for number in (1, 2):
            path = writer.archive.new_spool_path()
            make_dataset(study_instance_uid=study_instance_uid, instance_number=number).save_as(
                path, enforce_file_format=True
            )
            writer.archive.store_part10(path)
    finally:
        writer.close()

    events = wait_for_study_complete(events_service.dicomweb_url, study_instance_uid)

    assert [event["type"] for event in events] == [
        "noctis.instance.stored.v1",
        "noctis.instance.stored.v1",
        "noctis.study.complete.v1",
    ]
    sequences = [int(event["sequence"]) for event in events]
    assert sequences == sorted(sequences)
    assert events[-1]["data"]["NumberOfStudyRelatedInstances"] == 2


def test_archive_restart_announces_once(tmp_path: Path) -> None:
    """A crash during the quiet period neither loses nor repeats the study.complete event."""
    data_dir = tmp_path / "var"
    environment = {**FAST_COMPLETION, "NOCTIS_STUDY_COMPLETE_QUIET_S": "4"}
    study_instance_uid = generate_uid()
    datasets = [
        make_dataset(study_instance_uid=study_instance_uid, instance_number=number)
        for number in (1, 2)
    ]

    first = ArchiveProcess(data_dir=data_dir, extra_env=environment)
    first.start()
    try:
        response = httpx.post(
            f"{first.dicomweb_url}/studies",
            content=dicom_body(datasets),
            headers={"Content-Type": content_type()},
            timeout=30,
        )
        assert response.status_code == 200, response.text
    finally:
        first.kill()
    # The quiet period outlasts the request, so the crash came before the announcement.
    assert complete_event_count(data_dir) == 0

    second = ArchiveProcess(data_dir=data_dir, extra_env=environment)
    second.start()
    try:
        wait_for_study_complete(second.dicomweb_url, study_instance_uid)
        # Several more sweeps run, and none may announce the revision again.
        time.sleep(1.0)
        complete = feed_events(second.dicomweb_url, type="study.complete")
    finally:
        second.stop()

    assert [event["subject"] for event in complete] == [study_instance_uid]
    assert complete[0]["data"]["NumberOfStudyRelatedInstances"] == 2
