"""study completion: study revisions and the time of each study's latest instance

``study.revision`` is the revision that new instances join, ``completed_revision`` the
latest revision announced by a ``study.complete`` event, and ``last_instance_at`` the
time the latest instance was indexed. Studies indexed before this migration count as
announced (revision 1, completed revision 1), so upgrading an archive publishes no
event for them; their next instance opens revision 2.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

PENDING = "completed_revision < revision"
SQLITE_PLACEHOLDER_TIME = "1970-01-01 00:00:00.000000"


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    with op.batch_alter_table("study") as batch:
        batch.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))
        batch.add_column(
            sa.Column("completed_revision", sa.Integer(), server_default="0", nullable=False)
        )
        # SQLite adds a NOT NULL column only with a constant default, and removing the
        # default later would rebuild the study table, which the foreign keys of series
        # and instance rows forbid. So on SQLite the column keeps this unused default.
        batch.add_column(
            sa.Column(
                "last_instance_at",
                sa.DateTime(timezone=True),
                server_default=SQLITE_PLACEHOLDER_TIME if sqlite else None,
                nullable=not sqlite,
            )
        )
    op.execute("UPDATE study SET completed_revision = revision, last_instance_at = updated_at")
    if not sqlite:
        op.alter_column(
            "study", "last_instance_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )
    op.create_index(
        "ix_study_completion_due",
        "study",
        ["last_instance_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_study_completion_due", table_name="study")
    # Not in batch mode: rebuilding the study table on SQLite fails on the foreign keys
    # that point at it, and SQLite 3.35 and later drop a column in place.
    op.drop_column("study", "last_instance_at")
    op.drop_column("study", "completed_revision")
    op.drop_column("study", "revision")
