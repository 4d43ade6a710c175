"""auth: users, service clients, refresh tokens, authorization codes, signing keys, preferences

The tables of the token service (``noctis_auth``). Secrets are stored as hashes:
passwords as argon2id, client secrets, refresh tokens and authorization codes as
SHA-256 of their random values. Signing keys are stored as PKCS#8 PEM, encrypted when
NOCTIS_AUTH_KEY_PASSPHRASE is set.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 00:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "auth_user",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("referring_physician_name", sa.String(length=324), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("roles", sa.String(length=255), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        _timestamp("locked_until", nullable=True),
        _timestamp("password_changed_at"),
        _timestamp("last_login_at", nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "auth_client",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=True),
        sa.Column("roles", sa.String(length=255), nullable=False),
        sa.Column("grant_types", sa.String(length=255), nullable=False),
        sa.Column("redirect_uris", sa.Text(), nullable=False),
        sa.Column("post_logout_redirect_uris", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id"),
    )
    op.create_table(
        "auth_refresh_token",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.Column("user_fk", BIG_ID, nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        _timestamp("auth_time"),
        _timestamp("issued_at"),
        _timestamp("expires_at"),
        _timestamp("used_at", nullable=True),
        _timestamp("revoked_at", nullable=True),
        sa.ForeignKeyConstraint(["user_fk"], ["auth_user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_sha256"),
    )
    op.create_index("ix_auth_refresh_token_family_id", "auth_refresh_token", ["family_id"])
    op.create_index("ix_auth_refresh_token_user_fk", "auth_refresh_token", ["user_fk"])
    op.create_index("ix_auth_refresh_token_expires_at", "auth_refresh_token", ["expires_at"])
    op.create_table(
        "auth_authorization_code",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("code_sha256", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_fk", BIG_ID, nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("scope", sa.String(length=255), nullable=False),
        sa.Column("nonce", sa.String(length=255), nullable=False),
        sa.Column("code_challenge", sa.String(length=128), nullable=False),
        _timestamp("auth_time"),
        _timestamp("expires_at"),
        _timestamp("used_at", nullable=True),
        sa.Column("family_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["user_fk"], ["auth_user.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("code_sha256"),
    )
    op.create_index("ix_auth_authorization_code_user_fk", "auth_authorization_code", ["user_fk"])
    op.create_index(
        "ix_auth_authorization_code_expires_at", "auth_authorization_code", ["expires_at"]
    )
    op.create_table(
        "auth_signing_key",
        sa.Column("kid", sa.String(length=64), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("private_key_pem", sa.Text(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("public_jwk", sa.Text(), nullable=False),
        _timestamp("created_at"),
        _timestamp("rotated_at", nullable=True),
        _timestamp("retired_at", nullable=True),
        sa.PrimaryKeyConstraint("kid"),
    )
    op.create_table(
        "auth_user_preference",
        sa.Column("user_fk", BIG_ID, nullable=False),
        sa.Column("preferences_json", sa.Text(), nullable=False),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(["user_fk"], ["auth_user.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_fk"),
    )


def downgrade() -> None:
    op.drop_table("auth_user_preference")
    op.drop_table("auth_signing_key")
    op.drop_index("ix_auth_authorization_code_expires_at", table_name="auth_authorization_code")
    op.drop_index("ix_auth_authorization_code_user_fk", table_name="auth_authorization_code")
    op.drop_table("auth_authorization_code")
    op.drop_index("ix_auth_refresh_token_expires_at", table_name="auth_refresh_token")
    op.drop_index("ix_auth_refresh_token_user_fk", table_name="auth_refresh_token")
    op.drop_index("ix_auth_refresh_token_family_id", table_name="auth_refresh_token")
    op.drop_table("auth_refresh_token")
    op.drop_table("auth_client")
    op.drop_table("auth_user")
