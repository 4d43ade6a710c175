"""QIDO-RS result attributes (PS3.18 10.6.3.3), on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from tests.qido.helpers import element, search, store, value, values
from tests.support import make_dataset

STUDY_DEFAULT_KEYWORDS = {
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "InstanceAvailability",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "RetrieveURL",
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
}


def _store_study(context: ArchiveContext) -> tuple[str, list[str]]:
    """Store a study of a CT series of two instances and an MR series of one."""
    study_instance_uid = str(generate_uid())
    series = [str(generate_uid()), str(generate_uid())]
    for number, (series_instance_uid, modality) in enumerate(
        [(series[0], "CT"), (series[0], "CT"), (series[1], "MR")], start=1
    ):
        dataset = make_dataset(
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            modality=modality,
            instance_number=number,
        )
        dataset.Manufacturer = "Noctis Test Devices"
        dataset.OtherPatientIDs = "OTHER-7"
        dataset.ProtocolName = "Head routine"
        store(context, dataset)
    return study_instance_uid, series


def test_study_result_has_default_attributes(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid, _ = _store_study(context)

    [result] = search(client, "/studies")

    for keyword in STUDY_DEFAULT_KEYWORDS:
        assert element(result, keyword) is not None, keyword
    assert value(result, "PatientName") == {"Alphabetic": "Doe^Jane"}
    assert values(result, "ModalitiesInStudy") == ["CT", "MR"]
    assert value(result, "InstanceAvailability") == "ONLINE"
    assert value(result, "RetrieveURL") == (
        f"http://testserver/dicom-web/studies/{study_instance_uid}"
    )
    assert element(result, "ReferringPhysicianName") == {"vr": "PN"}
    assert element(result, "TimezoneOffsetFromUTC") is None
    assert element(result, "SpecificCharacterSet") is None
    assert element(result, "SeriesInstanceUID") is None


def test_values_carry_their_vr(client: TestClient, context: ArchiveContext) -> None:
    _store_study(context)

    [result] = search(client, "/studies")

    assert element(result, "PatientName") == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert element(result, "NumberOfStudyRelatedSeries") == {"vr": "IS", "Value": [2]}
    assert element(result, "StudyDate") == {"vr": "DA", "Value": ["20240115"]}
    assert (element(result, "RetrieveURL") or {}).get("vr") == "UR"


def test_counts_are_computed_per_level(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid, series = _store_study(context)

    [study] = search(client, "/studies")
    series_results = search(client, f"/studies/{study_instance_uid}/series")

    assert value(study, "NumberOfStudyRelatedSeries") == 2
    assert value(study, "NumberOfStudyRelatedInstances") == 3
    counts = {
        value(result, "SeriesInstanceUID"): value(result, "NumberOfSeriesRelatedInstances")
        for result in series_results
    }
    assert counts == {series[0]: 2, series[1]: 1}


def test_series_results_carry_study_uid(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid, series = _store_study(context)

    study_series = search(client, f"/studies/{study_instance_uid}/series")
    all_series = search(client, "/series")

    assert [value(result, "SeriesInstanceUID") for result in study_series] == series
    assert {value(result, "StudyInstanceUID") for result in study_series} == {study_instance_uid}
    assert element(study_series[0], "PatientName") is None
    assert value(all_series[0], "PatientName") == {"Alphabetic": "Doe^Jane"}
    assert value(study_series[0], "RetrieveURL") == (
        f"http://testserver/dicom-web/studies/{study_instance_uid}/series/{series[0]}"
    )


def test_instance_results_carry_parent_uids(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid, series = _store_study(context)

    results = search(client, f"/studies/{study_instance_uid}/instances")

    assert [value(result, "InstanceNumber") for result in results] == [1, 2, 3]
    assert {value(result, "StudyInstanceUID") for result in results} == {study_instance_uid}
    assert [value(result, "SeriesInstanceUID") for result in results] == [
        series[0],
        series[0],
        series[1],
    ]
    assert value(results[0], "Rows") == 16
    assert value(results[0], "Modality") == "CT"
    assert element(results[0], "NumberOfFrames") is None
    assert value(results[0], "RetrieveURL").endswith(
        f"/series/{series[0]}/instances/{value(results[0], 'SOPInstanceUID')}"
    )


def test_includefield_forms_add_attributes(client: TestClient, context: ArchiveContext) -> None:
    _store_study(context)

    [comma_list] = search(client, "/studies", {"includefield": "OtherPatientIDs,00081030"})
    [repeated] = search(
        client, "/studies", [("includefield", "OtherPatientIDs"), ("includefield", "00081030")]
    )

    assert value(comma_list, "OtherPatientIDs") == "OTHER-7"
    assert value(comma_list, "StudyDescription") == "Synthetic study"
    assert repeated == comma_list


def test_includefield_all_returns_level_attributes(
    client: TestClient, context: ArchiveContext
) -> None:
    study_instance_uid, _ = _store_study(context)

    [study] = search(client, "/studies", {"includefield": "all"})
    [first_series, _] = search(
        client, f"/studies/{study_instance_uid}/series", {"includefield": "all"}
    )

    assert value(study, "OtherPatientIDs") == "OTHER-7"
    assert element(study, "Manufacturer") is None
    assert element(study, "Rows") is None
    assert value(first_series, "Manufacturer") == "Noctis Test Devices"
    assert value(first_series, "ProtocolName") == "Head routine"
    assert element(first_series, "OtherPatientIDs") is None
    assert element(first_series, "InstanceNumber") is None


def test_includefield_lower_level_attribute_is_returned(
    client: TestClient, context: ArchiveContext
) -> None:
    _store_study(context)

    [study] = search(client, "/studies", {"includefield": "Manufacturer,Modality"})

    assert value(study, "Manufacturer") == "Noctis Test Devices"
    assert value(study, "Modality") == "CT"


def test_includefield_absent_attribute_is_empty(
    client: TestClient, context: ArchiveContext
) -> None:
    _store_study(context)

    [study] = search(client, "/studies", {"includefield": "PatientComments,00191001"})

    assert element(study, "PatientComments") == {"vr": "LT"}
    assert study["00191001"] == {"vr": "UN"}


def test_sequence_path_includefield_returns_sequence(
    client: TestClient, context: ArchiveContext
) -> None:
    code = Dataset()
    code.CodeValue = "P1"
    code.CodingSchemeDesignator = "99TEST"
    dataset = make_dataset()
    dataset.ProcedureCodeSequence = [code]
    store(context, dataset)

    [study] = search(client, "/studies", {"includefield": "ProcedureCodeSequence.CodeValue"})

    sequence = element(study, "ProcedureCodeSequence")
    assert sequence is not None
    assert sequence["Value"][0]["00080100"]["Value"] == ["P1"]


def test_timezone_offset_returned_when_known(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset()
    dataset.TimezoneOffsetFromUTC = "+0100"
    store(context, dataset)

    [study] = search(client, "/studies")
    [series] = search(client, "/series")
    [instance] = search(client, "/instances")

    assert value(study, "TimezoneOffsetFromUTC") == "+0100"
    assert value(series, "TimezoneOffsetFromUTC") == "+0100"
    assert value(instance, "TimezoneOffsetFromUTC") == "+0100"


def test_specific_character_set_is_utf8_when_requested(
    client: TestClient, context: ArchiveContext
) -> None:
    dataset = make_dataset(patient_name="Buc^Jérôme")
    dataset.SpecificCharacterSet = "ISO_IR 100"
    store(context, dataset)

    [study] = search(client, "/studies", {"includefield": "SpecificCharacterSet"})

    assert value(study, "SpecificCharacterSet") == "ISO_IR 192"
    assert value(study, "PatientName") == {"Alphabetic": "Buc^Jérôme"}


def test_attributes_are_in_tag_order(client: TestClient, context: ArchiveContext) -> None:
    _store_study(context)

    [study] = search(client, "/studies", {"includefield": "all"})

    assert list(study) == sorted(study)


def test_bulkdata_uri_points_at_instance(client: TestClient, context: ArchiveContext) -> None:
    dataset = store(context, make_dataset(rows=64, columns=64))

    [instance] = search(client, "/instances", {"includefield": "all"})

    pixel_data = instance["7FE00010"]
    assert pixel_data["BulkDataURI"] == (
        f"http://testserver/dicom-web/studies/{dataset.StudyInstanceUID}/series/"
        f"{dataset.SeriesInstanceUID}/instances/{dataset.SOPInstanceUID}/bulkdata/7FE00010"
    )


def test_no_match_returns_empty_array(client: TestClient, context: ArchiveContext) -> None:
    _store_study(context)

    response = client.get("/dicom-web/studies", params={"PatientID": "nobody"})

    assert response.status_code == 200
    assert response.json() == []
    assert response.headers["content-type"] == "application/dicom+json"
