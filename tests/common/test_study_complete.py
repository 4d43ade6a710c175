"""Study complete: one study.complete event per study revision after the quiet period."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from pydicom.uid import generate_uid
from sqlalchemy import select, text

from noctis_common import study_complete
from noctis_common.context import ArchiveContext
from noctis_common.db import Database, alembic_config
from noctis_common.db.models import OutboxEvent, Study
from noctis_common.deletion import delete_series, delete_study
from noctis_common.study_complete import STUDY_COMPLETE, announce_complete_studies
from tests.support import make_dataset

QUIET_S = 60.0


def store(context: ArchiveContext, **attributes: Any) -> None:
    path = context.archive.new_spool_path()
    make_dataset(**attributes).save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)


def last_instance_at(context: ArchiveContext, study_instance_uid: str) -> datetime:
    with context.database.read_session() as session:
        moment = session.scalars(
            select(Study.last_instance_at).where(Study.study_instance_uid == study_instance_uid)
        ).one()
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def after_quiet_period(context: ArchiveContext, study_instance_uid: str) -> datetime:
    return last_instance_at(context, study_instance_uid) + timedelta(seconds=QUIET_S + 1)


def complete_events(database: Database) -> list[dict[str, Any]]:
    with database.read_session() as session:
        rows = session.scalars(
            select(OutboxEvent.payload_json)
            .where(OutboxEvent.event_type == STUDY_COMPLETE)
            .order_by(OutboxEvent.id)
        ).all()
    return [json.loads(row) for row in rows]


def announce(context: ArchiveContext, now: datetime, base_url: str | None = None) -> list[str]:
    return announce_complete_studies(context.database, QUIET_S, base_url, now=now)


def test_quiet_study_announced_with_payload(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    ct_series, mr_series = generate_uid(), generate_uid()
    for number, (series, modality) in enumerate(
        [(ct_series, "CT"), (ct_series, "CT"), (mr_series, "MR")], start=1
    ):
        store(
            context,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series,
            modality=modality,
            instance_number=number,
        )

    announced = announce(context, after_quiet_period(context, study_instance_uid))

    assert announced == [study_instance_uid]
    assert complete_events(context.database) == [
        {
            "StudyInstanceUID": study_instance_uid,
            "Revision": 1,
            "NumberOfStudyRelatedSeries": 2,
            "NumberOfStudyRelatedInstances": 3,
            "ModalitiesInStudy": ["CT", "MR"],
            "RetrieveURL": f"/dicom-web/studies/{study_instance_uid}",
            "MetadataURL": f"/dicom-web/studies/{study_instance_uid}/metadata",
        }
    ]


def test_study_announced_only_once(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid)
    later = after_quiet_period(context, study_instance_uid)

    first = announce(context, later)
    second = announce(context, later + timedelta(hours=1))

    assert first == [study_instance_uid]
    assert second == []
    assert len(complete_events(context.database)) == 1


def test_study_within_quiet_period_waits(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid)
    almost = last_instance_at(context, study_instance_uid) + timedelta(seconds=QUIET_S - 1)

    assert announce(context, almost) == []
    assert complete_events(context.database) == []


def test_new_instance_restarts_quiet_period(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    series_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid)
    first_due = after_quiet_period(context, study_instance_uid)
    store(
        context,
        study_instance_uid=study_instance_uid,
        series_instance_uid=series_instance_uid,
        instance_number=2,
    )
    second_instance_at = last_instance_at(context, study_instance_uid)

    # Due by the first instance's time, but not by the second's.
    assert announce(context, min(first_due, second_instance_at + timedelta(seconds=1))) == []
    assert announce(context, after_quiet_period(context, study_instance_uid)) == [
        study_instance_uid
    ]
    assert [
        event["NumberOfStudyRelatedInstances"] for event in complete_events(context.database)
    ] == [2]


def test_late_instance_opens_next_revision(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid, modality="CT")
    announce(context, after_quiet_period(context, study_instance_uid))

    store(context, study_instance_uid=study_instance_uid, modality="MR")
    with context.database.read_session() as session:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == study_instance_uid)
        ).one()
    announced = announce(context, after_quiet_period(context, study_instance_uid))

    assert study.revision == 2
    assert study.completed_revision == 1
    assert announced == [study_instance_uid]
    events = complete_events(context.database)
    assert [event["Revision"] for event in events] == [1, 2]
    assert events[1]["NumberOfStudyRelatedInstances"] == 2
    assert events[1]["ModalitiesInStudy"] == ["CT", "MR"]


def test_instances_of_one_revision_share_it(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    for number in range(1, 4):
        store(context, study_instance_uid=study_instance_uid, instance_number=number)

    with context.database.read_session() as session:
        study = session.scalars(
            select(Study).where(Study.study_instance_uid == study_instance_uid)
        ).one()

    assert study.revision == 1
    assert study.completed_revision == 0


def test_public_base_url_makes_absolute_urls(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid)

    announce(
        context,
        after_quiet_period(context, study_instance_uid),
        "https://pacs.example.org/dicom-web/",
    )

    event = complete_events(context.database)[0]
    study_url = f"https://pacs.example.org/dicom-web/studies/{study_instance_uid}"
    assert event["RetrieveURL"] == study_url
    assert event["MetadataURL"] == f"{study_url}/metadata"


def test_deleted_study_gets_no_event(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid)
    due = after_quiet_period(context, study_instance_uid)

    delete_study(context.database, context.store, study_instance_uid)

    assert announce(context, due) == []
    assert complete_events(context.database) == []


def test_partial_deletion_reports_remaining_counts(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    kept_series, deleted_series = generate_uid(), generate_uid()
    store(context, study_instance_uid=study_instance_uid, series_instance_uid=kept_series)
    store(
        context,
        study_instance_uid=study_instance_uid,
        series_instance_uid=deleted_series,
        modality="MR",
    )
    due = after_quiet_period(context, study_instance_uid)

    delete_series(context.database, context.store, study_instance_uid, deleted_series)

    assert announce(context, due) == [study_instance_uid]
    event = complete_events(context.database)[0]
    assert event["NumberOfStudyRelatedSeries"] == 1
    assert event["NumberOfStudyRelatedInstances"] == 1
    assert event["ModalitiesInStudy"] == ["CT"]


def test_failed_sweep_leaves_revision_pending(
    context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep that dies after its claim, before the commit, announces nothing."""
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid)
    due = after_quiet_period(context, study_instance_uid)

    def crash(*_arguments: object) -> None:
        raise RuntimeError("process ended before the commit")

    with monkeypatch.context() as patch:
        patch.setattr(study_complete, "add_event", crash)
        with pytest.raises(RuntimeError):
            announce(context, due)

    assert complete_events(context.database) == []
    assert announce(context, due) == [study_instance_uid]
    assert len(complete_events(context.database)) == 1


def test_concurrent_sweepers_announce_each_once(context: ArchiveContext) -> None:
    study_instance_uids = [generate_uid() for _ in range(24)]
    for study_instance_uid in study_instance_uids:
        store(context, study_instance_uid=study_instance_uid)
    due = after_quiet_period(context, study_instance_uids[-1])
    sweepers = 4
    barrier = threading.Barrier(sweepers)
    results: list[list[str]] = [[] for _ in range(sweepers)]
    errors: list[BaseException] = []

    def sweep(index: int) -> None:
        # Each sweeper has its own connection pool, as a replica would.
        database = Database(context.settings.resolved_database_url)
        try:
            barrier.wait()
            results[index] = announce_complete_studies(
                database, QUIET_S, None, now=due, batch_size=3
            )
        except BaseException as error:
            errors.append(error)
        finally:
            database.dispose()

    threads = [threading.Thread(target=sweep, args=(index,)) for index in range(sweepers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    announced = [uid for result in results for uid in result]
    assert sorted(announced) == sorted(study_instance_uids)
    events = complete_events(context.database)
    assert sorted(event["StudyInstanceUID"] for event in events) == sorted(study_instance_uids)


def test_sweeper_thread_announces_and_wakes_relay(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    store(context, study_instance_uid=study_instance_uid)
    woken = threading.Event()
    sweeper = study_complete.StudyCompleteSweeper(
        context.database, 0.2, 0.1, None, on_announced=woken.set
    )

    sweeper.start()
    try:
        assert woken.wait(timeout=30)
    finally:
        sweeper.stop()

    assert [event["StudyInstanceUID"] for event in complete_events(context.database)] == [
        study_instance_uid
    ]


def test_upgrade_leaves_existing_studies_announced(database_url: str, tmp_path: Path) -> None:
    """Studies indexed before migration 0006 get no event when the archive upgrades."""
    database = Database(database_url)
    try:
        command.upgrade(alembic_config(database.engine), "0005")
        with database.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, "
                    "patient_birth_date, patient_sex, created_at) "
                    "VALUES ('PID-0001', '', '', '', '', :now)"
                ),
                {"now": datetime(2024, 1, 1, tzinfo=UTC)},
            )
            connection.execute(
                text(
                    "INSERT INTO study (study_instance_uid, patient_fk, patient_name, "
                    "patient_name_search, patient_id, issuer_of_patient_id, "
                    "patient_birth_date, patient_sex, study_date, study_time, study_time_key, "
                    "accession_number, study_id, study_description, referring_physician_name, "
                    "referring_physician_name_search, timezone_offset_from_utc, "
                    "specific_character_set, modalities_in_study, "
                    "number_of_study_related_series, number_of_study_related_instances, "
                    "created_at, updated_at) "
                    "SELECT '1.2.3', id, '', '', '', '', '', '', '', '', '', '', '', '', '', "
                    "'', '', '', 'CT', 1, 1, :now, :now FROM patient"
                ),
                {"now": datetime(2024, 1, 2, tzinfo=UTC)},
            )

        database.upgrade()

        far_future = datetime.now(UTC) + timedelta(days=365)
        assert announce_complete_studies(database, QUIET_S, None, now=far_future) == []
        with database.read_session() as session:
            study = session.scalars(select(Study)).one()
        assert study.revision == 1
        assert study.completed_revision == 1
    finally:
        database.dispose()
