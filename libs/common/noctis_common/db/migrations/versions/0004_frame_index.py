"""frame index: where each frame of an instance's Pixel Data is in its stored object

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 23:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "frame_index",
        sa.Column(
            "instance_fk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("pixel_data_offset", sa.BigInteger(), nullable=False),
        sa.Column("number_of_frames", sa.Integer(), nullable=False),
        sa.Column("frame_length", sa.BigInteger(), nullable=True),
        sa.Column("frame_ranges", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["instance_fk"], ["instance.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("instance_fk"),
    )


def downgrade() -> None:
    op.drop_table("frame_index")
