"""study completion: revisions and study-complete state

Placeholder in the migration chain; filled in by the change that needs it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
