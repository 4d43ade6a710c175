"""The scale-out deployment: replicas over PostgreSQL, S3 and Kafka lose nothing acknowledged.

Every service runs as its own process: two DIMSE gateways, STOW-RS, QIDO-RS, WADO-RS
and the events service, over PostgreSQL, SeaweedFS and the Tansu broker. Studies arrive
through both gateways and STOW-RS at once, and one of them through all three. Then a
gateway and the broker are killed by SIGKILL while instances keep arriving.
"""

from __future__ import annotations

import io
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.scaleout.conftest import create_database, drop_database
from tests.scaleout.deployment import EVENT_TOPIC, Deployment, read_topic, running_deployment
from tests.scaleout.senders import (
    PacedDimseSender,
    PacedStowSender,
    sop_instance_uid,
    start_storescu,
    stored_by_stow,
    stow_files,
)
from tests.support import dataset_bytes, write_series
from tests.wado.helpers import parse_multipart, part10_dataset_bytes

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.dcmtk,
    pytest.mark.timeout(600),
]

INSTANCE_STORED = "noctis.instance.stored.v1"
STUDY_COMPLETE = "noctis.study.complete.v1"
SOP_INSTANCE_UID_TAG = "00080018"
NUMBER_OF_STUDY_RELATED_INSTANCES_TAG = "00201208"
DICOM_PARTS = 'multipart/related; type="application/dicom"'


class Sent:
    """What the test sent: each file by SOP Instance UID, and each study's files."""

    def __init__(self) -> None:
        self.files: dict[str, Path] = {}
        self.studies: dict[str, list[str]] = defaultdict(list)

    def add(self, study_instance_uid: str, files: Iterable[Path]) -> list[Path]:
        added = list(files)
        for path in added:
            uid = sop_instance_uid(path)
            self.files[uid] = path
            self.studies[study_instance_uid].append(uid)
        return added


def new_study(
    sent: Sent, folder: Path, series_sizes: list[int], patient_id: str
) -> tuple[str, list[list[Path]]]:
    """Write a study of one series per entry of ``series_sizes``; return its UID and files."""
    study_instance_uid = generate_uid()
    series = [
        sent.add(
            study_instance_uid,
            write_series(
                folder / f"{study_instance_uid}-{index}",
                size,
                study_instance_uid=study_instance_uid,
                patient_id=patient_id,
            ),
        )
        for index, size in enumerate(series_sizes)
    ]
    return study_instance_uid, series


# -- what the services report -------------------------------------------------------------


def qido_study_instances(deployment: Deployment, study_instance_uid: str) -> set[str]:
    """Return the SOP Instance UIDs that QIDO-RS finds in the study."""
    qido = deployment.services["qido"]
    response = httpx.get(
        f"{qido.dicomweb_url}/studies/{study_instance_uid}/instances",
        params={"limit": "1000"},
        timeout=30,
    )
    if response.status_code == 204:
        return set()
    assert response.status_code == 200, response.text
    return {match[SOP_INSTANCE_UID_TAG]["Value"][0] for match in response.json()}


def wado_study_datasets(deployment: Deployment, study_instance_uid: str) -> dict[str, bytes]:
    """Retrieve the study through WADO-RS; return each instance's dataset bytes by UID."""
    wado = deployment.services["wado"]
    response = httpx.get(
        f"{wado.dicomweb_url}/studies/{study_instance_uid}",
        headers={"Accept": DICOM_PARTS},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    datasets = {}
    for part in parse_multipart(response):
        dataset = pydicom.dcmread(io.BytesIO(part.content), stop_before_pixels=True)
        datasets[str(dataset.SOPInstanceUID)] = part10_dataset_bytes(part.content)
    return datasets


def events_of_type(events: list[dict[str, Any]], event_type: str) -> list[dict[str, Any]]:
    return [event for event in events if event["type"] == event_type]


def stored_event_uids(events: list[dict[str, Any]]) -> set[str]:
    return {event["data"]["SOPInstanceUID"] for event in events_of_type(events, INSTANCE_STORED)}


def completions(events: list[dict[str, Any]]) -> dict[str, dict[int, dict[str, Any]]]:
    """Return the ids and latest data of the study.complete events by study and revision.

    A repeated delivery of one event (same id) counts once; two events for one revision
    keep both ids.
    """
    by_study: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for event in events_of_type(events, STUDY_COMPLETE):
        revision = int(event["data"]["Revision"])
        entry = by_study[event["subject"]].setdefault(revision, {"ids": set(), "data": None})
        entry["ids"].add(event["id"])
        entry["data"] = event["data"]
    return by_study


def latest_instance_count(events: list[dict[str, Any]], study_instance_uid: str) -> int | None:
    revisions = completions(events).get(study_instance_uid, {})
    if not revisions:
        return None
    return int(revisions[max(revisions)]["data"]["NumberOfStudyRelatedInstances"])


def read_until_announced(
    deployment: Deployment, expected_counts: dict[str, int], stored_uids: set[str]
) -> list[dict[str, Any]]:
    """Read the topic until the events announce what the index holds.

    That is: each study's latest study.complete counts ``expected_counts`` instances, and
    every instance in ``stored_uids`` has its instance.stored event.
    """

    def complete(events: list[dict[str, Any]]) -> bool:
        counts_match = all(
            latest_instance_count(events, study) == count
            for study, count in expected_counts.items()
        )
        return counts_match and stored_uids <= stored_event_uids(events)

    return read_topic(deployment.broker.bootstrap_servers, EVENT_TOPIC, complete, timeout_s=90)


def check_index_and_retrieval(
    deployment: Deployment, sent: Sent, acknowledged: set[str]
) -> dict[str, int]:
    """Check that QIDO-RS finds and WADO-RS returns every acknowledged instance.

    WADO-RS must return each dataset byte for byte as sent. Returns the number of
    instances QIDO-RS finds in each study.
    """
    counts = {}
    for study_instance_uid, uids in sent.studies.items():
        expected = acknowledged & set(uids)
        found = qido_study_instances(deployment, study_instance_uid)
        assert expected <= found, (
            f"QIDO-RS misses {len(expected - found)} acknowledged instances of study "
            f"{study_instance_uid}\n{deployment.logs()}"
        )
        retrieved = wado_study_datasets(deployment, study_instance_uid)
        assert set(retrieved) == found
        for uid in expected:
            assert retrieved[uid] == dataset_bytes(sent.files[uid]), uid
        counts[study_instance_uid] = len(found)
    return counts


def check_one_event_per_revision(events: list[dict[str, Any]], studies: Iterable[str]) -> None:
    by_study = completions(events)
    for study_instance_uid in studies:
        revisions = by_study[study_instance_uid]
        assert sorted(revisions) == list(range(1, max(revisions) + 1)), revisions
        for revision, entry in revisions.items():
            assert len(entry["ids"]) == 1, (study_instance_uid, revision, entry["ids"])


def changefeed_ids(deployment: Deployment, event_type: str) -> set[str]:
    """Read the whole REST change feed; return the ids of the events of ``event_type``."""
    events_service = deployment.services["events"]
    ids: set[str] = set()
    offset = 0
    while True:
        response = httpx.get(
            f"{events_service.dicomweb_url}/changefeed",
            params={"offset": str(offset), "limit": "1000"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        page = response.json()
        ids |= {event["id"] for event in page["events"] if event["type"] == event_type}
        if not page["events"]:
            return ids
        offset = page["next_offset"]


# -- the run ------------------------------------------------------------------------------


def readiness_once_broker_failed(service_url: str, timeout_s: float = 30.0) -> httpx.Response:
    """Probe readiness until the broker's background check reports the outage."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = httpx.get(f"{service_url}/health/ready", timeout=10)
        broker = response.json().get("dependencies", {}).get("broker", {})
        if broker.get("status") == "failed" or time.monotonic() > deadline:
            return response
        time.sleep(0.5)


def send_at_once(deployment: Deployment, sent: Sent, folder: Path) -> set[str]:
    """Send studies through both gateways (storescu) and STOW-RS at the same time.

    One study's three series go one to each entry point, so that its patient, study
    and series rows are created by concurrent writers. Returns what was acknowledged.
    """
    _, shared_series = new_study(sent, folder, [4, 4, 4], "PID-SHARED")
    _, study_a = new_study(sent, folder, [6, 6], "PID-A")
    _, study_b = new_study(sent, folder, [6, 6], "PID-B")
    _, study_c = new_study(sent, folder, [6], "PID-C")
    gateway_1, gateway_2 = deployment.gateways
    assert gateway_1.dimse_port is not None
    assert gateway_2.dimse_port is not None

    to_gateway_1 = [*shared_series[0], *study_a[0], *study_a[1]]
    to_gateway_2 = [*shared_series[1], *study_b[0], *study_b[1]]
    storescu_1 = start_storescu(gateway_1.dimse_port, "MODALITY1", to_gateway_1)
    storescu_2 = start_storescu(gateway_2.dimse_port, "MODALITY2", to_gateway_2)
    stow = deployment.services["stow"]
    stow_responses = [
        stow_files(stow.dicomweb_url, shared_series[2]),
        stow_files(stow.dicomweb_url, study_c[0]),
    ]
    outputs = [storescu_1.communicate(timeout=120)[0], storescu_2.communicate(timeout=120)[0]]

    assert storescu_1.returncode == 0, outputs[0]
    assert storescu_2.returncode == 0, outputs[1]
    for response in stow_responses:
        assert response.status_code == 200, response.text
    # storescu exits 0 after sending every file; whether each was stored, QIDO-RS shows.
    acknowledged = set(files_uids([*to_gateway_1, *to_gateway_2]))
    for response in stow_responses:
        acknowledged |= stored_by_stow(response)
    return acknowledged


def test_scaleout_deployment_loses_nothing(postgres_server: str, tmp_path: Path) -> None:
    database_url = create_database(postgres_server)
    try:
        with running_deployment(tmp_path / "deployment", database_url) as deployment:
            run_scenario(deployment, tmp_path / "studies")
    finally:
        drop_database(postgres_server, database_url)


def run_scenario(deployment: Deployment, folder: Path) -> None:
    sent = Sent()

    # 1. Concurrent ingest through every entry point; nothing fails.
    acknowledged = send_at_once(deployment, sent, folder)
    assert acknowledged == set(sent.files)
    counts = check_index_and_retrieval(deployment, sent, acknowledged)
    assert counts == {study: len(uids) for study, uids in sent.studies.items()}
    events = read_until_announced(deployment, counts, acknowledged)
    assert stored_event_uids(events) >= acknowledged
    for study, count in counts.items():
        assert latest_instance_count(events, study) == count, study
    check_one_event_per_revision(events, counts)

    # 2. A gateway and the broker die by SIGKILL while instances keep arriving.
    gateway_1, gateway_2 = deployment.gateways
    study_d, (files_d,) = new_study(sent, folder, [40], "PID-D")
    study_e, (files_e,) = new_study(sent, folder, [30], "PID-E")
    study_f, (files_f,) = new_study(sent, folder, [30], "PID-F")
    to_killed = PacedDimseSender(files_d, 0.05, port=gateway_1.dimse_port or 0)
    to_survivor = PacedDimseSender(files_e, 0.15, port=gateway_2.dimse_port or 0)
    to_stow = PacedStowSender(files_f, 0.4, dicomweb_url=deployment.services["stow"].dicomweb_url)
    for sender in (to_killed, to_survivor, to_stow):
        sender.start()

    assert to_killed.wait_for_acknowledged(10), to_killed.failure
    gateway_1.kill()
    to_killed.join()
    deployment.broker.kill()
    during_outage = (len(to_survivor.acknowledged), len(to_stow.acknowledged))
    assert to_survivor.wait_for_acknowledged(during_outage[0] + 3), to_survivor.failure
    assert to_stow.wait_for_acknowledged(during_outage[1] + 3), to_stow.failure
    stow_readiness = readiness_once_broker_failed(deployment.services["stow"].url)
    deployment.broker.start()
    gateway_1.start(wait=False)
    to_survivor.join()
    to_stow.join()
    gateway_1.wait_until_ready()

    assert to_killed.failure is not None, "the killed gateway acknowledged every instance"
    assert to_survivor.failure is None
    assert to_stow.failure is None
    assert stow_readiness.status_code == 200, stow_readiness.text
    assert stow_readiness.json()["dependencies"]["broker"]["status"] == "failed"

    # 3. Everything acknowledged is indexed, retrievable and announced.
    acknowledged |= {*to_killed.acknowledged, *to_survivor.acknowledged, *to_stow.acknowledged}
    assert set(files_uids(files_e)) <= acknowledged
    assert set(files_uids(files_f)) <= acknowledged
    counts = check_index_and_retrieval(deployment, sent, acknowledged)
    indexed = {
        uid
        for study in (study_d, study_e, study_f)
        for uid in qido_study_instances(deployment, study)
    }
    events = read_until_announced(deployment, counts, acknowledged | indexed)
    assert stored_event_uids(events) >= acknowledged | indexed, deployment.logs()
    for study, count in counts.items():
        assert latest_instance_count(events, study) == count, study
    check_one_event_per_revision(events, counts)
    kafka_completions = {event["id"] for event in events_of_type(events, STUDY_COMPLETE)}
    assert changefeed_ids(deployment, STUDY_COMPLETE) == kafka_completions


def files_uids(files: list[Path]) -> list[str]:
    return [sop_instance_uid(path) for path in files]
