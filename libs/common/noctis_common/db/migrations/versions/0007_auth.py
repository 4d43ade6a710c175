"""auth: users, roles, service clients, signing keys and preferences

Placeholder in the migration chain; filled in by the change that needs it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
