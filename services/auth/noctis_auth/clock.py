"""UTC timestamps, as the index stores them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime.

    SQLite returns the timestamps that Noctis wrote in UTC without their time zone.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def epoch_seconds(value: datetime) -> int:
    return int(as_utc(value).timestamp())


def epoch_microseconds(value: datetime) -> int:
    """Return microseconds since 1970 in exact integer arithmetic, for equality checks."""
    return (as_utc(value) - EPOCH) // timedelta(microseconds=1)
