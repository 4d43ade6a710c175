"""C-FIND and QIDO-RS share one matching engine: the same query finds the same entities.

Each case runs one query both ways against one index, C-FIND from a pynetdicom SCU and
QIDO-RS through the HTTP routes, and compares the matched UIDs. The generated studies
run on SQLite and PostgreSQL; the real sample files, when present, on SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pynetdicom.association import Association

from noctis_common.archive import StoreFailedError
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_qido.routes import router as qido_router
from tests.ingest_scp.helpers import RunningSCP, running_scp
from tests.ingest_scp.qr_support import (
    PATIENT_ROOT_FIND,
    STUDY_ROOT_FIND,
    Catalog,
    associated,
    find,
    identifier,
    matches,
    populate,
    qr_settings,
)
from tests.support import free_port, shared_data_files

UNIQUE_KEYWORDS = {
    "STUDY": ("StudyInstanceUID", "0020000D"),
    "SERIES": ("SeriesInstanceUID", "0020000E"),
    "IMAGE": ("SOPInstanceUID", "00080018"),
}


@dataclass
class BothProtocols:
    """An SCP with one open C-FIND association, and QIDO-RS over the same archive."""

    scp: RunningSCP
    association: Association
    qido: TestClient

    def find_uids(self, level: str, **keys: Any) -> set[str]:
        """Return the Unique Keys of the C-FIND matches at ``level``."""
        keyword, _ = UNIQUE_KEYWORDS[level]
        request = identifier(level, **{keyword: ""}, **keys)
        request.SpecificCharacterSet = "ISO_IR 192"
        responses = [
            (int(status.Status), found)
            for status, found in self.association.send_c_find(request, STUDY_ROOT_FIND)
        ]
        return {str(item.get(keyword)) for item in matches(responses)}

    def search_uids(self, level: str, path: str, **params: str) -> set[str]:
        """Return the Unique Keys of the QIDO-RS results at ``level``."""
        _, tag = UNIQUE_KEYWORDS[level]
        response = self.qido.get(f"/dicom-web{path}", params=params)
        assert response.status_code == 200, response.text
        return {result[tag]["Value"][0] for result in response.json()}


@contextmanager
def both_protocols(settings: Settings, folder: Path) -> Iterator[BothProtocols]:
    with running_scp(qr_settings(settings, folder, free_port())) as scp:
        context = scp.context
        app = create_app("Noctis test", [qido_router], context.settings, context)
        with TestClient(app) as qido, associated(scp.port) as association:
            yield BothProtocols(scp, association, qido)


@pytest.fixture
def generated(settings: Settings, tmp_path: Path) -> Iterator[tuple[BothProtocols, Catalog]]:
    """Both protocols over the generated studies, on SQLite and on PostgreSQL."""
    with both_protocols(settings, tmp_path) as protocols:
        yield protocols, populate(protocols.scp.context)


STUDY_CASES: tuple[dict[str, str], ...] = (
    {},
    {"PatientName": "doe*"},
    {"PatientName": "*ÜLLER*"},
    {"PatientID": "PID-A", "StudyDate": "20240101-20241231"},
    {"StudyDate": "-20231231"},
    {"ModalitiesInStudy": "MR"},
    {"AccessionNumber": "ACC-0001", "StudyTime": "1000-1100"},
)


def test_study_matches_agree(generated: tuple[BothProtocols, Catalog]) -> None:
    protocols, _ = generated

    for keys in STUDY_CASES:
        found = protocols.find_uids("STUDY", **keys)
        assert found == protocols.search_uids("STUDY", "/studies", **keys), keys
        assert found, f"{keys} should match some study"


def test_series_matches_agree(generated: tuple[BothProtocols, Catalog]) -> None:
    protocols, catalog = generated
    study_instance_uid = catalog.patients["PID-A"][0]

    found = protocols.find_uids("SERIES", StudyInstanceUID=study_instance_uid, Modality="C?")

    searched = protocols.search_uids(
        "SERIES", f"/studies/{study_instance_uid}/series", Modality="C?"
    )
    assert found == searched
    assert found == {catalog.series[study_instance_uid][0]}


def test_instance_matches_agree(generated: tuple[BothProtocols, Catalog]) -> None:
    protocols, catalog = generated
    study_instance_uid = catalog.patients["PID-A"][0]
    series_instance_uid = catalog.series[study_instance_uid][0]

    found = protocols.find_uids(
        "IMAGE",
        StudyInstanceUID=study_instance_uid,
        SeriesInstanceUID=series_instance_uid,
        InstanceNumber="2",
    )

    path = f"/studies/{study_instance_uid}/series/{series_instance_uid}/instances"
    assert found == protocols.search_uids("IMAGE", path, InstanceNumber="2")
    assert found == {catalog.instances[series_instance_uid][1]}


def test_patient_level_on_each_database(generated: tuple[BothProtocols, Catalog]) -> None:
    protocols, _ = generated

    found = matches(
        find(
            protocols.scp.port,
            identifier("PATIENT", PatientID="", PatientName="d*", NumberOfPatientRelatedStudies=""),
            PATIENT_ROOT_FIND,
        )
    )

    assert [str(item.PatientID) for item in found] == ["PID-A"]
    assert found[0].NumberOfPatientRelatedStudies == 2


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BothProtocols]:
    """Both protocols over every storable file of the real DICOM sample folder."""
    files = shared_data_files()
    if not files:
        pytest.skip("the real DICOM sample folder ../shared/data/dicom is absent")
    folder = tmp_path_factory.mktemp("qido-shared")
    with both_protocols(Settings(data_dir=folder / "var"), folder) as protocols:
        archive = protocols.scp.context.archive
        for path in files:
            spooled = archive.new_spool_path()
            spooled.write_bytes(path.read_bytes())
            try:
                archive.store_part10(spooled)
            except StoreFailedError:
                spooled.unlink(missing_ok=True)  # files without meta, duplicates
        yield protocols


def _person_name_text(value: dict[str, str]) -> str:
    """Return a DICOM JSON person name in its ``alphabetic=ideographic=phonetic`` form."""
    groups = [value.get(group, "") for group in ("Alphabetic", "Ideographic", "Phonetic")]
    return "=".join(groups).rstrip("=")


@pytest.mark.shared_data
def test_sample_studies_agree_by_patient_name(sample_files: BothProtocols) -> None:
    response = sample_files.qido.get("/dicom-web/studies", params={"includefield": "PatientName"})
    names = {
        _person_name_text(value)
        for study in response.json()
        for value in study.get("00100010", {}).get("Value", [])
    }

    assert sample_files.find_uids("STUDY") == sample_files.search_uids("STUDY", "/studies")
    for name in sorted(name for name in names if name):
        found = sample_files.find_uids("STUDY", PatientName=name)
        assert found == sample_files.search_uids("STUDY", "/studies", PatientName=name), name
        assert found, f"no study matches its own patient name {name!r}"


@pytest.mark.shared_data
def test_sample_series_and_instances_agree(sample_files: BothProtocols) -> None:
    studies = sample_files.search_uids("STUDY", "/studies")

    for study_instance_uid in sorted(studies):
        series = sample_files.find_uids("SERIES", StudyInstanceUID=study_instance_uid)
        path = f"/studies/{study_instance_uid}/series"
        assert series == sample_files.search_uids("SERIES", path), study_instance_uid
        for series_instance_uid in sorted(series):
            found = sample_files.find_uids(
                "IMAGE", StudyInstanceUID=study_instance_uid, SeriesInstanceUID=series_instance_uid
            )
            path = f"/studies/{study_instance_uid}/series/{series_instance_uid}/instances"
            assert found == sample_files.search_uids("IMAGE", path), series_instance_uid


@pytest.mark.shared_data
def test_sample_modality_and_date_queries_agree(sample_files: BothProtocols) -> None:
    for keys in ({"ModalitiesInStudy": "MR"}, {"StudyDate": "-20100101"}, {"PatientID": "*"}):
        found = sample_files.find_uids("STUDY", **keys)
        assert found == sample_files.search_uids("STUDY", "/studies", **keys), keys
