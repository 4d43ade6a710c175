"""event feed: a publication sequence and the trace context of each outbox event,
and the events that consumer groups processed

``sequence`` is given by the relay when it publishes an event, in publication order,
so the REST change feed can page by it without skipping an event whose transaction
committed late. ``traceparent`` carries the W3C trace context of the request that
wrote the event to the broker and to consumers.

``processed_event`` lists, per consumer group, the CloudEvents (source and id) that the
group finished, so that a redelivered event is skipped.

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
    op.create_table(
        "processed_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("consumer_group", sa.String(length=255), nullable=False),
        sa.Column("event_source", sa.String(length=255), nullable=False),
        sa.Column("event_id", sa.String(length=255), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint(
            "consumer_group", "event_source", "event_id", name="ux_processed_event_key"
        ),
    )
    op.create_index("ix_processed_event_processed_at", "processed_event", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_processed_event_processed_at", table_name="processed_event")
    op.drop_table("processed_event")
    with op.batch_alter_table("outbox_event") as batch:
        batch.drop_index("ux_outbox_event_sequence")
        batch.drop_column("traceparent")
        batch.drop_column("sequence")
