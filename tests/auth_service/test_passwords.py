"""Password hashing parameters and the password rules."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from noctis_auth import passwords
from noctis_auth.passwords import (
    PasswordPolicyError,
    check_password_policy,
    hash_password,
    needs_rehash,
    verify_password,
)


def test_service_hashes_with_rfc9106_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher())
    password_hash = hash_password("a long enough password")
    assert password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert verify_password(password_hash, "a long enough password")
    assert not verify_password(password_hash, "another password")


def test_cheaper_hash_needs_rehash(monkeypatch: pytest.MonkeyPatch) -> None:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash("password")
    monkeypatch.setattr(passwords, "_hasher", PasswordHasher())
    assert needs_rehash(cheap)


def test_unknown_user_never_matches() -> None:
    assert not verify_password(None, "no user has this password")


def test_invalid_hash_never_matches() -> None:
    assert not verify_password("not a hash", "password")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "has 5 characters; use at least 12"),
        ("x" * 1025, "use at most 1024"),
        ("Administrator", "equals the username"),
    ],
)
def test_weak_password_is_rejected(password: str, message: str) -> None:
    with pytest.raises(PasswordPolicyError, match=message):
        check_password_policy(password, username="administrator", min_length=12)


def test_long_passphrase_is_accepted() -> None:
    check_password_policy("four random words here", username="admin", min_length=12)
