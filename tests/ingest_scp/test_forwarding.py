"""Forwarding by routing rules to a pynetdicom Storage SCP, with the persistent retry queue."""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event as DimseEvent
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import func, select

from noctis_common.db.models import ForwardJob, OutboxEvent
from noctis_common.events import INSTANCE_STORED, Event
from noctis_common.settings import Settings
from noctis_ingest_scp.forwarding import Forwarder
from noctis_ingest_scp.forwarding_rules import (
    ForwardRulesError,
    destinations_for,
    load_forward_rules,
)
from noctis_ingest_scp.peers import PeerDirectory
from tests.ingest_scp.certificates import make_test_pki
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    dataset_bytes,
    free_port,
    make_dataset,
)

FORWARDING_LOGGER = "noctis_ingest_scp.forwarding"
QUEUE_LOGGER = "noctis_ingest_scp.forward_queue"


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@dataclass
class Destination:
    """A pynetdicom Storage SCP standing in for a router or a second archive."""

    port: int = field(default_factory=free_port)
    status: int = 0x0000
    received: dict[str, bytes] = field(default_factory=dict)
    server: ThreadedAssociationServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle_store(self, event: DimseEvent) -> int:
        try:
            data = dataset_bytes(event.dataset_path)
        except AttributeError:  # pynetdicom received the dataset in memory
            data = event.encoded_dataset(include_meta=False)
        with self.lock:
            self.received[str(cast(C_STORE, event.request).AffectedSOPInstanceUID)] = data
        return self.status

    def start(self, ssl_context: ssl.SSLContext | None = None) -> None:
        ae = AE(ae_title="ROUTER")
        for sop_class_uid in (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE):
            ae.add_supported_context(
                sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
            )
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self.handle_store)],
            ssl_context=ssl_context,
        )

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


@pytest.fixture
def destination() -> Iterator[Destination]:
    """The destination, not started: each test starts it when it should be reachable."""
    router = Destination()
    yield router
    router.stop()


def write_config(
    folder: Path, destination: Destination, rules: list[dict[str, Any]], tls: bool = False
) -> dict[str, Any]:
    peers = folder / "peers.json"
    peers.write_text(
        json.dumps(
            {
                "peers": [
                    {
                        "ae_title": "ROUTER",
                        "host": "127.0.0.1",
                        "port": destination.port,
                        "tls": tls,
                    },
                    {"ae_title": "MODALITY", "permissions": ["echo", "store"]},
                ]
            }
        )
    )
    rules_file = folder / "rules.json"
    rules_file.write_text(json.dumps({"rules": rules}))
    return {
        "dimse_peers_file": peers,
        "forward_rules_file": rules_file,
        "forward_retry_initial_s": 0.2,
        "forward_retry_max_s": 0.5,
        "forward_poll_interval_s": 0.1,
    }


CT_TO_ROUTER = [{"name": "CT to router", "destination": "ROUTER", "match": {"Modality": "CT"}}]


@contextmanager
def forwarding_scp(
    settings: Settings, folder: Path, destination: Destination, **overrides: Any
) -> Iterator[RunningSCP]:
    """Run the SCP with the CT rule (or ``rules``) and its event relay."""
    rules = overrides.pop("rules", CT_TO_ROUTER)
    tls = overrides.pop("tls", False)
    config = {**write_config(folder, destination, rules, tls), **overrides}
    with running_scp(settings, **config) as running:
        running.context.relay.start()
        yield running


def forwarder_of(running: RunningSCP) -> Forwarder:
    forwarder = running.scp.forwarder
    assert forwarder is not None
    return forwarder


def jobs(running: RunningSCP) -> list[ForwardJob]:
    with running.context.database.read_session() as session:
        return list(session.scalars(select(ForwardJob).order_by(ForwardJob.id)))


def store_as_modality(running: RunningSCP, *datasets: Dataset) -> None:
    sender = AE(ae_title="MODALITY")
    sender.add_requested_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    sender.add_requested_context(MR_IMAGE_STORAGE, ExplicitVRLittleEndian)
    association = sender.associate("127.0.0.1", running.port, ae_title="NOCTIS")
    try:
        for dataset in datasets:
            assert association.send_c_store(dataset).Status == 0x0000
    finally:
        association.release()


def test_matching_instance_forwarded_unchanged(
    settings: Settings,
    tmp_path: Path,
    destination: Destination,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARDING_LOGGER)
    destination.start()
    ct = make_dataset(modality="CT")
    mr = make_dataset(modality="MR")
    with forwarding_scp(settings, tmp_path, destination) as running:
        store_as_modality(running, ct, mr)

        assert wait_until(lambda: str(ct.SOPInstanceUID) in destination.received)
        assert wait_until(lambda: jobs(running) == [])
        instance = running.instance(ct.SOPInstanceUID)
        assert instance is not None
        stored_bytes = running.stored_dataset_bytes(instance)

    assert destination.received[str(ct.SOPInstanceUID)] == stored_bytes
    assert str(mr.SOPInstanceUID) not in destination.received
    assert any(
        "forwarded 1 of 1 instance(s) to ROUTER at 127.0.0.1" in record.getMessage()
        for record in caplog.records
    )


@pytest.mark.dcmtk
def test_storescu_instance_forwarded(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    destination.start()
    dataset = make_dataset(modality="CT")
    path = tmp_path / "ct.dcm"
    dataset.save_as(path, enforce_file_format=True)
    with forwarding_scp(sqlite_settings, tmp_path, destination) as running:
        result = run_dcmtk(
            "storescu", "-aet", "MODALITY", "-aec", "NOCTIS", "127.0.0.1", running.port, path
        )
        assert result.returncode == 0, result.stdout

        assert wait_until(lambda: str(dataset.SOPInstanceUID) in destination.received)


def test_forwarding_over_tls(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.server.certificate, pki.server.private_key)
    server_context.load_verify_locations(pki.ca_certificate)
    server_context.verify_mode = ssl.CERT_REQUIRED
    destination.start(server_context)
    dataset = make_dataset(modality="CT")
    with forwarding_scp(
        sqlite_settings,
        tmp_path,
        destination,
        tls=True,
        dimse_tls_ca_file=pki.ca_certificate,
        dimse_tls_certificate_file=pki.client.certificate,
        dimse_tls_private_key_file=pki.client.private_key,
    ) as running:
        store_as_modality(running, dataset)

        assert wait_until(lambda: str(dataset.SOPInstanceUID) in destination.received)
        assert wait_until(lambda: jobs(running) == [])


def test_unreachable_destination_retried(
    sqlite_settings: Settings,
    tmp_path: Path,
    destination: Destination,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=FORWARDING_LOGGER)
    dataset = make_dataset(modality="CT")
    with forwarding_scp(sqlite_settings, tmp_path, destination) as running:
        store_as_modality(running, dataset)
        assert wait_until(lambda: any(job.attempts >= 1 for job in jobs(running)))
        [job] = jobs(running)
        assert job.status == "pending"
        assert "ROUTER at 127.0.0.1" in job.last_error

        destination.start()

        assert wait_until(lambda: str(dataset.SOPInstanceUID) in destination.received)
        assert wait_until(lambda: jobs(running) == [])
    assert any(
        record.levelno == logging.WARNING
        and "forwarding 1 instance(s) to ROUTER failed; retrying later" in record.getMessage()
        for record in caplog.records
    )


def test_refused_instance_marked_failed(
    sqlite_settings: Settings,
    tmp_path: Path,
    destination: Destination,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger=QUEUE_LOGGER)
    destination.status = 0xC000
    destination.start()
    dataset = make_dataset(modality="CT")
    with forwarding_scp(sqlite_settings, tmp_path, destination) as running:
        store_as_modality(running, dataset)

        assert wait_until(lambda: [job.status for job in jobs(running)] == ["failed"])
        [job] = jobs(running)

    assert job.attempts == 1
    assert "ROUTER answered status 0xC000" in job.last_error
    assert any("giving up forwarding instance" in record.getMessage() for record in caplog.records)


def test_attempts_exhausted_marks_failed(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    dataset = make_dataset(modality="CT")
    with forwarding_scp(sqlite_settings, tmp_path, destination, forward_max_attempts=2) as running:
        store_as_modality(running, dataset)

        assert wait_until(lambda: [job.status for job in jobs(running)] == ["failed"])
        [job] = jobs(running)

    assert job.attempts == 2


def test_queue_survives_restart(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    dataset = make_dataset(modality="CT")
    with forwarding_scp(sqlite_settings, tmp_path, destination) as running:
        store_as_modality(running, dataset)
        assert wait_until(lambda: any(job.attempts >= 1 for job in jobs(running)))

    destination.start()
    with forwarding_scp(sqlite_settings, tmp_path, destination) as restarted:
        assert wait_until(lambda: str(dataset.SOPInstanceUID) in destination.received)
        assert wait_until(lambda: jobs(restarted) == [])


def test_republished_event_queued_once(
    sqlite_settings: Settings, tmp_path: Path, destination: Destination
) -> None:
    config = write_config(tmp_path, destination, CT_TO_ROUTER)
    with running_scp(sqlite_settings, **config) as running:
        forwarder = forwarder_of(running)
        forwarder.stop()  # the test drives the queue itself
        event = Event(
            id=7,
            type=INSTANCE_STORED,
            study_instance_uid="1.2.3",
            payload={
                "StudyInstanceUID": "1.2.3",
                "SeriesInstanceUID": "1.2.3.4",
                "SOPInstanceUID": "1.2.3.4.5",
                "SOPClassUID": CT_IMAGE_STORAGE,
                "Modality": "CT",
                "CallingAETitle": "MODALITY",
            },
            created_at=datetime.now(UTC),
        )

        forwarder.handle_event(event)
        forwarder.handle_event(event)
        added = forwarder.queue_received()
        forwarder.handle_event(event)
        added_again = forwarder.queue_received()

        assert added == 1
        assert added_again == 0
        assert len(jobs(running)) == 1


def test_stored_event_names_calling_ae(sqlite_scp: RunningSCP) -> None:
    store_as_modality(sqlite_scp, make_dataset())

    with sqlite_scp.context.database.read_session() as session:
        [payload] = [json.loads(text) for text in session.scalars(select(OutboxEvent.payload_json))]
        count = session.scalar(select(func.count(ForwardJob.id)))

    assert payload["CallingAETitle"] == "MODALITY"
    assert count == 0


# -- routing rules --------------------------------------------------------------------


@pytest.fixture
def peers(tmp_path: Path) -> PeerDirectory:
    path = tmp_path / "peers.json"
    path.write_text(
        json.dumps(
            {
                "peers": [
                    {"ae_title": "ROUTER", "host": "127.0.0.1", "port": 11113},
                    {"ae_title": "ARCHIVE2", "host": "127.0.0.1", "port": 11114},
                    {"ae_title": "NOADDRESS", "permissions": ["store"]},
                ]
            }
        )
    )
    return PeerDirectory.from_settings(Settings(dimse_peers_file=path))


def write_rules(tmp_path: Path, document: object) -> Path:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))
    return path


def test_rules_match_with_wildcards(tmp_path: Path, peers: PeerDirectory) -> None:
    rules = load_forward_rules(
        write_rules(
            tmp_path,
            {
                "rules": [
                    {
                        "name": "CT from the CT scanners",
                        "destination": "ROUTER",
                        "match": {"Modality": ["CT", "PT"], "CallingAETitle": "CT?*"},
                    },
                    {"name": "everything", "destination": "ARCHIVE2"},
                ]
            },
        ),
        peers,
    )

    ct = {"Modality": "CT", "CallingAETitle": "CT01"}
    mr = {"Modality": "MR", "CallingAETitle": "CT01"}
    other_sender = {"Modality": "CT", "CallingAETitle": "US01"}

    assert destinations_for(rules, ct) == {
        "ROUTER": "CT from the CT scanners",
        "ARCHIVE2": "everything",
    }
    assert destinations_for(rules, mr) == {"ARCHIVE2": "everything"}
    assert destinations_for(rules, other_sender) == {"ARCHIVE2": "everything"}


def test_instance_not_sent_back_to_sender(tmp_path: Path, peers: PeerDirectory) -> None:
    rules = load_forward_rules(
        write_rules(tmp_path, {"rules": [{"name": "all", "destination": "ROUTER"}]}), peers
    )

    assert destinations_for(rules, {"Modality": "CT", "CallingAETitle": "ROUTER"}) == {}


def test_brackets_match_literally(tmp_path: Path, peers: PeerDirectory) -> None:
    rules = load_forward_rules(
        write_rules(
            tmp_path,
            {"rules": [{"name": "odd", "destination": "ROUTER", "match": {"Modality": "[CT]"}}]},
        ),
        peers,
    )

    assert destinations_for(rules, {"Modality": "C"}) == {}
    assert destinations_for(rules, {"Modality": "[CT]"}) == {"ROUTER": "odd"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"routes": []}, '"rules" list'),
        ({"rules": ["x"]}, "must be a JSON object"),
        ({"rules": [{"name": "a", "destination": "ROUTER", "when": {}}]}, "unknown keys"),
        ({"rules": [{"destination": "ROUTER"}]}, "name must be a string"),
        ({"rules": [{"name": "a", "destination": "NOBODY"}]}, "needs an entry with host"),
        ({"rules": [{"name": "a", "destination": "NOADDRESS"}]}, "needs an entry with host"),
        (
            {"rules": [{"name": "a", "destination": "ROUTER", "match": {"PatientID": "1"}}]},
            "cannot match on 'PatientID'",
        ),
        (
            {"rules": [{"name": "a", "destination": "ROUTER", "match": {"Modality": []}}]},
            "non-empty list of strings",
        ),
        (
            {
                "rules": [
                    {"name": "a", "destination": "ROUTER"},
                    {"name": "a", "destination": "ARCHIVE2"},
                ]
            },
            "rule names must be unique",
        ),
    ],
)
def test_invalid_rules_rejected(
    tmp_path: Path, peers: PeerDirectory, document: object, message: str
) -> None:
    with pytest.raises(ForwardRulesError, match=message):
        load_forward_rules(write_rules(tmp_path, document), peers)


def test_rules_file_not_json_rejected(tmp_path: Path, peers: PeerDirectory) -> None:
    path = tmp_path / "rules.json"
    path.write_text("{not json")

    with pytest.raises(ForwardRulesError, match="not valid JSON"):
        load_forward_rules(path, peers)
