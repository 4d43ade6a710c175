"""Helpers for the Query/Retrieve tests: peer lists, a populated archive, SCUs and SCPs."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, cast

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk
from tests.support import (
    CT_IMAGE_STORAGE,
    MR_IMAGE_STORAGE,
    dataset_bytes,
    free_port,
    make_dataset,
    require_tool,
    wait_for_port,
)

PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
PATIENT_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.1.2"
PATIENT_ROOT_GET = "1.2.840.10008.5.1.4.1.2.1.3"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
QUERY_RETRIEVE_MODELS = (
    PATIENT_ROOT_FIND,
    PATIENT_ROOT_MOVE,
    PATIENT_ROOT_GET,
    STUDY_ROOT_FIND,
    STUDY_ROOT_MOVE,
    STUDY_ROOT_GET,
)

# Calling AE titles of the tests and what the peer list grants each.
QUERY_AE = "QRSCU"
NO_PERMISSION_AE = "NOQUERY"
DESTINATION_AE = "DEST"
UNREACHABLE_AE = "NOWHERE"
NO_ADDRESS_AE = "NOADDRESS"

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WITH_UNSUPPORTED_KEYS = 0xFF01
CANCEL = 0xFE00
SUB_OPERATIONS_WARNING = 0xB000
NOT_AUTHORIZED = 0x0124
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900


def write_peers_file(path: Path, destination_port: int) -> Path:
    """Write the peer list of the tests; the destination listens on ``destination_port``."""
    peers = [
        {"ae_title": QUERY_AE, "permissions": ["echo", "query", "retrieve"]},
        {"ae_title": NO_PERMISSION_AE, "permissions": ["echo", "store"]},
        {
            "ae_title": DESTINATION_AE,
            "host": "127.0.0.1",
            "port": destination_port,
            "permissions": ["store"],
        },
        {"ae_title": UNREACHABLE_AE, "host": "127.0.0.1", "port": free_port(), "permissions": []},
        {"ae_title": NO_ADDRESS_AE, "permissions": ["query", "retrieve"]},
    ]
    path.write_text(json.dumps({"peers": peers}))
    return path


def qr_settings(base: Settings, folder: Path, destination_port: int) -> Settings:
    """Return ``base`` with the peer list of the tests."""
    folder.mkdir(parents=True, exist_ok=True)
    peers_file = write_peers_file(folder / "peers.json", destination_port)
    return base.model_copy(update={"dimse_peers_file": peers_file})


def store(context: ArchiveContext, dataset: Dataset) -> Dataset:
    """Store ``dataset`` through the archive pipeline, as C-STORE and STOW-RS do."""
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)
    return dataset


@dataclass
class Catalog:
    """The UIDs of the studies, series and instances that :func:`populate` stored."""

    patients: dict[str, list[str]] = field(default_factory=dict)  # PatientID -> studies
    series: dict[str, list[str]] = field(default_factory=dict)  # study -> series
    instances: dict[str, list[str]] = field(default_factory=dict)  # series -> instances
    datasets: dict[str, Dataset] = field(default_factory=dict)  # SOP Instance UID -> dataset

    def add(self, dataset: Dataset) -> None:
        studies = self.patients.setdefault(str(dataset.PatientID), [])
        if dataset.StudyInstanceUID not in studies:
            studies.append(dataset.StudyInstanceUID)
        series = self.series.setdefault(dataset.StudyInstanceUID, [])
        if dataset.SeriesInstanceUID not in series:
            series.append(dataset.SeriesInstanceUID)
        self.instances.setdefault(dataset.SeriesInstanceUID, []).append(dataset.SOPInstanceUID)
        self.datasets[dataset.SOPInstanceUID] = dataset

    def study_instances(self, study_instance_uid: str) -> list[str]:
        return [
            uid
            for series_instance_uid in self.series[study_instance_uid]
            for uid in self.instances[series_instance_uid]
        ]


# The studies that populate() stores: (PatientID, PatientName, StudyDate, series), where
# each series is (Modality, number of instances).
STUDIES: tuple[tuple[str, str, str, tuple[tuple[str, int], ...]], ...] = (
    ("PID-A", "Doe^Jane", "20240115", (("CT", 2), ("MR", 1))),
    ("PID-A", "Doe^Jane", "20230601", (("MR", 2),)),
    ("PID-B", "Müller^Jörg", "20240201", (("CT", 1),)),
)


def populate(context: ArchiveContext) -> Catalog:
    """Store the studies of :data:`STUDIES` and return their UIDs in storing order."""
    catalog = Catalog()
    for patient_id, patient_name, study_date, series_list in STUDIES:
        study_instance_uid = generate_uid()
        for series_number, (modality, count) in enumerate(series_list, start=1):
            series_instance_uid = generate_uid()
            for number in range(1, count + 1):
                dataset = make_dataset(
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series_instance_uid,
                    modality=modality,
                    patient_name=patient_name,
                    patient_id=patient_id,
                    study_date=study_date,
                    instance_number=number,
                )
                dataset.SeriesNumber = series_number
                if "ü" in patient_name:
                    dataset.SpecificCharacterSet = "ISO_IR 192"
                catalog.add(store(context, dataset))
    return catalog


def query_ae(ae_title: str = QUERY_AE) -> AE:
    """Return an SCU proposing every Query/Retrieve model with Explicit VR Little Endian."""
    ae = AE(ae_title=ae_title)
    for sop_class_uid in QUERY_RETRIEVE_MODELS:
        ae.add_requested_context(sop_class_uid, ExplicitVRLittleEndian)
    return ae


@contextmanager
def associated(port: int, ae: AE | None = None, **kwargs: Any) -> Iterator[Association]:
    """Yield an established association to the SCP; release it after."""
    association = (ae or query_ae()).associate("127.0.0.1", port, ae_title="NOCTIS", **kwargs)
    assert association.is_established, "the SCP did not accept the association"
    # Each request is two PDUs (command and Identifier); without TCP_NODELAY the second
    # waits for the delayed ACK of the first.
    if association.dul.socket is not None and association.dul.socket.socket is not None:
        association.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        yield association
    finally:
        if association.is_established:
            association.release()


Responses = list[tuple[int, Dataset | None]]


def _collect(responses: Iterator[tuple[Dataset, Dataset | None]]) -> Responses:
    collected = []
    for status, identifier in responses:
        assert "Status" in status, "no valid response (timeout or abort)"
        collected.append((int(status.Status), identifier))
    return collected


def find(
    port: int, identifier: Dataset, model: str = STUDY_ROOT_FIND, ae_title: str = QUERY_AE
) -> Responses:
    """Send one C-FIND and return every (status, identifier) response."""
    with associated(port, query_ae(ae_title)) as association:
        return _collect(association.send_c_find(identifier, model))


def matches(responses: Responses) -> list[Dataset]:
    """Return the identifiers of the Pending responses; the final one must be Success."""
    assert responses[-1][0] == SUCCESS, f"final status 0x{responses[-1][0]:04X}"
    return [identifier for status, identifier in responses[:-1] if identifier is not None]


def move(
    port: int,
    identifier: Dataset,
    destination: str = DESTINATION_AE,
    model: str = STUDY_ROOT_MOVE,
    ae_title: str = QUERY_AE,
) -> list[tuple[Dataset, Dataset | None]]:
    """Send one C-MOVE and return every (status dataset, identifier) response."""
    with associated(port, query_ae(ae_title)) as association:
        return list(association.send_c_move(identifier, destination, model))


def identifier(level: str, **keys: object) -> Dataset:
    """Build a request Identifier: the level, then each keyword with its value."""
    dataset = Dataset()
    dataset.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(dataset, keyword, value)
    return dataset


class StorageDestination:
    """A pynetdicom Storage SCP that records the dataset bytes it receives.

    It accepts ``transfer_syntaxes`` for ``sop_class_uids``. ``status_for`` maps a SOP
    Instance UID to the status to return for it, and ``before_store`` runs before the
    response to each C-STORE.
    """

    def __init__(
        self,
        port: int,
        *,
        transfer_syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
        sop_class_uids: tuple[str, ...] = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE),
        status_for: dict[str, int] | None = None,
        before_store: Callable[[Event], None] | None = None,
    ) -> None:
        self.port = port
        self.received: dict[str, bytes] = {}
        self.transfer_syntaxes: dict[str, str] = {}
        self.move_originators: list[tuple[str, int]] = []
        self.status_for = status_for or {}
        self.before_store = before_store
        ae = AE(ae_title=DESTINATION_AE)
        for sop_class_uid in sop_class_uids:
            ae.add_supported_context(sop_class_uid, list(transfer_syntaxes))
        server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._handle_store)],
        )
        assert server is not None  # a non-blocking start returns the server
        self._server = server

    def __enter__(self) -> StorageDestination:
        return self

    def __exit__(self, *_exception: object) -> None:
        self._server.shutdown()

    def _handle_store(self, event: Event) -> int:
        if self.before_store is not None:
            self.before_store(event)
        request = cast(C_STORE, event.request)
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        # The gateway under test makes pynetdicom write every received dataset to a
        # file (a process-wide setting), and this SCP runs in the same process.
        if _config.STORE_RECV_CHUNKED_DATASET:
            self.received[sop_instance_uid] = dataset_bytes(Path(event.dataset_path))
        else:
            self.received[sop_instance_uid] = cast(BytesIO, request.DataSet).getvalue()
        self.transfer_syntaxes[sop_instance_uid] = str(event.context.transfer_syntax)
        self.move_originators.append(
            (
                str(request.MoveOriginatorApplicationEntityTitle or "").strip(),
                int(request.MoveOriginatorMessageID or 0),
            )
        )
        return self.status_for.get(sop_instance_uid, SUCCESS)


@contextmanager
def storescp(port: int, folder: Path, ae_title: str = DESTINATION_AE) -> Iterator[Path]:
    """Run dcmtk's storescp on ``port``, writing received files into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [require_tool("storescp"), "-aet", ae_title, "-od", str(folder), "+xa", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield folder
    finally:
        process.terminate()
        process.wait(timeout=10)


def received_datasets(folder: Path) -> dict[str, bytes]:
    """Return, by SOP Instance UID, the dataset bytes of each Part 10 file in ``folder``."""
    found = {}
    for path in sorted(folder.iterdir()):
        sop_instance_uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        found[str(sop_instance_uid)] = dataset_bytes(path)
    return found


def stored_dataset_bytes(scp: RunningSCP, sop_instance_uid: str) -> bytes:
    instance = scp.instance(sop_instance_uid)
    assert instance is not None, f"{sop_instance_uid} is not in the index"
    return scp.stored_dataset_bytes(instance)


def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def cancel_arrived(scp: RunningSCP, message_id: int) -> Callable[[], bool]:
    """Return a check that the SCP has received a C-CANCEL for ``message_id``."""

    def arrived() -> bool:
        return any(
            message_id in association.dimse.cancel_req
            for association in scp.scp.active_associations
        )

    return arrived


def findscu(
    port: int, folder: Path, *keys: str, model: str = "-S", ae_title: str = QUERY_AE
) -> tuple[str, list[Dataset]]:
    """Run dcmtk's findscu with ``-k`` keys; return its output and the response Identifiers."""
    folder.mkdir(parents=True, exist_ok=True)
    key_arguments = [argument for key in keys for argument in ("-k", key)]
    result = run_dcmtk(
        "findscu",
        "-v",
        model,
        "-aet",
        ae_title,
        "-aec",
        "NOCTIS",
        "-X",
        "-od",
        folder,
        *key_arguments,
        "127.0.0.1",
        port,
    )
    responses: list[Dataset] = [pydicom.dcmread(path) for path in sorted(folder.glob("rsp*.dcm"))]
    return result.stdout, responses


def get_ae(sop_class_uids: tuple[str, ...] = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)) -> AE:
    """Return a C-GET SCU that offers to be Storage SCP of ``sop_class_uids``."""
    ae = query_ae()
    for sop_class_uid in sop_class_uids:
        ae.add_requested_context(sop_class_uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def get_roles(sop_class_uids: tuple[str, ...] = (CT_IMAGE_STORAGE, MR_IMAGE_STORAGE)) -> list[Any]:
    return [build_role(sop_class_uid, scp_role=True) for sop_class_uid in sop_class_uids]
