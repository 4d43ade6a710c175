"""QIDO-RS matching types (PS3.4 C.2.2.2) over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from tests.qido.helpers import search, store, values_of_all
from tests.support import make_dataset


def _names(results: list[dict[str, Any]]) -> set[str]:
    return {result["00100010"]["Value"][0]["Alphabetic"] for result in results}


def test_single_value_matches_patient_id(client: TestClient, context: ArchiveContext) -> None:
    store(context, make_dataset(patient_id="PID-1", patient_name="One^Patient"))
    store(context, make_dataset(patient_id="PID-2", patient_name="Two^Patient"))

    results = search(client, "/studies", {"PatientID": "PID-2"})

    assert _names(results) == {"Two^Patient"}


def test_keyword_and_tag_keys_match_alike(client: TestClient, context: ArchiveContext) -> None:
    first = store(context, make_dataset(patient_id="PID-1", patient_name="One^Patient"))
    store(context, make_dataset(patient_id="PID-2", patient_name="Two^Patient"))
    study_instance_uid = first.StudyInstanceUID

    by_keyword = search(client, "/studies", {"PatientID": "PID-1"})
    by_tag = search(client, "/studies", {"00100020": "PID-1"})
    by_lowercase_tag = search(client, "/studies", {"0020000d": study_instance_uid})

    assert _names(by_keyword) == {"One^Patient"}
    assert by_tag == by_keyword
    assert by_lowercase_tag == by_keyword


def test_uid_list_matches_each_uid(client: TestClient, context: ArchiveContext) -> None:
    studies = [generate_uid() for _ in range(3)]
    for study_instance_uid in studies:
        store(context, make_dataset(study_instance_uid=study_instance_uid))

    with_commas = search(client, "/studies", {"StudyInstanceUID": f"{studies[0]},{studies[2]}"})
    with_backslashes = search(
        client, "/studies", {"StudyInstanceUID": f"{studies[0]}\\{studies[2]}"}
    )

    assert values_of_all(with_commas, "StudyInstanceUID") == {studies[0], studies[2]}
    assert values_of_all(with_backslashes, "StudyInstanceUID") == {studies[0], studies[2]}


def test_universal_matching_matches_everything(client: TestClient, context: ArchiveContext) -> None:
    store(context, make_dataset(patient_name="Doe^Jane"))
    store(context, make_dataset(patient_name=""))

    empty_value = search(client, "/studies", {"PatientName": ""})
    asterisk = search(client, "/studies", {"PatientName": "*"})
    empty_unindexed = search(client, "/studies", {"OtherPatientIDs": ""})

    assert len(empty_value) == 2
    assert len(asterisk) == 2
    assert len(empty_unindexed) == 2
    assert all("00101000" in result for result in empty_unindexed)


def test_wildcards_match_patient_name(client: TestClient, context: ArchiveContext) -> None:
    for name in ("Doe^Jane", "Doe^John", "Roe^Jane", "Doering^Anna"):
        store(context, make_dataset(patient_name=name))

    assert _names(search(client, "/studies", {"PatientName": "Doe^*"})) == {
        "Doe^Jane",
        "Doe^John",
    }
    assert _names(search(client, "/studies", {"PatientName": "?oe^Jane"})) == {
        "Doe^Jane",
        "Roe^Jane",
    }
    assert _names(search(client, "/studies", {"PatientName": "*^J?n*"})) == {
        "Doe^Jane",
        "Roe^Jane",
    }
    assert _names(search(client, "/studies", {"PatientName": "Doe*"})) == {
        "Doe^Jane",
        "Doe^John",
        "Doering^Anna",
    }


def test_text_wildcards_are_case_sensitive(client: TestClient, context: ArchiveContext) -> None:
    store(context, make_dataset(accession_number="ACC-0001"))

    assert search(client, "/studies", {"AccessionNumber": "acc*"}) == []
    assert len(search(client, "/studies", {"AccessionNumber": "ACC*"})) == 1
    assert search(client, "/studies", {"AccessionNumber": "acc-0001"}) == []


def test_sql_wildcard_characters_match_literally(
    client: TestClient, context: ArchiveContext
) -> None:
    for name in ("Fifty_Fifty", "FiftyXFifty", "Hundred%^Sure", "Hundred^Sure"):
        store(context, make_dataset(patient_name=name))

    assert _names(search(client, "/studies", {"PatientName": "Fifty_Fifty"})) == {"Fifty_Fifty"}
    assert _names(search(client, "/studies", {"PatientName": "Fifty_*"})) == {"Fifty_Fifty"}
    assert _names(search(client, "/studies", {"PatientName": "*%*"})) == {"Hundred%^Sure"}
    assert _names(search(client, "/studies", {"PatientName": "hundred%^sure"})) == {"Hundred%^Sure"}


def test_glob_characters_match_literally(client: TestClient, context: ArchiveContext) -> None:
    store(context, make_dataset(accession_number="A[1]B"))
    store(context, make_dataset(accession_number="A1B"))

    results = search(client, "/studies", {"AccessionNumber": "A[1]*"})

    assert values_of_all(results, "AccessionNumber") == {"A[1]B"}


def test_date_matching_single_and_ranges(client: TestClient, context: ArchiveContext) -> None:
    for study_date in ("20230101", "20240115", "20250101", ""):
        store(context, make_dataset(study_date=study_date, accession_number=study_date or "none"))

    def dates(value: str) -> set[str]:
        return values_of_all(search(client, "/studies", {"StudyDate": value}), "AccessionNumber")

    assert dates("20240115") == {"20240115"}
    assert dates("20240101-20241231") == {"20240115"}
    assert dates("-20240115") == {"20230101", "20240115"}
    assert dates("20240115-") == {"20240115", "20250101"}
    assert dates("20240116-20241231") == set()


def test_time_matching_uses_precision(client: TestClient, context: ArchiveContext) -> None:
    for study_time in ("083000", "101500", "235959.5", ""):
        store(context, make_dataset(study_time=study_time, accession_number=study_time or "none"))

    def times(value: str) -> set[str]:
        return values_of_all(search(client, "/studies", {"StudyTime": value}), "AccessionNumber")

    assert times("08-10") == {"083000", "101500"}
    assert times("10") == {"101500"}
    assert times("1015") == {"101500"}
    assert times("-0900") == {"083000"}
    assert times("2359-") == {"235959.5"}
    assert times("10:15") == {"101500"}


def test_person_names_match_ignoring_case(client: TestClient, context: ArchiveContext) -> None:
    dataset = make_dataset(patient_name="Doe^Jane")
    dataset.ReferringPhysicianName = "Smith^Anna"
    store(context, dataset)
    store(context, make_dataset(patient_name="Roe^Richard"))

    assert _names(search(client, "/studies", {"PatientName": "DOE^JANE"})) == {"Doe^Jane"}
    assert _names(search(client, "/studies", {"ReferringPhysicianName": "smith*"})) == {"Doe^Jane"}


def test_fuzzy_matching_matches_word_starts(client: TestClient, context: ArchiveContext) -> None:
    store(context, make_dataset(patient_name="Doe^Jane^Marie"))
    store(context, make_dataset(patient_name="Janssen^Peter"))
    store(context, make_dataset(patient_name="Roe^Richard"))

    def fuzzy(name: str) -> set[str]:
        return _names(search(client, "/studies", {"PatientName": name, "fuzzymatching": "true"}))

    assert fuzzy("jan") == {"Doe^Jane^Marie", "Janssen^Peter"}
    assert fuzzy("doe jan") == {"Doe^Jane^Marie"}
    assert fuzzy("MARIE^doe") == {"Doe^Jane^Marie"}
    assert fuzzy("oe") == set()
    assert search(client, "/studies", {"PatientName": "jan", "fuzzymatching": "false"}) == []


def test_modalities_in_study_matches_series_modalities(
    client: TestClient, context: ArchiveContext
) -> None:
    ct_and_mr = generate_uid()
    store(context, make_dataset(study_instance_uid=ct_and_mr, modality="CT"))
    store(context, make_dataset(study_instance_uid=ct_and_mr, modality="MR"))
    only_ct = store(context, make_dataset(modality="CT")).StudyInstanceUID
    only_mr = store(context, make_dataset(modality="MR")).StudyInstanceUID

    def studies(params: dict[str, str]) -> set[str]:
        return values_of_all(search(client, "/studies", params), "StudyInstanceUID")

    assert studies({"ModalitiesInStudy": "CT"}) == {ct_and_mr, only_ct}
    assert studies({"ModalitiesInStudy": "MR\\CT"}) == {ct_and_mr, only_ct, only_mr}
    assert studies({"ModalitiesInStudy": "M*"}) == {ct_and_mr, only_mr}
    assert studies({"ModalitiesInStudy": "MR\\CT", "multiplevaluematching": "true"}) == {ct_and_mr}
    assert studies({"ModalitiesInStudy": "C"}) == set()


def test_integer_keys_match_single_value(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    series_instance_uid = generate_uid()
    for number in (1, 2, 3):
        store(
            context,
            make_dataset(
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                instance_number=number,
            ),
        )

    results = search(client, "/instances", {"InstanceNumber": "2"})

    assert values_of_all(results, "InstanceNumber") == {2}


def test_series_search_matches_study_keys(client: TestClient, context: ArchiveContext) -> None:
    store(context, make_dataset(patient_id="PID-1", modality="CT"))
    store(context, make_dataset(patient_id="PID-2", modality="MR"))

    results = search(client, "/series", {"PatientID": "PID-2"})

    assert values_of_all(results, "Modality") == {"MR"}


def test_instance_search_stays_in_path_series(client: TestClient, context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    first = store(context, make_dataset(study_instance_uid=study_instance_uid))
    store(context, make_dataset(study_instance_uid=study_instance_uid))

    results = search(
        client,
        f"/studies/{study_instance_uid}/series/{first.SeriesInstanceUID}/instances",
    )

    assert values_of_all(results, "SOPInstanceUID") == {first.SOPInstanceUID}
