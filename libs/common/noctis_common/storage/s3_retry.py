"""Retries of S3 requests that failed for a transient reason, with exponential backoff.

A request is retried when the server was unreachable (connection refused or reset,
timeout), returned HTTP 5xx or 429, or asked the client to slow down (``SlowDown``).
Retries go on for a bounded time after the first failure; then the last error is raised
as a :class:`~noctis_common.storage.base.StorageError`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import urllib3.exceptions
from minio.error import InvalidResponseError, S3Error, ServerError

from noctis_common.storage.base import StorageError

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BACKOFF_S = 5.0
# Error codes that S3 servers return for a request worth repeating as it is.
TRANSIENT_S3_CODES = frozenset(
    {
        "InternalError",
        "OperationAborted",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "SlowDownRead",
        "SlowDownWrite",
        "XMinioServerNotInitialized",
    }
)


def _transient_status(status: int) -> bool:
    return status == 429 or status >= 500


def is_transient_error(error: BaseException) -> bool:
    """Return whether repeating the request that raised ``error`` may succeed."""
    if isinstance(error, S3Error):
        return error.code in TRANSIENT_S3_CODES or _transient_status(error.response.status)
    if isinstance(error, ServerError):
        return _transient_status(error.status_code)
    if isinstance(error, InvalidResponseError):
        # Proxies and load balancers in front of the server send error bodies that are
        # not XML. minio keeps the HTTP status of such a response only in _code.
        status = getattr(error, "_code", 0)
        return isinstance(status, int) and _transient_status(status)
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        return error.reason is not None and is_transient_error(error.reason)
    if isinstance(error, urllib3.exceptions.SSLError | urllib3.exceptions.LocationValueError):
        return False  # a certificate or address problem stays until someone fixes it
    if isinstance(error, urllib3.exceptions.HTTPError):
        return True  # connection refused, reset or timed out, or a response cut short
    return isinstance(error, ConnectionError | TimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    """How long and how often failed S3 requests are retried.

    ``max_s`` bounds the time from the first failure to the last retry; 0 turns retries
    off. The wait before retry n is ``initial_s * 2**(n-1)``, capped at 5 s, with
    jitter so that clients that failed together do not retry together.
    """

    max_s: float
    initial_s: float

    def begin(self, description: str) -> Retrying:
        """Return the retry state of one operation, described for messages and logs."""
        return Retrying(self, description)

    def run(self, operation: Callable[[], T], description: str) -> T:
        """Run ``operation``, retrying transient errors; raise other errors unchanged.

        Raises :class:`StorageError` when transient errors last longer than ``max_s``.
        """
        retrying = self.begin(description)
        while True:
            try:
                return operation()
            except Exception as error:
                retrying.wait_or_raise(error)


class Retrying:
    """The retry state of one operation: its failures so far and its deadline."""

    def __init__(self, policy: RetryPolicy, description: str) -> None:
        self.policy = policy
        self.description = description
        self.failures = 0
        self.first_failure: float | None = None

    def wait_or_raise(self, error: Exception) -> None:
        """Sleep before the next attempt after a transient ``error``, or raise.

        Raises ``error`` itself when it is not transient, and :class:`StorageError` when
        the retry time is used up.
        """
        if not is_transient_error(error):
            raise error
        now = time.monotonic()
        if self.first_failure is None:
            self.first_failure = now
        self.failures += 1
        elapsed = now - self.first_failure
        remaining = self.policy.max_s - elapsed
        if remaining <= 0:
            raise StorageError(
                f"{self.description} failed {self.failures} times in {elapsed:.1f} s, the "
                f"last time with: {error}; the S3 server is unreachable or overloaded, so "
                "check it and retry"
            ) from error
        backoff = min(self.policy.initial_s * 2 ** (self.failures - 1), MAX_BACKOFF_S)
        delay = min(random.uniform(backoff / 2, backoff), remaining)  # noqa: S311 (jitter)
        logger.warning(
            "%s failed (attempt %d), retrying in %.2f s: %s",
            self.description,
            self.failures,
            delay,
            error,
        )
        time.sleep(delay)

    def reset(self) -> None:
        """Forget earlier failures after progress, so a long transfer gets a fresh window."""
        self.failures = 0
        self.first_failure = None
