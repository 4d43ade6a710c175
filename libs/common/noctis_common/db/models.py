"""The index: patients, studies, series, instances and the event outbox.

Columns that QIDO-RS and C-FIND match on are named by DICOM keyword in snake_case and
sized by their VR's maximum length (PS3.5 table 6.2-1). Person names are kept twice:
as stored (``patient_name``) and as a lowercase search form (``patient_name_search``)
for case-insensitive matching. Times are kept as received and as a fixed-width
``..._key`` (``HHMMSS.FFFFFF``) so that range matching can compare strings.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

UID = String(64)
PERSON_NAME = String(324)  # three component groups of up to 64 characters, with '=' and '^'
LONG_STRING = String(64)
SHORT_STRING = String(16)
DATE = String(8)
TIME = String(16)
CODE_STRING = String(16)

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BIG_ID = BigInteger().with_variant(Integer(), "sqlite")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    """A patient identity: Patient ID within its issuer."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("patient_id", "issuer_of_patient_id"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    patient_id: Mapped[str] = mapped_column(LONG_STRING, default="")
    issuer_of_patient_id: Mapped[str] = mapped_column(LONG_STRING, default="")
    patient_name: Mapped[str] = mapped_column(PERSON_NAME, default="")
    patient_birth_date: Mapped[str] = mapped_column(DATE, default="")
    patient_sex: Mapped[str] = mapped_column(CODE_STRING, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A study, with the patient attributes as its instances carried them."""

    __tablename__ = "study"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    patient_fk: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)

    patient_name: Mapped[str] = mapped_column(PERSON_NAME, default="")
    patient_name_search: Mapped[str] = mapped_column(PERSON_NAME, default="", index=True)
    patient_id: Mapped[str] = mapped_column(LONG_STRING, default="", index=True)
    issuer_of_patient_id: Mapped[str] = mapped_column(LONG_STRING, default="")
    patient_birth_date: Mapped[str] = mapped_column(DATE, default="")
    patient_sex: Mapped[str] = mapped_column(CODE_STRING, default="")

    study_date: Mapped[str] = mapped_column(DATE, default="", index=True)
    study_time: Mapped[str] = mapped_column(TIME, default="")
    study_time_key: Mapped[str] = mapped_column(TIME, default="")
    accession_number: Mapped[str] = mapped_column(SHORT_STRING, default="", index=True)
    study_id: Mapped[str] = mapped_column(SHORT_STRING, default="")
    study_description: Mapped[str] = mapped_column(LONG_STRING, default="")
    referring_physician_name: Mapped[str] = mapped_column(PERSON_NAME, default="")
    referring_physician_name_search: Mapped[str] = mapped_column(PERSON_NAME, default="")
    timezone_offset_from_utc: Mapped[str] = mapped_column(SHORT_STRING, default="")
    specific_character_set: Mapped[str] = mapped_column(String(160), default="")

    # Maintained in the same transaction that adds or deletes an instance.
    modalities_in_study: Mapped[str] = mapped_column(String(160), default="")
    number_of_study_related_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_study_related_instances: Mapped[int] = mapped_column(Integer, default=0)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """A series of one study."""

    __tablename__ = "series"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    series_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)

    modality: Mapped[str] = mapped_column(CODE_STRING, default="", index=True)
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    series_description: Mapped[str] = mapped_column(LONG_STRING, default="")
    series_date: Mapped[str] = mapped_column(DATE, default="")
    series_time: Mapped[str] = mapped_column(TIME, default="")
    body_part_examined: Mapped[str] = mapped_column(CODE_STRING, default="")
    performed_procedure_step_start_date: Mapped[str] = mapped_column(DATE, default="")
    performed_procedure_step_start_time: Mapped[str] = mapped_column(TIME, default="")
    performed_procedure_step_start_time_key: Mapped[str] = mapped_column(TIME, default="")
    timezone_offset_from_utc: Mapped[str] = mapped_column(SHORT_STRING, default="")
    specific_character_set: Mapped[str] = mapped_column(String(160), default="")

    number_of_series_related_instances: Mapped[int] = mapped_column(Integer, default=0)
    # Incremented by every transaction that adds or removes an instance of the series;
    # the cached series metadata and the metadata ETag are tied to it.
    revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list[Instance]] = relationship(back_populates="series")


class Instance(Base):
    """One stored SOP instance and where its bytes are."""

    __tablename__ = "instance"
    __table_args__ = (Index("ix_instance_series_number", "series_fk", "instance_number"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(UID, unique=True)
    series_fk: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    study_fk: Mapped[int] = mapped_column(ForeignKey("study.id"), index=True)

    sop_class_uid: Mapped[str] = mapped_column(UID, default="", index=True)
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bits_allocated: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int | None] = mapped_column(Integer, nullable=True)
    content_date: Mapped[str] = mapped_column(DATE, default="")
    content_time: Mapped[str] = mapped_column(TIME, default="")
    specific_character_set: Mapped[str] = mapped_column(String(160), default="")

    transfer_syntax_uid: Mapped[str] = mapped_column(UID)
    object_key: Mapped[str] = mapped_column(String(255))
    object_size: Mapped[int] = mapped_column(BigInteger)
    # Byte offset in the stored Part 10 file where the dataset (after the File Meta
    # Information) begins; WADO-RS uses it to serve the dataset without re-encoding.
    dataset_offset: Mapped[int] = mapped_column(Integer)
    # SHA-256 of the dataset bytes as received, in hex: identifies a re-sent copy.
    dataset_sha256: Mapped[str] = mapped_column(String(64))
    # DICOM JSON (PS3.18 annex F) with bulk data replaced by relative BulkDataURIs.
    metadata_json: Mapped[str] = mapped_column(Text)
    source_ae_title: Mapped[str] = mapped_column(SHORT_STRING, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    series: Mapped[Series] = relationship(back_populates="instances")


class FrameIndex(Base):
    """The positions of the frames of an instance's Pixel Data in its stored object.

    Written with the instance row; see :mod:`noctis_common.dicom.frame_index`. Native
    frames have ``frame_length``; encapsulated frames have ``frame_ranges``, packed
    ``(position, length)`` pairs. Instances without a row are located by parsing.
    """

    __tablename__ = "frame_index"

    instance_fk: Mapped[int] = mapped_column(
        ForeignKey("instance.id", ondelete="CASCADE"), primary_key=True
    )
    pixel_data_offset: Mapped[int] = mapped_column(BigInteger)
    number_of_frames: Mapped[int] = mapped_column(Integer)
    frame_length: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    frame_ranges: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class OutboxEvent(Base):
    """An event written in the same transaction as the index change it reports."""

    __tablename__ = "outbox_event"
    __table_args__ = (
        Index("ix_outbox_event_unpublished", "published_at", "id"),
        Index("ux_outbox_event_sequence", "sequence", unique=True),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    study_instance_uid: Mapped[str] = mapped_column(UID, default="")
    payload_json: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Given by the relay in publication order; the change feed pages by it.
    sequence: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # W3C trace context of the transaction that wrote the event.
    traceparent: Mapped[str | None] = mapped_column(String(55), nullable=True)


class ForwardJob(Base):
    """One stored instance waiting to be forwarded by C-STORE to one remote AE.

    A job is deleted once the destination has acknowledged the instance. A job that
    failed ``forward_max_attempts`` times, or failed in a way no retry can fix, stays
    with ``status`` ``failed`` and the last error, for an operator to inspect.
    """

    __tablename__ = "forward_job"
    __table_args__ = (
        UniqueConstraint("event_id", "destination_ae_title"),
        Index("ix_forward_job_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    # The outbox event that created the job; a re-published event adds no second job.
    event_id: Mapped[int] = mapped_column(BigInteger)
    destination_ae_title: Mapped[str] = mapped_column(SHORT_STRING)
    rule_name: Mapped[str] = mapped_column(LONG_STRING, default="")
    study_instance_uid: Mapped[str] = mapped_column(UID)
    series_instance_uid: Mapped[str] = mapped_column(UID)
    sop_instance_uid: Mapped[str] = mapped_column(UID, index=True)
    sop_class_uid: Mapped[str] = mapped_column(UID)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )


class SeriesMetadata(Base):
    """The DICOM JSON of all instances of a series, cached for Retrieve Metadata.

    ``metadata_json`` is the instances' JSON objects joined by commas, without the
    enclosing brackets, with each BulkDataURI relative to the series (see
    :mod:`noctis_wado.metadata`). The row is valid while ``revision`` equals the
    series' revision; readers rebuild it otherwise.
    """

    __tablename__ = "series_metadata"

    series_fk: Mapped[int] = mapped_column(
        ForeignKey("series.id", ondelete="CASCADE"), primary_key=True
    )
    revision: Mapped[int] = mapped_column(Integer)
    metadata_json: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )


class OrphanObject(Base):
    """An object whose index rows were deleted but whose deletion from the store failed.

    The deletion sweep retries each row until the object is gone. A key that an
    instance row references again (the same instance stored anew) is dropped from the
    list without deleting the object.
    """

    __tablename__ = "orphan_object"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    object_key: Mapped[str] = mapped_column(String(255), unique=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )
