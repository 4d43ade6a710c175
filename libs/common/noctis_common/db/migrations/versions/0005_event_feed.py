"""event feed: a publication sequence and the trace context of each outbox event

``sequence`` is given by the relay when it publishes an event, in publication order,
so the REST change feed can page by it without skipping an event whose transaction
committed late. ``traceparent`` carries the W3C trace context of the request that
wrote the event to the broker and to consumers.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_event") as batch:
        batch.add_column(sa.Column("sequence", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("traceparent", sa.String(length=55), nullable=True))
        batch.create_index("ux_outbox_event_sequence", ["sequence"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("outbox_event") as batch:
        batch.drop_index("ux_outbox_event_sequence")
        batch.drop_column("traceparent")
        batch.drop_column("sequence")
