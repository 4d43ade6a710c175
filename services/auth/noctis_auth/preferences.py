"""Per-user preferences: one JSON object of viewer and worklist settings.

The token service stores the object as it is given and does not interpret it; the
viewer defines its content. A PUT replaces the whole object.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from noctis_auth.state import AuthService
from noctis_auth.tokens import AccessTokenClaims
from noctis_auth.users import find_user
from noctis_common.db.models import AuthUser, AuthUserPreference

# Larger objects are rejected; settings of a viewer and a worklist take a few KiB.
MAX_PREFERENCES_BYTES = 64 * 1024


def _user_of(session: Session, claims: AccessTokenClaims) -> AuthUser:
    user = None
    if not (claims.client_id and claims.sub == claims.client_id):
        user = find_user(session, claims.sub)
    if user is None or user.disabled:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail=f"preferences belong to user accounts; {claims.sub!r} is no enabled user",
        )
    return user


def read_preferences(service: AuthService, claims: AccessTokenClaims) -> dict[str, Any]:
    """Return the token holder's preferences, ``{}`` when none were stored."""
    with service.database.read_session() as session:
        user = _user_of(session, claims)
        row = session.get(AuthUserPreference, user.id)
        if row is None:
            return {}
        preferences: dict[str, Any] = json.loads(row.preferences_json)
        return preferences


def write_preferences(
    service: AuthService, claims: AccessTokenClaims, preferences: Any
) -> dict[str, Any]:
    """Replace the token holder's preferences with ``preferences``, a JSON object."""
    if not isinstance(preferences, dict):
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST,
            detail='preferences must be a JSON object, such as {"worklist": {...}}',
        )
    text = json.dumps(preferences, separators=(",", ":"))
    if len(text.encode()) > MAX_PREFERENCES_BYTES:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            detail=f"preferences take {len(text.encode())} bytes; the limit is "
            f"{MAX_PREFERENCES_BYTES}",
        )
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        user = _user_of(session, claims)
        row = session.get(AuthUserPreference, user.id)
        if row is None:
            session.add(AuthUserPreference(user_fk=user.id, preferences_json=text, updated_at=now))
        else:
            row.preferences_json = text
            row.updated_at = now
    return preferences
