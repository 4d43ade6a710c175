"""audit trail: the append-only record of every access to patient data

``audit_record`` keeps one row per access or security event and ``audit_object`` the
studies and patients each one concerns. Triggers reject every UPDATE and DELETE of
both tables, on PostgreSQL (and TRUNCATE there) and on SQLite, so the trail stays
append-only even for code or people that bypass Noctis. Removing old records, for a
retention policy, means dropping the triggers first as the database owner: a
deliberate act that the database's own log shows.

The index on ``study.referring_physician_name_search`` serves the referring physician
restriction of QIDO-RS.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
AUDIT_TABLES = ("audit_record", "audit_object")
REJECTION = "the audit trail is append-only: rows cannot be updated or deleted"


def _create_tables() -> None:
    op.create_table(
        "audit_record",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("record_uid", sa.String(length=32), nullable=False),
        sa.Column("event_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("event_action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("outcome_description", sa.Text(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("user_name", sa.String(length=255), nullable=False),
        sa.Column("user_roles", sa.String(length=255), nullable=False),
        sa.Column("calling_ae_title", sa.String(length=16), nullable=False),
        sa.Column("network_access_point", sa.String(length=64), nullable=False),
        sa.Column("session_id", sa.String(length=64), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("request", sa.String(length=255), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("number_of_instances", sa.Integer(), nullable=True),
        sa.Column("audit_source_id", sa.String(length=64), nullable=False),
        sa.UniqueConstraint("record_uid"),
    )
    op.create_index("ix_audit_record_time", "audit_record", ["event_time", "id"])
    op.create_index("ix_audit_record_event_type", "audit_record", ["event_type"])
    op.create_index("ix_audit_record_outcome", "audit_record", ["outcome"])
    op.create_index("ix_audit_record_user_id", "audit_record", ["user_id"])
    op.create_table(
        "audit_object",
        sa.Column("id", BIG_ID, primary_key=True),
        sa.Column("record_fk", BIG_ID, sa.ForeignKey("audit_record.id"), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("object_name", sa.String(length=324), nullable=False),
    )
    op.create_index("ix_audit_object_lookup", "audit_object", ["object_type", "object_id"])
    op.create_index("ix_audit_object_record_fk", "audit_object", ["record_fk"])


def _create_postgresql_triggers() -> None:
    op.execute(
        f"""
        CREATE FUNCTION noctis_reject_audit_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '{REJECTION} (table %, operation %)', TG_TABLE_NAME, TG_OP;
        END;
        $$
        """
    )
    for table in AUDIT_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION noctis_reject_audit_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION noctis_reject_audit_change()"
        )


def _create_sqlite_triggers() -> None:
    for table in AUDIT_TABLES:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{REJECTION}'); END"
            )


def upgrade() -> None:
    _create_tables()
    with op.batch_alter_table("study") as batch:
        batch.create_index(
            "ix_study_referring_physician_name_search", ["referring_physician_name_search"]
        )
    if op.get_bind().dialect.name == "postgresql":
        _create_postgresql_triggers()
    else:
        _create_sqlite_triggers()


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in AUDIT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS noctis_reject_audit_change()")
    else:
        for table in AUDIT_TABLES:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
    with op.batch_alter_table("study") as batch:
        batch.drop_index("ix_study_referring_physician_name_search")
    op.drop_table("audit_object")
    op.drop_table("audit_record")
