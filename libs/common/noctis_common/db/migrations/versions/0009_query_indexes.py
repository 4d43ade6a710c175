"""query indexes: what keeps QIDO-RS fast at a million instances

Every study-level query orders by (study_date, study_time_key, id) descending and
stops after ``limit`` rows. ``ix_study_date_time_order`` lets the database read the
first rows of that order from the index instead of sorting every matching study.
``ix_series_study_order`` does the same for the series list of one study, which is
ordered by (series_number, id).

On PostgreSQL a B-tree index serves ``LIKE 'abc%'`` only with the pattern operator
class when the database's collation is not C, so ``ix_study_patient_name_pattern``
indexes ``patient_name_search`` with ``varchar_pattern_ops`` for PatientName
wildcard queries. SQLite ignores the operator class, so there it is a second plain
index on the column: the models declare one schema for both databases.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_study_date_time_order", "study", ["study_date", "study_time_key", "id"])
    op.create_index("ix_series_study_order", "series", ["study_fk", "series_number", "id"])
    op.create_index(
        "ix_study_patient_name_pattern",
        "study",
        ["patient_name_search"],
        postgresql_ops={"patient_name_search": "varchar_pattern_ops"},
    )


def downgrade() -> None:
    op.drop_index("ix_study_patient_name_pattern", table_name="study")
    op.drop_index("ix_series_study_order", table_name="series")
    op.drop_index("ix_study_date_time_order", table_name="study")
