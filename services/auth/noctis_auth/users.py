"""Logging a user in with a password, with account lockout.

After ``NOCTIS_AUTH_LOCKOUT_THRESHOLD`` failed logins in a row an account rejects every
login, the right password included, for ``NOCTIS_AUTH_LOCKOUT_MINUTES``. Then the
count starts again. Whatever the reason, the client gets one message, so that it
cannot learn which usernames exist or which accounts are locked. The log and the
audit trail record the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis_auth.clock import as_utc
from noctis_auth.passwords import hash_password, needs_rehash, verify_password
from noctis_auth.tokens import TokenSubject
from noctis_common.db import Database
from noctis_common.db.models import AuthUser
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

LOGIN_FAILED_MESSAGE = (
    "the username or password is wrong, or the account is disabled or locked after too "
    "many failed logins"
)


class LoginFailedError(Exception):
    """A failed login; ``reason`` is for the log and the audit trail, never the client."""

    def __init__(self, reason: str, user_known: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.user_known = user_known


@dataclass(frozen=True)
class LoggedInUser:
    """The user row's values that tokens need, read inside the login transaction."""

    id: int
    username: str
    subject: TokenSubject
    password_changed_at: datetime


def find_user(session: Session, username: str) -> AuthUser | None:
    """Return the user ``username``, or None; a NUL, which PostgreSQL rejects, names none."""
    if "\x00" in username:
        return None
    return session.scalars(select(AuthUser).where(AuthUser.username == username)).first()


def user_roles(user: AuthUser) -> tuple[str, ...]:
    return tuple(user.roles.split())


def subject_of_user(user: AuthUser) -> TokenSubject:
    return TokenSubject(
        sub=user.username,
        preferred_username=user.username,
        name=user.name,
        roles=user_roles(user),
        referring_physician_name=user.referring_physician_name,
    )


def authenticate_user(
    database: Database, settings: Settings, username: str, password: str, now: datetime
) -> LoggedInUser:
    """Check ``password`` for ``username`` and count the outcome towards lockout.

    Raises LoginFailedError; the failure count is committed before it is raised.
    """
    failure: LoginFailedError | None = None
    with database.write_session() as session, session.begin():
        # A NUL, which PostgreSQL rejects in a query, names no user.
        user = (
            None
            if "\x00" in username
            else session.scalars(
                select(AuthUser).where(AuthUser.username == username).with_for_update()
            ).first()
        )
        if user is None:
            verify_password(None, password)
            failure = LoginFailedError("unknown username", user_known=False)
        elif user.locked_until is not None and as_utc(user.locked_until) > now:
            verify_password(None, password)
            failure = LoginFailedError(
                f"account locked until {as_utc(user.locked_until):%Y-%m-%dT%H:%M:%SZ}",
                user_known=True,
            )
        elif not verify_password(user.password_hash, password):
            user.failed_logins += 1
            reason = f"wrong password ({user.failed_logins} failed in a row)"
            if user.failed_logins >= settings.auth_lockout_threshold:
                user.locked_until = now + timedelta(minutes=settings.auth_lockout_minutes)
                user.failed_logins = 0
                reason += f"; account locked for {settings.auth_lockout_minutes:g} minutes"
                logger.warning(
                    "locked account %s for %g minutes after %d failed logins",
                    user.username,
                    settings.auth_lockout_minutes,
                    settings.auth_lockout_threshold,
                )
            failure = LoginFailedError(reason, user_known=True)
        elif user.disabled:
            failure = LoginFailedError("account disabled", user_known=True)
        else:
            user.failed_logins = 0
            user.locked_until = None
            user.last_login_at = now
            if needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            return LoggedInUser(
                user.id, user.username, subject_of_user(user), user.password_changed_at
            )
    assert failure is not None
    raise failure
