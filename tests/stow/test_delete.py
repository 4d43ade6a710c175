"""DELETE of studies, series and instances over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import func, select

from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance, OrphanObject, OutboxEvent, Patient, Series, Study
from noctis_common.deletion import sweep_orphan_objects
from noctis_common.storage import StorageError
from tests.support import make_dataset

STUDY_URL = "/dicom-web/studies/{study}"


def _store(context: ArchiveContext, tmp_path: Path, **attributes: object) -> dict[str, str]:
    """Store one synthetic instance in-process and return its UIDs and object key."""
    dataset = make_dataset(**attributes)  # type: ignore[arg-type]
    path = tmp_path / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)
    with context.database.read_session() as session:
        key = session.scalar(
            select(Instance.object_key).where(Instance.sop_instance_uid == dataset.SOPInstanceUID)
        )
    assert key is not None
    return {
        "study": dataset.StudyInstanceUID,
        "series": dataset.SeriesInstanceUID,
        "instance": dataset.SOPInstanceUID,
        "key": key,
    }


def _count(context: ArchiveContext, model: type[object]) -> int:
    with context.database.read_session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _study(context: ArchiveContext, study_instance_uid: str) -> Study | None:
    with context.database.read_session() as session:
        return session.scalar(select(Study).where(Study.study_instance_uid == study_instance_uid))


def _events(context: ArchiveContext, event_type: str) -> list[dict[str, object]]:
    with context.database.read_session() as session:
        texts = session.scalars(
            select(OutboxEvent.payload_json).where(OutboxEvent.event_type == event_type)
        ).all()
    return [json.loads(text) for text in texts]


class FailingDeleteStore:
    """Wraps an object store so that every delete raises :class:`StorageError`."""

    def __init__(self, store: object) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def delete(self, key: str) -> None:
        raise StorageError(f"injected failure deleting {key!r}")


def test_delete_study_removes_rows_and_objects(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    study = generate_uid()
    first = _store(context, tmp_path, study_instance_uid=study)
    second = _store(context, tmp_path, study_instance_uid=study, modality="MR")

    response = client.delete(STUDY_URL.format(study=study))

    assert response.status_code == 204
    assert _study(context, study) is None
    assert _count(context, Instance) == 0
    assert _count(context, Series) == 0
    assert _count(context, Patient) == 0
    assert _count(context, OrphanObject) == 0
    assert not context.store.exists(first["key"])
    assert not context.store.exists(second["key"])
    assert _events(context, "study.deleted") == [
        {"StudyInstanceUID": study, "NumberOfDeletedInstances": 2, "StudyDeleted": True}
    ]


def test_deleted_study_is_gone_for_qido_and_wado(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    uids = _store(context, tmp_path)

    client.delete(STUDY_URL.format(study=uids["study"]))

    search = client.get("/dicom-web/studies", params={"StudyInstanceUID": uids["study"]})
    assert search.status_code in (200, 204)
    assert search.content in (b"", b"[]")
    metadata = client.get(STUDY_URL.format(study=uids["study"]) + "/metadata")
    assert metadata.status_code == 404


def test_delete_series_updates_study_counts(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    study = generate_uid()
    kept = _store(context, tmp_path, study_instance_uid=study, modality="CT")
    removed = _store(context, tmp_path, study_instance_uid=study, modality="MR")

    response = client.delete(
        STUDY_URL.format(study=study) + f"/series/{removed['series']}",
    )

    assert response.status_code == 204
    row = _study(context, study)
    assert row is not None
    assert row.number_of_study_related_series == 1
    assert row.number_of_study_related_instances == 1
    assert row.modalities_in_study == "CT"
    assert context.store.exists(kept["key"])
    assert not context.store.exists(removed["key"])
    assert _events(context, "series.deleted")[0]["SeriesInstanceUID"] == removed["series"]


def test_delete_instance_keeps_rest_of_series(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    kept = _store(context, tmp_path, study_instance_uid=study, series_instance_uid=series)
    removed = _store(context, tmp_path, study_instance_uid=study, series_instance_uid=series)

    response = client.delete(
        STUDY_URL.format(study=study) + f"/series/{series}/instances/{removed['instance']}"
    )

    assert response.status_code == 204
    with context.database.read_session() as session:
        series_row = session.scalar(select(Series).where(Series.series_instance_uid == series))
    assert series_row is not None
    assert series_row.number_of_series_related_instances == 1
    row = _study(context, study)
    assert row is not None
    assert row.number_of_study_related_instances == 1
    assert context.store.exists(kept["key"])
    assert not context.store.exists(removed["key"])
    assert _events(context, "instance.deleted")[0]["SOPInstanceUID"] == removed["instance"]


def test_delete_last_instance_removes_study(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    uids = _store(context, tmp_path)

    response = client.delete(
        STUDY_URL.format(study=uids["study"])
        + f"/series/{uids['series']}/instances/{uids['instance']}"
    )

    assert response.status_code == 204
    assert _study(context, uids["study"]) is None
    assert _count(context, Series) == 0
    assert _count(context, Patient) == 0


@pytest.mark.parametrize(
    "path",
    [
        "/studies/{unknown}",
        "/studies/{study}/series/{unknown}",
        "/studies/{study}/series/{series}/instances/{unknown}",
        "/studies/{unknown}/series/{series}",
        "/studies/{unknown}/series/{series}/instances/{instance}",
    ],
)
def test_delete_unknown_uid_is_404(
    client: TestClient, context: ArchiveContext, tmp_path: Path, path: str
) -> None:
    uids = _store(context, tmp_path)
    url = "/dicom-web" + path.format(unknown=generate_uid(), **uids)

    response = client.delete(url)

    assert response.status_code == 404
    assert "not found" in response.json()["detail"]
    assert _count(context, Instance) == 1


def test_delete_invalid_uid_is_400(client: TestClient) -> None:
    response = client.delete("/dicom-web/studies/1.2.abc")

    assert response.status_code == 400
    assert "StudyInstanceUID" in response.json()["detail"]


def test_failed_object_delete_is_swept_later(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    uids = _store(context, tmp_path)
    working_store = context.store
    context.store = FailingDeleteStore(working_store)  # type: ignore[assignment]

    response = client.delete(STUDY_URL.format(study=uids["study"]))

    assert response.status_code == 204
    assert _study(context, uids["study"]) is None
    assert working_store.exists(uids["key"])
    with context.database.read_session() as session:
        orphan = session.scalar(select(OrphanObject))
    assert orphan is not None
    assert orphan.object_key == uids["key"]
    assert orphan.attempts == 1
    assert "injected failure" in orphan.last_error

    remaining = sweep_orphan_objects(context.database, working_store)

    assert remaining == 0
    assert not working_store.exists(uids["key"])
    assert _count(context, OrphanObject) == 0


def test_sweep_runs_at_context_start(context: ArchiveContext, tmp_path: Path) -> None:
    uids = _store(context, tmp_path)
    with context.database.write_session() as session:
        for row in session.scalars(select(Instance)):
            session.delete(row)
        session.add(OrphanObject(object_key=uids["key"]))
        session.commit()

    context.start()
    assert context.sweeper is not None
    context.sweeper.stop()

    assert not context.store.exists(uids["key"])
    assert _count(context, OrphanObject) == 0


def test_sweep_keeps_object_stored_again(context: ArchiveContext, tmp_path: Path) -> None:
    uids = _store(context, tmp_path)
    with context.database.write_session() as session:
        session.add(OrphanObject(object_key=uids["key"]))
        session.commit()

    remaining = sweep_orphan_objects(context.database, context.store)

    assert remaining == 0
    assert context.store.exists(uids["key"])
    assert _count(context, OrphanObject) == 0


def test_concurrent_store_and_delete_stay_consistent(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    study, series = generate_uid(), generate_uid()
    _store(context, tmp_path, study_instance_uid=study, series_instance_uid=series)
    datasets = [
        make_dataset(study_instance_uid=study, series_instance_uid=series, instance_number=n)
        for n in range(2, 22)
    ]
    paths = []
    for dataset in datasets:
        path = tmp_path / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    errors: list[BaseException] = []

    def store_all() -> None:
        try:
            for path in paths:
                context.archive.store_part10(path)
        except BaseException as error:  # reported by the assert below
            errors.append(error)

    writer = threading.Thread(target=store_all)
    writer.start()
    statuses = [client.delete(STUDY_URL.format(study=study)).status_code for _ in range(5)]
    writer.join()

    assert errors == []
    assert set(statuses) <= {204, 404}
    with context.database.read_session() as session:
        instances = session.execute(select(Instance.object_key, Instance.series_fk)).all()
        series_rows = session.scalars(select(Series)).all()
        study_row = session.scalar(select(Study))
    for key, _series_fk in instances:
        assert context.store.exists(key)
    assert len(series_rows) == (1 if instances else 0)
    if instances:
        assert study_row is not None
        assert series_rows[0].number_of_series_related_instances == len(instances)
        assert study_row.number_of_study_related_instances == len(instances)
    else:
        assert study_row is None
    objects_dir = context.settings.objects_dir
    stored_keys = {path.relative_to(objects_dir).as_posix() for path in objects_dir.rglob("*.dcm")}
    assert stored_keys == {key for key, _ in instances}
