"""Refresh tokens: issue, rotate on every use, detect reuse, revoke.

A login starts a token family. Each refresh marks the presented token used and issues
a new one of the same family (rotation, as the OAuth 2.0 Security Best Current
Practice, RFC 9700 4.14.2, recommends for public clients). A used token presented
again means that it was copied: the whole family is revoked, so both the thief and the
user must log in again. Every token of a family expires
``NOCTIS_AUTH_REFRESH_TOKEN_LIFETIME_S`` after the login, however often it rotated.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from noctis_auth.clock import as_utc
from noctis_auth.errors import invalid_grant
from noctis_auth.opaque import new_opaque_value, sha256_hex
from noctis_common.db.models import AuthRefreshToken, AuthUser

logger = logging.getLogger(__name__)

# Expired rows are kept this long for the log of reuse attempts, then deleted.
EXPIRED_ROW_RETENTION = timedelta(days=1)


@dataclass(frozen=True)
class RotatedToken:
    """The values a used refresh token passes on to its successor."""

    user: AuthUser
    family_id: str
    client_id: str
    scope: str
    auth_time: datetime
    expires_at: datetime


def new_family_id() -> str:
    return secrets.token_hex(16)


def issue_refresh_token(
    session: Session,
    *,
    user_fk: int,
    family_id: str,
    client_id: str,
    scope: str,
    auth_time: datetime,
    expires_at: datetime,
    now: datetime,
) -> str:
    """Add a refresh token row to ``session`` and return the token."""
    token = new_opaque_value()
    session.add(
        AuthRefreshToken(
            token_sha256=sha256_hex(token),
            family_id=family_id,
            user_fk=user_fk,
            client_id=client_id,
            scope=scope,
            auth_time=auth_time,
            issued_at=now,
            expires_at=expires_at,
        )
    )
    return token


def revoke_family(session: Session, family_id: str, now: datetime) -> int:
    """Revoke every token of a family; return how many were still unrevoked."""
    result = session.execute(
        update(AuthRefreshToken)
        .where(AuthRefreshToken.family_id == family_id, AuthRefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def revoke_user_tokens(session: Session, user_fk: int, now: datetime) -> None:
    session.execute(
        update(AuthRefreshToken)
        .where(AuthRefreshToken.user_fk == user_fk, AuthRefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_client_tokens(session: Session, client_id: str, now: datetime) -> None:
    session.execute(
        update(AuthRefreshToken)
        .where(AuthRefreshToken.client_id == client_id, AuthRefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def find_refresh_token(session: Session, token: str) -> AuthRefreshToken | None:
    return session.scalars(
        select(AuthRefreshToken)
        .where(AuthRefreshToken.token_sha256 == sha256_hex(token))
        .with_for_update()
    ).first()


def use_refresh_token(
    session: Session, token: str, client_id: str, now: datetime
) -> RotatedToken | None:
    """Mark ``token`` used and return what its successor carries over.

    Returns None after revoking the family when the token was used before; the caller
    commits that and then rejects the request. Raises ``invalid_grant`` for an unknown,
    revoked or expired token, one issued to another client, or one of a disabled user.
    """
    row = find_refresh_token(session, token)
    if row is None:
        raise invalid_grant("the refresh token is unknown")
    if row.client_id != client_id:
        raise invalid_grant("the refresh token was issued to another client")
    if row.revoked_at is not None:
        raise invalid_grant("the refresh token was revoked; log in again")
    if row.used_at is not None:
        revoked = revoke_family(session, row.family_id, now)
        logger.warning(
            "refresh token of family %s (user id %d) was used again after rotation; "
            "revoked the family's %d remaining tokens",
            row.family_id,
            row.user_fk,
            revoked,
        )
        return None
    if as_utc(row.expires_at) <= now:
        raise invalid_grant("the refresh token expired; log in again")
    user = session.get(AuthUser, row.user_fk)
    if user is None or user.disabled:
        raise invalid_grant("the refresh token's user is disabled")
    row.used_at = now
    return RotatedToken(
        user=user,
        family_id=row.family_id,
        client_id=row.client_id,
        scope=row.scope,
        auth_time=as_utc(row.auth_time),
        expires_at=as_utc(row.expires_at),
    )


def revoke_refresh_token(session: Session, token: str, client_id: str, now: datetime) -> bool:
    """Revoke the family of ``token`` for RFC 7009 revocation; return whether it was found.

    A token of another client is left alone, as RFC 7009 2.1 requires.
    """
    row = find_refresh_token(session, token)
    if row is None or row.client_id != client_id:
        return False
    revoke_family(session, row.family_id, now)
    return True


def delete_expired_tokens(session: Session, now: datetime) -> None:
    session.execute(
        delete(AuthRefreshToken).where(AuthRefreshToken.expires_at < now - EXPIRED_ROW_RETENTION)
    )
