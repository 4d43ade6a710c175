"""Index rows of a newly stored instance: patient, study, series, instance, event.

:mod:`noctis_common.archive` calls :func:`insert_instance_rows` inside its write
transaction, after the object is durable.

Replicas that receive instances of one new study at the same time must create exactly
one patient, study and series row. A missing row is created with ``INSERT ... ON
CONFLICT DO NOTHING`` on its unique key and then read back. On PostgreSQL (READ
COMMITTED) an insert that meets an uncommitted row with the same key waits for that
transaction and inserts nothing once it commits, and the read that follows returns
the committed row. SQLite runs one write transaction at a time. The study row is read with
``SELECT ... FOR UPDATE`` before its counts, ModalitiesInStudy and completion revision
are computed, so concurrent stores into one study take turns instead of overwriting
each other's values. Stores and deletions both lock the study row before they touch
its series and instances, so they do not deadlock each other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from noctis_common.db.models import Base, Instance, Patient, Series, Study, utc_now
from noctis_common.dicom.attributes import IndexRecord, person_name_search_form, time_key
from noctis_common.dicom.frame_index import FrameLayout, frame_index_row
from noctis_common.events import INSTANCE_STORED, add_event
from noctis_common.study_complete import changes_for_new_instance


class SeriesInOtherStudyError(ValueError):
    """The Series Instance UID is already indexed under another study."""


class StudyDeletedDuringStoreError(RuntimeError):
    """A deletion removed the study between its creation by another store and the lock."""


def _fit(value: str, column: Any) -> str:
    """Cut ``value`` to the column's length; over-long values occur in real files."""
    length = column.type.length if isinstance(column.type, String) else None
    return value[:length] if length else value


def insert_instance_rows(
    session: Session,
    record: IndexRecord,
    instance_values: dict[str, Any],
    frame_layout: FrameLayout | None = None,
) -> None:
    """Add the rows of a newly stored instance and its outbox event to ``session``.

    Patient, study and series rows are created when missing; the series and study
    counts, ModalitiesInStudy and the series revision are updated in the same
    transaction. Raises :class:`SeriesInOtherStudyError` when the series is indexed
    under another study.
    """
    study, study_created = _get_or_create_locked_study(session, record)
    series, series_created = _get_or_create_series(session, record, study)
    if series.study_fk != study.id:
        raise SeriesInOtherStudyError(
            f"SeriesInstanceUID {record.series_instance_uid} already belongs to another "
            f"study than {record.study_instance_uid}",
        )
    columns = Instance.__table__.c
    instance = Instance(
        sop_instance_uid=record.sop_instance_uid,
        series_fk=series.id,
        study_fk=study.id,
        sop_class_uid=record.sop_class_uid,
        instance_number=record.instance_number,
        rows=record.rows,
        columns=record.columns,
        bits_allocated=record.bits_allocated,
        number_of_frames=record.number_of_frames,
        content_date=_fit(record.content_date, columns.content_date),
        content_time=_fit(record.content_time, columns.content_time),
        specific_character_set=_fit(record.specific_character_set, columns.specific_character_set),
        **instance_values,
    )
    session.add(instance)
    session.flush()
    if frame_layout is not None:
        session.add(frame_index_row(instance.id, frame_layout))
    session.execute(
        update(Series)
        .where(Series.id == series.id)
        .values(
            number_of_series_related_instances=Series.number_of_series_related_instances + 1,
            revision=Series.revision + 1,
        )
    )
    study_changes: dict[str, Any] = {
        "number_of_study_related_instances": Study.number_of_study_related_instances + 1,
        **changes_for_new_instance(study, utc_now()),
    }
    if series_created:
        study_changes["number_of_study_related_series"] = Study.number_of_study_related_series + 1
        modalities = [m for m in study.modalities_in_study.split("\\") if m]
        if record.modality and record.modality not in modalities:
            modalities.append(record.modality)
            study_changes["modalities_in_study"] = _fit(
                "\\".join(sorted(modalities)), Study.__table__.c.modalities_in_study
            )
    session.execute(update(Study).where(Study.id == study.id).values(**study_changes))
    add_event(
        session,
        INSTANCE_STORED,
        record.study_instance_uid,
        {
            "StudyInstanceUID": record.study_instance_uid,
            "SeriesInstanceUID": record.series_instance_uid,
            "SOPInstanceUID": record.sop_instance_uid,
            "SOPClassUID": record.sop_class_uid,
            "Modality": record.modality,
            # The sender's AE title for C-STORE; empty for STOW-RS.
            "CallingAETitle": instance_values.get("source_ae_title", ""),
            "NewStudy": study_created,
            "NewSeries": series_created,
        },
    )


def _get_or_create_locked_study(session: Session, record: IndexRecord) -> tuple[Study, bool]:
    """Return the study row of ``record``, locked, and whether this call created it.

    The row is read once the lock is granted, so its counts and revisions are the
    latest committed ones. When a deletion of the study commits while this transaction
    waits for the lock, the read finds no row and the study is created anew.
    """
    locked_study = (
        select(Study)
        .where(Study.study_instance_uid == record.study_instance_uid)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    study = session.scalars(locked_study).one_or_none()
    if study is not None:
        return study, False
    patient_fk = _get_or_create_patient(session, record)
    created = _insert_study_if_absent(session, record, patient_fk)
    study = session.scalars(locked_study).one_or_none()
    if study is None:
        raise StudyDeletedDuringStoreError(
            f"study {record.study_instance_uid} was deleted while this instance was being "
            "indexed; store the instance again"
        )
    return study, created


def _insert_if_absent(session: Session, model: type[Base], values: dict[str, Any]) -> int | None:
    """Insert a row unless one with the same unique key exists, and return its id if inserted.

    Waits on PostgreSQL for a concurrent transaction that inserted the same key, and
    returns ``None`` when that one commits.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(model)
    elif dialect == "sqlite":
        statement = sqlite.insert(model)
    else:
        raise NotImplementedError(
            f"index rows need INSERT ... ON CONFLICT, written only for PostgreSQL and "
            f"SQLite; the index database is {dialect}"
        )
    primary_key = model.__table__.c.id
    statement = statement.values(**values).on_conflict_do_nothing().returning(primary_key)
    inserted: int | None = session.scalar(statement)
    return inserted


def _get_or_create_patient(session: Session, record: IndexRecord) -> int:
    """Return the id of the patient row of ``record``, creating the row when missing."""
    columns = Patient.__table__.c
    patient_id = _fit(record.patient_id, columns.patient_id)
    issuer = _fit(record.issuer_of_patient_id, columns.issuer_of_patient_id)
    existing = select(Patient.id).where(
        Patient.patient_id == patient_id, Patient.issuer_of_patient_id == issuer
    )
    found = session.scalar(existing)
    if found is not None:
        return found
    inserted = _insert_if_absent(
        session,
        Patient,
        {
            "patient_id": patient_id,
            "issuer_of_patient_id": issuer,
            "patient_name": _fit(record.patient_name, columns.patient_name),
            "patient_birth_date": _fit(record.patient_birth_date, columns.patient_birth_date),
            "patient_sex": _fit(record.patient_sex, columns.patient_sex),
        },
    )
    return inserted if inserted is not None else session.scalars(existing).one()


def _insert_study_if_absent(session: Session, record: IndexRecord, patient_fk: int) -> bool:
    """Insert the study row of ``record`` unless it exists, and return whether it did."""
    columns = Study.__table__.c
    inserted = _insert_if_absent(
        session,
        Study,
        {
            "study_instance_uid": record.study_instance_uid,
            "patient_fk": patient_fk,
            "patient_name": _fit(record.patient_name, columns.patient_name),
            "patient_name_search": _fit(
                person_name_search_form(record.patient_name), columns.patient_name_search
            ),
            "patient_id": _fit(record.patient_id, columns.patient_id),
            "issuer_of_patient_id": _fit(record.issuer_of_patient_id, columns.issuer_of_patient_id),
            "patient_birth_date": _fit(record.patient_birth_date, columns.patient_birth_date),
            "patient_sex": _fit(record.patient_sex, columns.patient_sex),
            "study_date": _fit(record.study_date, columns.study_date),
            "study_time": _fit(record.study_time, columns.study_time),
            "study_time_key": time_key(record.study_time),
            "accession_number": _fit(record.accession_number, columns.accession_number),
            "study_id": _fit(record.study_id, columns.study_id),
            "study_description": _fit(record.study_description, columns.study_description),
            "referring_physician_name": _fit(
                record.referring_physician_name, columns.referring_physician_name
            ),
            "referring_physician_name_search": _fit(
                person_name_search_form(record.referring_physician_name),
                columns.referring_physician_name_search,
            ),
            "timezone_offset_from_utc": _fit(
                record.timezone_offset_from_utc, columns.timezone_offset_from_utc
            ),
            "specific_character_set": _fit(
                record.specific_character_set, columns.specific_character_set
            ),
            "modalities_in_study": "",
            "number_of_study_related_series": 0,
            "number_of_study_related_instances": 0,
        },
    )
    return inserted is not None


def _get_or_create_series(
    session: Session, record: IndexRecord, study: Study
) -> tuple[Series, bool]:
    """Return the series row of ``record`` and whether this call created it.

    The series may belong to another study than ``study``, which the caller checks.
    """
    existing = select(Series).where(Series.series_instance_uid == record.series_instance_uid)
    series = session.scalar(existing)
    if series is not None:
        return series, False
    columns = Series.__table__.c
    inserted = _insert_if_absent(
        session,
        Series,
        {
            "series_instance_uid": record.series_instance_uid,
            "study_fk": study.id,
            "modality": _fit(record.modality, columns.modality),
            "series_number": record.series_number,
            "series_description": _fit(record.series_description, columns.series_description),
            "series_date": _fit(record.series_date, columns.series_date),
            "series_time": _fit(record.series_time, columns.series_time),
            "body_part_examined": _fit(record.body_part_examined, columns.body_part_examined),
            "performed_procedure_step_start_date": _fit(
                record.performed_procedure_step_start_date,
                columns.performed_procedure_step_start_date,
            ),
            "performed_procedure_step_start_time": _fit(
                record.performed_procedure_step_start_time,
                columns.performed_procedure_step_start_time,
            ),
            "performed_procedure_step_start_time_key": time_key(
                record.performed_procedure_step_start_time
            ),
            "timezone_offset_from_utc": _fit(
                record.timezone_offset_from_utc, columns.timezone_offset_from_utc
            ),
            "specific_character_set": _fit(
                record.specific_character_set, columns.specific_character_set
            ),
            "number_of_series_related_instances": 0,
        },
    )
    return session.scalars(existing).one(), inserted is not None
