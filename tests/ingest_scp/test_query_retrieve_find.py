"""C-FIND through the gateway, with dcmtk's findscu and pynetdicom as SCUs over loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from noctis_common.settings import Settings
from noctis_ingest_scp import qr_find
from tests.ingest_scp.helpers import RunningSCP, running_scp
from tests.ingest_scp.qr_support import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    NO_PERMISSION_AE,
    NOT_AUTHORIZED,
    PATIENT_ROOT_FIND,
    PENDING,
    PENDING_WITH_UNSUPPORTED_KEYS,
    SUCCESS,
    Catalog,
    associated,
    cancel_arrived,
    find,
    findscu,
    identifier,
    matches,
    populate,
    qr_settings,
    wait_until,
)
from tests.support import free_port


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningSCP, Catalog]]:
    """One SCP over a SQLite index holding the studies of ``populate``."""
    folder = tmp_path_factory.mktemp("find")
    settings = qr_settings(Settings(data_dir=folder / "var"), folder, free_port())
    with running_scp(settings) as scp:
        yield scp, populate(scp.context)


@pytest.fixture
def scp(archive: tuple[RunningSCP, Catalog]) -> RunningSCP:
    return archive[0]


@pytest.fixture
def catalog(archive: tuple[RunningSCP, Catalog]) -> Catalog:
    return archive[1]


def _values(found: list[Dataset], keyword: str) -> list[str]:
    return [str(dataset.get(keyword, "")) for dataset in found]


@pytest.mark.dcmtk
def test_findscu_lists_every_study(scp: RunningSCP, catalog: Catalog, tmp_path: Path) -> None:
    output, found = findscu(
        scp.port,
        tmp_path,
        "QueryRetrieveLevel=STUDY",
        "StudyInstanceUID",
        "PatientName",
        "StudyDate",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    )

    assert "Received Final Find Response (Success)" in output, output
    expected = {uid for studies in catalog.patients.values() for uid in studies}
    assert set(_values(found, "StudyInstanceUID")) == expected
    first_study = catalog.patients["PID-A"][0]
    [study] = [item for item in found if item.StudyInstanceUID == first_study]
    assert study.QueryRetrieveLevel == "STUDY"
    assert study.RetrieveAETitle == "NOCTIS"
    assert study.InstanceAvailability == "ONLINE"
    assert study.ModalitiesInStudy == ["CT", "MR"]
    assert study.NumberOfStudyRelatedInstances == 3
    assert "AccessionNumber" not in study


@pytest.mark.dcmtk
def test_findscu_person_name_wildcard_ignores_case(
    scp: RunningSCP, catalog: Catalog, tmp_path: Path
) -> None:
    output, found = findscu(
        scp.port, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientName=doe*"
    )

    assert "Received Final Find Response (Success)" in output, output
    assert set(_values(found, "StudyInstanceUID")) == set(catalog.patients["PID-A"])
    assert set(_values(found, "PatientName")) == {"Doe^Jane"}


@pytest.mark.dcmtk
def test_findscu_study_date_range(scp: RunningSCP, catalog: Catalog, tmp_path: Path) -> None:
    _, found = findscu(
        scp.port, tmp_path, "QueryRetrieveLevel=STUDY", "StudyInstanceUID", "StudyDate=20240101-"
    )

    expected = {catalog.patients["PID-A"][0], catalog.patients["PID-B"][0]}
    assert set(_values(found, "StudyInstanceUID")) == expected
    assert sorted(_values(found, "StudyDate")) == ["20240115", "20240201"]


@pytest.mark.dcmtk
def test_findscu_series_of_one_study(scp: RunningSCP, catalog: Catalog, tmp_path: Path) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]

    _, found = findscu(
        scp.port,
        tmp_path,
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={study_instance_uid}",
        "SeriesInstanceUID",
        "Modality",
        "NumberOfSeriesRelatedInstances",
    )

    assert _values(found, "SeriesInstanceUID") == catalog.series[study_instance_uid]
    assert _values(found, "Modality") == ["CT", "MR"]
    assert _values(found, "NumberOfSeriesRelatedInstances") == ["2", "1"]
    assert set(_values(found, "StudyInstanceUID")) == {study_instance_uid}
    assert {item.QueryRetrieveLevel for item in found} == {"SERIES"}


@pytest.mark.dcmtk
def test_findscu_images_of_one_series(scp: RunningSCP, catalog: Catalog, tmp_path: Path) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]
    series_instance_uid = catalog.series[study_instance_uid][0]

    _, found = findscu(
        scp.port,
        tmp_path,
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={study_instance_uid}",
        f"SeriesInstanceUID={series_instance_uid}",
        "SOPInstanceUID",
        "InstanceNumber",
        "SOPClassUID",
    )

    assert _values(found, "SOPInstanceUID") == catalog.instances[series_instance_uid]
    assert _values(found, "InstanceNumber") == ["1", "2"]
    assert set(_values(found, "SeriesInstanceUID")) == {series_instance_uid}


@pytest.mark.dcmtk
def test_findscu_patient_level_counts_studies(scp: RunningSCP, tmp_path: Path) -> None:
    output, found = findscu(
        scp.port,
        tmp_path,
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
        "NumberOfPatientRelatedSeries",
        "NumberOfPatientRelatedInstances",
        model="-P",
    )

    assert "Received Final Find Response (Success)" in output, output
    by_patient = {str(item.PatientID): item for item in found}
    assert sorted(by_patient) == ["PID-A", "PID-B"]
    assert by_patient["PID-A"].NumberOfPatientRelatedStudies == 2
    assert by_patient["PID-A"].NumberOfPatientRelatedSeries == 3
    assert by_patient["PID-A"].NumberOfPatientRelatedInstances == 5
    assert by_patient["PID-B"].NumberOfPatientRelatedStudies == 1
    assert str(by_patient["PID-B"].PatientName) == "Müller^Jörg"


def test_patient_level_matches_name(scp: RunningSCP) -> None:
    responses = find(
        scp.port,
        identifier("PATIENT", PatientName="MÜLLER*", PatientID=""),
        PATIENT_ROOT_FIND,
    )

    assert _values(matches(responses), "PatientID") == ["PID-B"]


def test_patient_root_study_level_needs_patient_id(scp: RunningSCP) -> None:
    responses = find(scp.port, identifier("STUDY", StudyInstanceUID=""), PATIENT_ROOT_FIND)

    assert [status for status, _ in responses] == [IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


def test_patient_root_study_level_returns_patient_id(scp: RunningSCP, catalog: Catalog) -> None:
    responses = find(
        scp.port, identifier("STUDY", PatientID="PID-A", StudyInstanceUID=""), PATIENT_ROOT_FIND
    )

    found = matches(responses)
    assert set(_values(found, "StudyInstanceUID")) == set(catalog.patients["PID-A"])
    assert set(_values(found, "PatientID")) == {"PID-A"}


def test_patient_root_image_level(scp: RunningSCP, catalog: Catalog) -> None:
    study_instance_uid = catalog.patients["PID-A"][1]
    series_instance_uid = catalog.series[study_instance_uid][0]

    responses = find(
        scp.port,
        identifier(
            "IMAGE",
            PatientID="PID-A",
            StudyInstanceUID=study_instance_uid,
            SeriesInstanceUID=series_instance_uid,
            SOPInstanceUID="",
        ),
        PATIENT_ROOT_FIND,
    )

    found = matches(responses)
    assert _values(found, "SOPInstanceUID") == catalog.instances[series_instance_uid]
    assert set(_values(found, "PatientID")) == {"PID-A"}
    assert set(_values(found, "StudyInstanceUID")) == {study_instance_uid}


def test_series_level_needs_study_uid(scp: RunningSCP) -> None:
    responses = find(scp.port, identifier("SERIES", SeriesInstanceUID="", Modality="CT"))

    assert [status for status, _ in responses] == [IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


def test_list_of_study_uids_at_series_level_rejected(scp: RunningSCP, catalog: Catalog) -> None:
    studies = catalog.patients["PID-A"]

    responses = find(scp.port, identifier("SERIES", StudyInstanceUID=studies, SeriesInstanceUID=""))

    assert [status for status, _ in responses] == [IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


def test_list_of_uid_matching_at_study_level(scp: RunningSCP, catalog: Catalog) -> None:
    studies = catalog.patients["PID-A"]

    found = matches(find(scp.port, identifier("STUDY", StudyInstanceUID=studies)))

    assert set(_values(found, "StudyInstanceUID")) == set(studies)


def test_missing_level_rejected(scp: RunningSCP) -> None:
    request = Dataset()
    request.PatientName = "*"

    responses = find(scp.port, request)

    assert [status for status, _ in responses] == [IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


def test_patient_level_in_study_root_rejected(scp: RunningSCP) -> None:
    responses = find(scp.port, identifier("PATIENT", PatientID=""))

    assert [status for status, _ in responses] == [IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS]


def test_invalid_date_rejected_with_comment(scp: RunningSCP) -> None:
    with associated(scp.port) as association:
        responses = list(
            association.send_c_find(
                identifier("STUDY", StudyDate="2024-01"), "1.2.840.10008.5.1.4.1.2.2.1"
            )
        )

    [(status, found)] = responses
    assert status.Status == IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS
    assert "StudyDate" in status.ErrorComment
    assert found is None


def test_latin1_request_matches_utf8_response(scp: RunningSCP, catalog: Catalog) -> None:
    request = identifier("STUDY", StudyInstanceUID="", PatientName="Müller*")
    request.SpecificCharacterSet = "ISO_IR 100"

    found = matches(find(scp.port, request))

    assert _values(found, "StudyInstanceUID") == catalog.patients["PID-B"]
    assert found[0].SpecificCharacterSet == "ISO_IR 192"
    assert str(found[0].PatientName) == "Müller^Jörg"


def test_ascii_response_names_no_character_set(scp: RunningSCP) -> None:
    found = matches(find(scp.port, identifier("STUDY", PatientName="Doe^Jane")))

    assert len(found) == 2
    assert all("SpecificCharacterSet" not in item for item in found)


def test_lower_level_key_neither_matched_nor_returned(scp: RunningSCP) -> None:
    request = identifier("STUDY", StudyInstanceUID="", Modality="US")
    request.add_new(0x00091010, "LO", "private")

    responses = find(scp.port, request)

    statuses = {status for status, _ in responses[:-1]}
    assert statuses == {PENDING_WITH_UNSUPPORTED_KEYS}
    found = matches(responses)
    assert len(found) == 3
    assert all("Modality" not in item for item in found)
    assert all(0x00091010 not in item for item in found)


def test_unmatchable_key_returned_with_its_value(scp: RunningSCP, catalog: Catalog) -> None:
    study_instance_uid = catalog.patients["PID-A"][0]

    responses = find(
        scp.port,
        identifier("STUDY", StudyInstanceUID=study_instance_uid, NumberOfStudyRelatedSeries="9"),
    )

    assert [status for status, _ in responses] == [PENDING_WITH_UNSUPPORTED_KEYS, SUCCESS]
    assert matches(responses)[0].NumberOfStudyRelatedSeries == 2


def test_supported_keys_give_plain_pending(scp: RunningSCP) -> None:
    responses = find(scp.port, identifier("STUDY", PatientID="PID-B", StudyDescription=""))

    assert [status for status, _ in responses] == [PENDING, SUCCESS]
    assert matches(responses)[0].StudyDescription == "Synthetic study"


def test_find_without_query_permission_refused(scp: RunningSCP) -> None:
    responses = find(scp.port, identifier("STUDY", PatientID=""), ae_title=NO_PERMISSION_AE)

    assert [status for status, _ in responses] == [NOT_AUTHORIZED]


def test_cancel_stops_the_matches(scp: RunningSCP, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_identifiers = qr_find.find_identifiers

    def find_identifiers_until_cancel(*args: object) -> Iterator[Dataset]:
        # Hold the second match back until the C-CANCEL has arrived, so the test does
        # not depend on how fast the SCU cancels.
        for position, found in enumerate(real_find_identifiers(*args)):  # type: ignore[arg-type]
            if position == 1:
                assert wait_until(cancel_arrived(scp, message_id=1))
            yield found

    monkeypatch.setattr(qr_find, "find_identifiers", find_identifiers_until_cancel)
    statuses = []
    with associated(scp.port) as association:
        responses = association.send_c_find(
            identifier("STUDY", StudyInstanceUID=""), "1.2.840.10008.5.1.4.1.2.2.1", msg_id=1
        )
        for status, _ in responses:
            statuses.append(int(status.Status))
            if len(statuses) == 1:
                association.send_c_cancel(1, query_model="1.2.840.10008.5.1.4.1.2.2.1")

    assert statuses == [PENDING, CANCEL]
