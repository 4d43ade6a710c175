"""Password hashing with argon2id and the rules a new password must meet.

Hashes use argon2-cffi's default parameters, the low-memory profile of RFC 9106
(3 passes over 64 MiB, 4 lanes). A stored hash made with other parameters is replaced
at the next successful login.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

# Longer passwords are rejected so that hashing one cannot be made arbitrarily slow.
MAX_PASSWORD_LENGTH = 1024

_hasher = PasswordHasher()


class PasswordPolicyError(ValueError):
    """A new password that does not meet the password rules."""


def hash_password(password: str) -> str:
    """Return the argon2id hash of ``password`` in the PHC string format."""
    return _hasher.hash(password)


@cache
def _unknown_user_hash() -> str:
    return _hasher.hash("no user has this password")


def verify_password(password_hash: str | None, password: str) -> bool:
    """Return whether ``password`` matches ``password_hash``.

    With ``password_hash`` None (no such user) a hash is still verified, so that the
    response time does not reveal whether a username exists.
    """
    if len(password) > MAX_PASSWORD_LENGTH:
        return False
    try:
        matched = _hasher.verify(password_hash or _unknown_user_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


def needs_rehash(password_hash: str) -> bool:
    """Return whether ``password_hash`` was made with other than the current parameters."""
    try:
        return _hasher.check_needs_rehash(password_hash)
    except InvalidHashError:
        return True


def check_password_policy(password: str, *, username: str, min_length: int) -> None:
    """Raise PasswordPolicyError unless ``password`` may be set for ``username``.

    The rules follow NIST SP 800-63B 3.1.1.2: a minimum length, no composition rules.
    """
    if len(password) < min_length:
        raise PasswordPolicyError(
            f"the password has {len(password)} characters; use at least {min_length}"
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise PasswordPolicyError(
            f"the password has {len(password)} characters; use at most {MAX_PASSWORD_LENGTH}"
        )
    if password.strip().casefold() == username.casefold():
        raise PasswordPolicyError("the password equals the username; choose another one")
