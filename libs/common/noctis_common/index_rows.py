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

from sqlalchemy import Connection, String, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from noctis_common.db.models import FrameIndex, Instance, Patient, Series, Study, utc_now
from noctis_common.dicom.attributes import IndexRecord, person_name_search_form, time_key
from noctis_common.dicom.frame_index import FrameLayout, frame_index_values
from noctis_common.events import INSTANCE_STORED, add_event_row
from noctis_common.study_complete import changes_for_new_instance

PATIENT: Table = Patient.__table__  # type: ignore[assignment]
STUDY: Table = Study.__table__  # type: ignore[assignment]
SERIES: Table = Series.__table__  # type: ignore[assignment]
INSTANCE: Table = Instance.__table__  # type: ignore[assignment]
FRAME_INDEX: Table = FrameIndex.__table__  # type: ignore[assignment]

# The statements that every store runs, built once: building a statement costs more
# CPU than executing it, and a built statement also keeps its cache key.
_LOCK_STUDY = (
    select(STUDY.c.id, STUDY.c.modalities_in_study, STUDY.c.revision, STUDY.c.completed_revision)
    .where(STUDY.c.study_instance_uid == bindparam("b_study_instance_uid"))
    .with_for_update()
)
_SELECT_SERIES = select(SERIES.c.id, SERIES.c.study_fk).where(
    SERIES.c.series_instance_uid == bindparam("b_series_instance_uid")
)
_INSERT_INSTANCE = insert(INSTANCE).returning(INSTANCE.c.id)
_INSERT_FRAME_INDEX = insert(FRAME_INDEX)
_COUNT_SERIES_INSTANCE = (
    update(SERIES)
    .where(SERIES.c.id == bindparam("b_series_id"))
    .values(
        number_of_series_related_instances=SERIES.c.number_of_series_related_instances + 1,
        revision=SERIES.c.revision + 1,
    )
)
_COUNT_STUDY_INSTANCE = (
    update(STUDY)
    .where(STUDY.c.id == bindparam("b_study_id"))
    .values(
        number_of_study_related_instances=STUDY.c.number_of_study_related_instances + 1,
        number_of_study_related_series=STUDY.c.number_of_study_related_series
        + bindparam("b_series_added"),
        modalities_in_study=bindparam("b_modalities_in_study"),
        revision=bindparam("b_revision"),
        last_instance_at=bindparam("b_last_instance_at"),
    )
)


class SeriesInOtherStudyError(ValueError):
    """The Series Instance UID is already indexed under another study."""


class StudyDeletedDuringStoreError(RuntimeError):
    """A deletion removed the study between its creation by another store and the lock."""


def _fit(value: str, column: Any) -> str:
    """Cut ``value`` to the column's length; over-long values occur in real files."""
    length = column.type.length if isinstance(column.type, String) else None
    return value[:length] if length else value


def insert_instance_rows(
    connection: Connection,
    record: IndexRecord,
    instance_values: dict[str, Any],
    frame_layout: FrameLayout | None = None,
) -> None:
    """Insert the rows of a newly stored instance and its outbox event in ``connection``.

    Patient, study and series rows are created when missing; the series and study
    counts, ModalitiesInStudy and the series revision are updated in the same
    transaction. Raises :class:`SeriesInOtherStudyError` when the series is indexed
    under another study.

    Every statement is a SQLAlchemy Core statement, because this runs once per stored
    instance and the ORM's unit of work cost several times the CPU of the statements.
    """
    study, study_created = _get_or_create_locked_study(connection, record)
    series_id, series_study_fk, series_created = _get_or_create_series(connection, record, study.id)
    if series_study_fk != study.id:
        raise SeriesInOtherStudyError(
            f"SeriesInstanceUID {record.series_instance_uid} already belongs to another "
            f"study than {record.study_instance_uid}",
        )
    instance_id = connection.execute(
        _INSERT_INSTANCE,
        {
            "sop_instance_uid": record.sop_instance_uid,
            "series_fk": series_id,
            "study_fk": study.id,
            "sop_class_uid": record.sop_class_uid,
            "instance_number": record.instance_number,
            "rows": record.rows,
            "columns": record.columns,
            "bits_allocated": record.bits_allocated,
            "number_of_frames": record.number_of_frames,
            "content_date": _fit(record.content_date, INSTANCE.c.content_date),
            "content_time": _fit(record.content_time, INSTANCE.c.content_time),
            "specific_character_set": _fit(
                record.specific_character_set, INSTANCE.c.specific_character_set
            ),
            **instance_values,
        },
    ).scalar_one()
    if frame_layout is not None:
        connection.execute(_INSERT_FRAME_INDEX, frame_index_values(instance_id, frame_layout))
    connection.execute(_COUNT_SERIES_INSTANCE, {"b_series_id": series_id})
    modalities_in_study = study.modalities_in_study
    if series_created:
        modalities = [m for m in modalities_in_study.split("\\") if m]
        if record.modality and record.modality not in modalities:
            modalities.append(record.modality)
            modalities_in_study = _fit("\\".join(sorted(modalities)), STUDY.c.modalities_in_study)
    now = utc_now()
    changes = changes_for_new_instance(study.revision, study.completed_revision, now)
    connection.execute(
        _COUNT_STUDY_INSTANCE,
        {
            "b_study_id": study.id,
            "b_series_added": 1 if series_created else 0,
            "b_modalities_in_study": modalities_in_study,
            "b_revision": changes.get("revision", study.revision),
            "b_last_instance_at": changes["last_instance_at"],
        },
    )
    add_event_row(
        connection,
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


def _get_or_create_locked_study(connection: Connection, record: IndexRecord) -> tuple[Any, bool]:
    """Return the study row of ``record``, locked, and whether this call created it.

    The row is read once the lock is granted, so its counts and revisions are the
    latest committed ones. When a deletion of the study commits while this transaction
    waits for the lock, the read finds no row and the study is created anew.
    """
    parameters = {"b_study_instance_uid": record.study_instance_uid}
    study = connection.execute(_LOCK_STUDY, parameters).one_or_none()
    if study is not None:
        return study, False
    patient_fk = _get_or_create_patient(connection, record)
    created = _insert_study_if_absent(connection, record, patient_fk)
    study = connection.execute(_LOCK_STUDY, parameters).one_or_none()
    if study is None:
        raise StudyDeletedDuringStoreError(
            f"study {record.study_instance_uid} was deleted while this instance was being "
            "indexed; store the instance again"
        )
    return study, created


def _insert_if_absent(connection: Connection, table: Table, values: dict[str, Any]) -> int | None:
    """Insert a row unless one with the same unique key exists, and return its id if inserted.

    Waits on PostgreSQL for a concurrent transaction that inserted the same key, and
    returns ``None`` when that one commits.
    """
    dialect = connection.dialect.name
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        statement = sqlite.insert(table)
    else:
        raise NotImplementedError(
            f"index rows need INSERT ... ON CONFLICT, written only for PostgreSQL and "
            f"SQLite; the index database is {dialect}"
        )
    statement = statement.values(**values).on_conflict_do_nothing().returning(table.c.id)
    inserted: int | None = connection.scalar(statement)
    return inserted


def _get_or_create_patient(connection: Connection, record: IndexRecord) -> int:
    """Return the id of the patient row of ``record``, creating the row when missing."""
    columns = PATIENT.c
    patient_id = _fit(record.patient_id, columns.patient_id)
    issuer = _fit(record.issuer_of_patient_id, columns.issuer_of_patient_id)
    existing = select(columns.id).where(
        columns.patient_id == patient_id, columns.issuer_of_patient_id == issuer
    )
    found: int | None = connection.scalar(existing)
    if found is not None:
        return found
    inserted = _insert_if_absent(
        connection,
        PATIENT,
        {
            "patient_id": patient_id,
            "issuer_of_patient_id": issuer,
            "patient_name": _fit(record.patient_name, columns.patient_name),
            "patient_birth_date": _fit(record.patient_birth_date, columns.patient_birth_date),
            "patient_sex": _fit(record.patient_sex, columns.patient_sex),
        },
    )
    if inserted is not None:
        return inserted
    patient_fk: int = connection.execute(existing).scalar_one()
    return patient_fk


def _insert_study_if_absent(connection: Connection, record: IndexRecord, patient_fk: int) -> bool:
    """Insert the study row of ``record`` unless it exists, and return whether it did."""
    columns = STUDY.c
    inserted = _insert_if_absent(
        connection,
        STUDY,
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
    connection: Connection, record: IndexRecord, study_id: int
) -> tuple[int, int, bool]:
    """Return the id and study of the series row of ``record``, and whether this call created it.

    The series may belong to another study than ``study_id``, which the caller checks.
    """
    columns = SERIES.c
    parameters = {"b_series_instance_uid": record.series_instance_uid}
    series = connection.execute(_SELECT_SERIES, parameters).one_or_none()
    if series is not None:
        return series.id, series.study_fk, False
    inserted = _insert_if_absent(
        connection,
        SERIES,
        {
            "series_instance_uid": record.series_instance_uid,
            "study_fk": study_id,
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
    series = connection.execute(_SELECT_SERIES, parameters).one()
    return series.id, series.study_fk, inserted is not None
