"""The audit trail: what each access records, the admin API, the export, append-only rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from noctis_common.audit import (
    AuditEvent,
    AuditEventType,
    AuditPatient,
    AuditTrail,
    Outcome,
    insert_audit_events,
)
from noctis_common.audit_export import AUDIT_MESSAGE_SCHEMA
from noctis_common.context import ArchiveContext
from noctis_common.db import Database
from noctis_common.db.models import AuditRecord
from noctis_common.roles import Role
from noctis_common.settings import Settings
from noctis_ingest_scp.scp import StorageSCP
from tests.auth.conftest import StoredStudy, store_study
from tests.auth.support import SigningKey, bearer, make_token
from tests.stow.bodies import content_type, dicom_body
from tests.support import CT_IMAGE_STORAGE, free_port, make_dataset

AUDIT_RECORDS = "/audit/records"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def _event_id(message: etree._Element) -> str:
    return str(message.xpath("string(EventIdentification/EventID/@csd-code)"))


def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(AUDIT_MESSAGE_SCHEMA)))


def _records(client: TestClient, admin_token: str, **filters: str) -> list[dict[str, Any]]:
    response = client.get(AUDIT_RECORDS, params=filters, headers=bearer(admin_token))
    assert response.status_code == 200, response.text
    records: list[dict[str, Any]] = response.json()["records"]
    return records


@pytest.fixture
def admin_token(signing_key: SigningKey) -> str:
    return make_token(signing_key, roles=(Role.ADMINISTRATOR,), subject="admin-1", username="root")


@pytest.fixture
def radiologist_token(signing_key: SigningKey) -> str:
    return make_token(signing_key, roles=(Role.RADIOLOGIST,), subject="rad-7", username="house")


def test_search_is_recorded_with_matches(
    auth_client: TestClient, stored_study: StoredStudy, radiologist_token: str, admin_token: str
) -> None:
    response = auth_client.get("/dicom-web/studies", headers=bearer(radiologist_token))
    assert response.status_code == 200

    (record,) = _records(auth_client, admin_token, event_type="query")
    assert record["user_id"] == "rad-7"
    assert record["user_name"] == "house"
    assert record["outcome"] == 0
    assert record["network_access_point"] == "testclient"
    assert record["study_instance_uids"] == [stored_study.study_instance_uid]
    assert record["patients"][0]["patient_id"] == stored_study.patient_id
    assert record["request"] == "GET /dicom-web/studies"


def test_retrieve_is_recorded_per_study(
    auth_client: TestClient, stored_study: StoredStudy, radiologist_token: str, admin_token: str
) -> None:
    url = f"/dicom-web/studies/{stored_study.study_instance_uid}/metadata"
    assert auth_client.get(url, headers=bearer(radiologist_token)).status_code == 200

    (record,) = _records(
        auth_client, admin_token, event_type="retrieve", patient_id=stored_study.patient_id
    )
    assert record["event_action"] == "R"
    assert record["study_instance_uids"] == [stored_study.study_instance_uid]


def test_store_is_recorded_with_instance_count(
    auth_client: TestClient, radiologist_token: str, admin_token: str
) -> None:
    study_instance_uid = generate_uid()
    datasets = [
        make_dataset(
            study_instance_uid=study_instance_uid, patient_id="PID-STOW", instance_number=n
        )
        for n in (1, 2)
    ]
    response = auth_client.post(
        "/dicom-web/studies",
        content=dicom_body(datasets),
        headers={**bearer(radiologist_token), "Content-Type": content_type()},
    )
    assert response.status_code == 200

    (record,) = _records(auth_client, admin_token, study_instance_uid=study_instance_uid)
    assert record["event_type"] == "store"
    assert record["event_action"] == "C"
    assert record["number_of_instances"] == 2
    assert record["patients"][0]["patient_id"] == "PID-STOW"


def test_delete_is_recorded_with_patient(
    auth_client: TestClient, stored_study: StoredStudy, admin_token: str
) -> None:
    url = f"/dicom-web/studies/{stored_study.study_instance_uid}"
    assert auth_client.delete(url, headers=bearer(admin_token)).status_code == 204

    (record,) = _records(auth_client, admin_token, event_type="delete")
    assert record["event_action"] == "D"
    assert record["patients"][0]["patient_id"] == stored_study.patient_id


def test_retrieve_before_delete_keeps_patient(
    auth_client: TestClient, stored_study: StoredStudy, admin_token: str
) -> None:
    url = f"/dicom-web/studies/{stored_study.study_instance_uid}"
    assert auth_client.get(f"{url}/metadata", headers=bearer(admin_token)).status_code == 200
    assert auth_client.delete(url, headers=bearer(admin_token)).status_code == 204

    (record,) = _records(auth_client, admin_token, event_type="retrieve")
    assert record["patients"][0]["patient_id"] == stored_study.patient_id


def test_refusals_are_recorded_as_failures(
    auth_client: TestClient, signing_key: SigningKey, admin_token: str
) -> None:
    gateway = make_token(signing_key, roles=(Role.MODALITY_GATEWAY,), subject="gateway-3")
    assert auth_client.get("/dicom-web/studies", headers=bearer(gateway)).status_code == 403
    assert auth_client.get("/dicom-web/studies").status_code == 401

    records = _records(auth_client, admin_token, outcome="failure")
    by_user = {record["user_id"]: record for record in records}
    assert by_user["gateway-3"]["outcome"] == 4
    assert "missing scope search" in by_user["gateway-3"]["outcome_description"]
    assert by_user["unauthenticated"]["outcome"] == 4


def test_audit_searches_are_recorded(auth_client: TestClient, admin_token: str) -> None:
    _records(auth_client, admin_token)
    records = _records(auth_client, admin_token, event_type="audit-read")
    assert records[0]["user_id"] == "admin-1"


def test_search_filters_select_records(
    auth_client: TestClient, auth_context: ArchiveContext, tmp_path: Path, admin_token: str
) -> None:
    trail = auth_context.audit
    assert trail is not None
    now = datetime.now(UTC)
    old = AuditEvent(
        AuditEventType.RETRIEVE,
        Outcome.SUCCESS,
        "alice",
        study_instance_uids=("1.2.3",),
        patients=(AuditPatient("P-1", "Doe^Jane"),),
        event_time=now - timedelta(days=2),
    )
    recent = AuditEvent(
        AuditEventType.QUERY, Outcome.MINOR_FAILURE, "bob", study_instance_uids=("1.2.4",)
    )
    trail.record(old)
    trail.record(recent)

    def record_uids(**filters: str) -> set[str]:
        return {record["record_uid"] for record in _records(auth_client, admin_token, **filters)}

    assert record_uids(user="alice") == {old.record_uid}
    assert record_uids(patient_id="P-1") == {old.record_uid}
    assert record_uids(study_instance_uid="1.2.4") == {recent.record_uid}
    since = (now - timedelta(hours=1)).isoformat()
    assert old.record_uid not in record_uids(since=since)
    assert recent.record_uid in record_uids(since=since)
    until = (now - timedelta(days=1)).isoformat()
    assert record_uids(until=until) == {old.record_uid}
    assert record_uids(outcome="4", user="bob") == {recent.record_uid}


def test_invalid_search_filter_is_rejected(auth_client: TestClient, admin_token: str) -> None:
    response = auth_client.get(
        AUDIT_RECORDS, params={"since": "yesterday"}, headers=bearer(admin_token)
    )
    assert response.status_code == 400
    assert "ISO 8601" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "params"),
    [
        (AUDIT_RECORDS, {"offset": str(2**64)}),
        (AUDIT_RECORDS, {"offset": "\u00b2"}),
        (AUDIT_RECORDS, {"limit": "\u00b2"}),
        (AUDIT_RECORDS, {"outcome": "\u00b2"}),
        ("/audit/export", {"offset": str(2**64)}),
    ],
    ids=["huge-offset", "superscript-offset", "superscript-limit", "superscript-outcome", "export"],
)
def test_out_of_range_filter_is_rejected(
    auth_client: TestClient, admin_token: str, path: str, params: dict[str, str]
) -> None:
    response = auth_client.get(path, params=params, headers=bearer(admin_token))
    assert response.status_code == 400
    assert "invalid" in response.json()["detail"]


def test_huge_record_id_is_not_found(auth_client: TestClient, admin_token: str) -> None:
    response = auth_client.get(f"{AUDIT_RECORDS}/{2**64}/message", headers=bearer(admin_token))
    assert response.status_code == 404


def test_export_validates_against_schema(
    auth_client: TestClient,
    auth_context: ArchiveContext,
    stored_study: StoredStudy,
    radiologist_token: str,
    admin_token: str,
) -> None:
    study = stored_study.study_instance_uid
    auth_client.get(
        f"/dicom-web/studies?StudyInstanceUID={study}", headers=bearer(radiologist_token)
    )
    auth_client.get(f"/dicom-web/studies/{study}/metadata", headers=bearer(radiologist_token))
    auth_client.delete(f"/dicom-web/studies/{study}", headers=bearer(radiologist_token))
    assert auth_context.audit is not None
    auth_context.audit.record_login(username="house", client_address="127.0.0.1", succeeded=True)
    auth_context.audit.record_login(username="house", client_address="::1", succeeded=False)

    response = auth_client.get("/audit/export", headers=bearer(admin_token))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    messages = etree.fromstring(response.content)
    schema = _schema()
    event_ids = set()
    for message in messages:
        assert schema.validate(etree.ElementTree(message)), schema.error_log
        event_ids.add(_event_id(message))
    assert {"110112", "110104", "110114"} <= event_ids
    query = next(message for message in messages if _event_id(message) == "110112")
    patient_ids = query.xpath(
        "ParticipantObjectIdentification[@ParticipantObjectTypeCode='1']/@ParticipantObjectID"
    )
    assert patient_ids == [stored_study.patient_id]


def test_single_record_message_validates(
    auth_client: TestClient, stored_study: StoredStudy, radiologist_token: str, admin_token: str
) -> None:
    auth_client.get("/dicom-web/studies", headers=bearer(radiologist_token))
    (record,) = _records(auth_client, admin_token, event_type="query")
    response = auth_client.get(
        f"{AUDIT_RECORDS}/{record['id']}/message", headers=bearer(admin_token)
    )
    assert response.status_code == 200
    document = etree.fromstring(response.content)
    assert _schema().validate(etree.ElementTree(document))


def test_audit_api_needs_admin_scope(auth_client: TestClient, radiologist_token: str) -> None:
    response = auth_client.get(AUDIT_RECORDS, headers=bearer(radiologist_token))
    assert response.status_code == 403
    assert response.json()["missing_scope"] == "admin"


def test_audit_rows_cannot_change(database_url: str) -> None:
    database = Database(database_url)
    try:
        database.upgrade()
        event = AuditEvent(
            AuditEventType.QUERY,
            Outcome.SUCCESS,
            "alice",
            study_instance_uids=("1.2.3",),
            patients=(AuditPatient("P-1"),),
        )
        assert insert_audit_events(database, [event], "NOCTIS") == 1
        for statement in (
            "UPDATE audit_record SET user_id = 'mallory'",
            "DELETE FROM audit_record",
            "UPDATE audit_object SET object_id = 'P-2'",
            "DELETE FROM audit_object",
        ):
            with database.engine.connect() as connection, pytest.raises(DatabaseError):
                connection.execute(text(statement))
        with database.read_session() as session:
            users = list(session.scalars(select(AuditRecord.user_id)))
        assert users == ["alice"]
    finally:
        database.dispose()


def test_journal_of_crashed_process_is_replayed_once(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    database.upgrade()
    journal_dir = tmp_path / "audit-journal"
    try:
        crashed = AuditTrail(database, journal_dir, "NOCTIS")
        for user in ("alice", "bob"):
            crashed.record(AuditEvent(AuditEventType.QUERY, Outcome.SUCCESS, user))
        # A process killed mid-write leaves a partial line; its lock goes with it.
        segment = crashed.journal.rotate()
        assert segment is not None
        with open(segment.path, "a") as handle:
            handle.write('{"event_type": "qu')
        segment.release()

        survivor = AuditTrail(database, journal_dir, "NOCTIS")
        assert survivor.flush() == 2
        assert survivor.flush() == 0
        assert list(journal_dir.iterdir()) == []
        with database.read_session() as session:
            users = sorted(session.scalars(select(AuditRecord.user_id)))
        assert users == ["alice", "bob"]
    finally:
        database.dispose()


def test_dimse_store_and_find_are_recorded(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        auth_mode="off",
        dimse_port=free_port(),
        dimse_host="127.0.0.1",
        dimse_unknown_peer_permissions="echo,store,query",
    )
    context = ArchiveContext.create(settings)
    scp = StorageSCP(context)
    scp.start()
    try:
        study_instance_uid = generate_uid()

        ae = AE(ae_title="MODALITY1")
        ae.add_requested_context(CT_IMAGE_STORAGE, "1.2.840.10008.1.2.1")
        ae.add_requested_context(STUDY_ROOT_FIND)
        association = ae.associate("127.0.0.1", scp.port, ae_title="NOCTIS")
        assert association.is_established

        for number in (1, 2):
            dataset = make_dataset(
                study_instance_uid=study_instance_uid,
                patient_id="PID-DIMSE",
                instance_number=number,
            )
            assert association.send_c_store(dataset).Status == 0

        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_instance_uid
        responses = list(association.send_c_find(query, STUDY_ROOT_FIND))
        assert responses[-1][0].Status == 0
        association.release()
    finally:
        scp.stop()

    assert context.audit is not None
    context.audit.flush()
    with context.database.read_session() as session:
        records = list(session.scalars(select(AuditRecord).order_by(AuditRecord.id)))
        stores = [record for record in records if record.event_type == "store"]
        queries = [record for record in records if record.event_type == "query"]
        store_objects = {(item.object_type, item.object_id) for item in stores[0].objects}
        query_objects = {(item.object_type, item.object_id) for item in queries[0].objects}
    context.close()

    assert len(stores) == 1
    assert stores[0].number_of_instances == 2
    assert stores[0].user_id == "MODALITY1"
    assert stores[0].calling_ae_title == "MODALITY1"
    assert stores[0].network_access_point == "127.0.0.1"
    assert ("patient", "PID-DIMSE") in store_objects
    assert len(queries) == 1
    assert ("study", study_instance_uid) in query_objects
    assert "StudyInstanceUID" in queries[0].query


def test_query_token_is_kept_out_of_the_record(
    auth_client: TestClient, stored_study: StoredStudy, radiologist_token: str, admin_token: str
) -> None:
    params = {
        "requestType": "WADO",
        "studyUID": stored_study.study_instance_uid,
        "seriesUID": stored_study.series_instance_uid,
        "objectUID": stored_study.sop_instance_uid,
        "contentType": "application/dicom",
        "access_token": radiologist_token,
    }
    assert auth_client.get("/wado", params=params).status_code == 200
    (record,) = _records(auth_client, admin_token, event_type="retrieve")
    assert "access_token" not in record["query"]
    assert record["service"] == "wado-uri"
    assert record["study_instance_uids"] == [stored_study.study_instance_uid]


def test_records_of_other_studies_are_apart(
    auth_client: TestClient,
    auth_context: ArchiveContext,
    tmp_path: Path,
    radiologist_token: str,
    admin_token: str,
) -> None:
    other = store_study(auth_context, tmp_path / "other", patient_id="PID-OTHER")
    url = f"/dicom-web/studies/{other.study_instance_uid}/metadata"
    auth_client.get(url, headers=bearer(radiologist_token))
    assert _records(auth_client, admin_token, patient_id="PID-0001") == []
    assert len(_records(auth_client, admin_token, patient_id="PID-OTHER")) == 1
