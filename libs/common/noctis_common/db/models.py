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
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
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
    __table_args__ = (
        # Only studies waiting for their study.complete event are in this index, so the
        # sweep finds the due ones without scanning the whole table.
        Index(
            "ix_study_completion_due",
            "last_instance_at",
            postgresql_where=text("completed_revision < revision"),
            sqlite_where=text("completed_revision < revision"),
        ),
        # The order of every study-level query, read from the index up to ``limit``.
        Index("ix_study_date_time_order", "study_date", "study_time_key", "id"),
        # PatientName wildcards (LIKE 'abc%') on PostgreSQL, whatever its collation. On
        # SQLite, which ignores the operator class, it repeats ix_study_patient_name_search.
        Index(
            "ix_study_patient_name_pattern",
            "patient_name_search",
            postgresql_ops={"patient_name_search": "varchar_pattern_ops"},
        ),
    )

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
    # Indexed for the referring physician restriction (noctis_common.auth_restrictions).
    referring_physician_name_search: Mapped[str] = mapped_column(
        PERSON_NAME, default="", index=True
    )
    timezone_offset_from_utc: Mapped[str] = mapped_column(SHORT_STRING, default="")
    specific_character_set: Mapped[str] = mapped_column(String(160), default="")

    # Maintained in the same transaction that adds or deletes an instance.
    modalities_in_study: Mapped[str] = mapped_column(String(160), default="")
    number_of_study_related_series: Mapped[int] = mapped_column(Integer, default=0)
    number_of_study_related_instances: Mapped[int] = mapped_column(Integer, default=0)

    # Study completion (see noctis_common.study_complete). ``revision`` is the revision
    # that new instances join. Unlike series.revision, it grows only when an instance
    # arrives after its revision was announced complete. ``completed_revision`` is the
    # latest revision announced by a study.complete event, 0 before the first.
    revision: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    completed_revision: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_instance_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(back_populates="study")


class Series(Base):
    """A series of one study."""

    __tablename__ = "series"
    # The order of the series list of a study.
    __table_args__ = (Index("ix_series_study_order", "study_fk", "series_number", "id"),)

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


class ProcessedEvent(Base):
    """An event that a consumer group finished, kept so that a redelivery is skipped.

    :mod:`noctis_common.consumer` inserts the row in the transaction in which the
    handler ran, so the handler's database writes and this row commit together.
    Rows older than the consumer's retention are deleted.
    """

    __tablename__ = "processed_event"
    __table_args__ = (
        UniqueConstraint(
            "consumer_group", "event_source", "event_id", name="ux_processed_event_key"
        ),
        Index("ix_processed_event_processed_at", "processed_at"),
    )

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    consumer_group: Mapped[str] = mapped_column(String(255))
    # CloudEvents "source" and "id": together they identify the event.
    event_source: Mapped[str] = mapped_column(String(255))
    event_id: Mapped[str] = mapped_column(String(255))
    # "handled", or "dead-lettered" when the event went to the dead-letter topic.
    outcome: Mapped[str] = mapped_column(String(16))
    processed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


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


# Auth service (noctis_auth): people, service clients, their tokens, the keys that sign
# the tokens, and per-user preferences. Roles are names from noctis_common.roles, kept
# space-separated in one column because the set of roles is fixed in code.

ROLE_LIST = String(255)


class AuthUser(Base):
    """A person who logs in with a username and password."""

    __tablename__ = "auth_user"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # Display name for viewers, the OpenID Connect ``name`` claim.
    name: Mapped[str] = mapped_column(String(255), default="")
    # DICOM PN that the referring physician restriction matches Referring Physician's
    # Name against; empty for users who are not referring physicians.
    referring_physician_name: Mapped[str] = mapped_column(PERSON_NAME, default="")
    # argon2id hash in the PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    password_hash: Mapped[str] = mapped_column(String(255))
    roles: Mapped[str] = mapped_column(ROLE_LIST, default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    # Failed logins since the last successful one; reaching the lockout threshold sets
    # locked_until and starts the count again.
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    password_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    last_login_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )


class AuthClient(Base):
    """An OAuth 2.0 client: a service with a secret, or a public client such as a viewer."""

    __tablename__ = "auth_client"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    # SHA-256 (hex) of the secret the service generated; None for a public client.
    secret_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Roles of the tokens that the client credentials grant issues to the client.
    roles: Mapped[str] = mapped_column(ROLE_LIST, default="")
    # Space-separated grant types the client may use (RFC 6749 names).
    grant_types: Mapped[str] = mapped_column(String(255), default="")
    # Space-separated absolute URIs; authorization and logout redirects go only there.
    redirect_uris: Mapped[str] = mapped_column(Text, default="")
    post_logout_redirect_uris: Mapped[str] = mapped_column(Text, default="")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )


class AuthRefreshToken(Base):
    """A refresh token, stored as its SHA-256 only.

    Each use rotates it: the row gets ``used_at`` and a new token of the same family is
    issued. A token presented again after its use revokes its whole family, because
    one of the two holders is not the client it was issued to.
    """

    __tablename__ = "auth_refresh_token"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    # Shared by every token rotated from one login.
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    user_fk: Mapped[int] = mapped_column(ForeignKey("auth_user.id"), index=True)
    # The client the token was issued to; empty for a password grant without a client.
    client_id: Mapped[str] = mapped_column(String(64), default="")
    scope: Mapped[str] = mapped_column(String(255), default="")
    # When the user entered their password, the OpenID Connect ``auth_time``.
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthAuthorizationCode(Base):
    """An authorization code (RFC 6749 4.1) with its PKCE challenge (RFC 7636).

    Stored as its SHA-256 only. A code is used once; a second use revokes the refresh
    tokens issued for the first (``family_id``).
    """

    __tablename__ = "auth_authorization_code"

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64))
    user_fk: Mapped[int] = mapped_column(ForeignKey("auth_user.id"), index=True)
    # The redirect_uri parameter as the authorization request sent it; empty when the
    # request left it out, because the client registered only one.
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(String(255), default="")
    nonce: Mapped[str] = mapped_column(String(255), default="")
    # BASE64URL(SHA256(code_verifier)), the S256 method of RFC 7636 4.2.
    code_challenge: Mapped[str] = mapped_column(String(128))
    auth_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    family_id: Mapped[str] = mapped_column(String(32), default="")


class AuthSigningKey(Base):
    """A key that signs access and ID tokens, with its public half as a JWK.

    The newest key whose ``rotated_at`` is null signs new tokens. A key is in the JWKS
    while ``retired_at`` is null or in the future, so tokens it signed before a
    rotation still verify until they expire.
    """

    __tablename__ = "auth_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    # PKCS#8 PEM; encrypted with NOCTIS_AUTH_KEY_PASSPHRASE when ``encrypted`` is set.
    private_key_pem: Mapped[str] = mapped_column(Text)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    public_jwk: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthUserPreference(Base):
    """A user's viewer and worklist settings, one JSON object that the viewer defines."""

    __tablename__ = "auth_user_preference"

    user_fk: Mapped[int] = mapped_column(
        ForeignKey("auth_user.id", ondelete="CASCADE"), primary_key=True
    )
    preferences_json: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utc_now, onupdate=utc_now
    )


class AuditRecord(Base):
    """One access to patient data or one security event, as the audit trail keeps it.

    Rows are only ever inserted: no code updates or deletes them, and triggers reject
    UPDATE and DELETE (migration 0008). The fields follow the DICOM audit message
    (PS3.15 A.5), into which :mod:`noctis_common.audit_export` converts a row.
    """

    __tablename__ = "audit_record"
    __table_args__ = (Index("ix_audit_record_time", "event_time", "id"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    # Random id given when the access happened; a journal replayed after a crash
    # inserts no record twice.
    record_uid: Mapped[str] = mapped_column(String(32), unique=True)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    event_type: Mapped[str] = mapped_column(String(32), index=True)
    # EventActionCode: C(reate), R(ead), U(pdate), D(elete) or E(xecute).
    event_action: Mapped[str] = mapped_column(String(1))
    # EventOutcomeIndicator: 0 success, 4 minor, 8 serious, 12 major failure.
    outcome: Mapped[int] = mapped_column(Integer, index=True)
    outcome_description: Mapped[str] = mapped_column(Text, default="")
    # Token subject, or the calling AE title for DIMSE.
    user_id: Mapped[str] = mapped_column(String(255), index=True)
    user_name: Mapped[str] = mapped_column(String(255), default="")
    user_roles: Mapped[str] = mapped_column(String(255), default="")
    calling_ae_title: Mapped[str] = mapped_column(SHORT_STRING, default="")
    network_access_point: Mapped[str] = mapped_column(String(64), default="")
    # Token id (jti) or association id that groups records of one session.
    session_id: Mapped[str] = mapped_column(String(64), default="")
    service: Mapped[str] = mapped_column(String(32), default="")
    request: Mapped[str] = mapped_column(String(255), default="")
    query: Mapped[str] = mapped_column(Text, default="")
    number_of_instances: Mapped[int | None] = mapped_column(Integer, nullable=True)
    audit_source_id: Mapped[str] = mapped_column(LONG_STRING, default="")

    objects: Mapped[list[AuditObject]] = relationship(
        back_populates="record", order_by="AuditObject.id"
    )


class AuditObject(Base):
    """A study or patient that an audit record concerns (ParticipantObjectIdentification)."""

    __tablename__ = "audit_object"
    __table_args__ = (Index("ix_audit_object_lookup", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(BIG_ID, primary_key=True)
    record_fk: Mapped[int] = mapped_column(BIG_ID, ForeignKey("audit_record.id"), index=True)
    # "study" (object_id: Study Instance UID) or "patient" (object_id: Patient ID).
    object_type: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[str] = mapped_column(LONG_STRING)
    # Patient Name for a patient, when the index knew it.
    object_name: Mapped[str] = mapped_column(PERSON_NAME, default="")

    record: Mapped[AuditRecord] = relationship(back_populates="objects")
