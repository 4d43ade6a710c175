"""Opaque random values (client secrets, refresh tokens, authorization codes).

The index stores only the SHA-256 of each value. The values carry 256 random bits,
so a fast hash suffices: searching that space is infeasible, unlike a search of
user passwords, which argon2 slows down.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_opaque_value() -> str:
    """Return 32 random bytes, base64url-encoded without padding (43 characters)."""
    return secrets.token_urlsafe(32)


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def matches_sha256(value: str, expected_sha256: str) -> bool:
    """Compare in constant time, so the time taken reveals nothing about the stored hash."""
    return hmac.compare_digest(sha256_hex(value), expected_sha256)
