"""Logging of a failure that repeats, such as a background task while the database is down.

:class:`RepeatedFailureLog` logs the first failure with its traceback, then one line
when the error's type changes, one line every ``repeat_interval_s`` while the same error
repeats, and one line when the task succeeds again. Repeats in between go to DEBUG, so
an outage of an hour costs a few dozen lines per process, not thousands of tracebacks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

# Seconds between two log lines about the same error that keeps repeating.
DEFAULT_REPEAT_INTERVAL_S = 60.0


def describe_failure(error: BaseException) -> str:
    """Return the error's type and message on one line."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


class RepeatedFailureLog:
    """Logs the failures and the recovery of one repeated task, rate-limited and thread-safe.

    ``task`` names the work in the log lines ("the study-complete sweep").
    """

    def __init__(
        self,
        logger: logging.Logger,
        task: str,
        repeat_interval_s: float = DEFAULT_REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.task = task
        self.repeat_interval_s = repeat_interval_s
        self.clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self._first_failure_at = 0.0
        self._last_logged_at = 0.0
        self._last_error_type: type[BaseException] | None = None
        self._failures_since_logged = 0

    def failed(self, error: BaseException, retry_in_s: float | None = None) -> None:
        """Record one failure, logging it only when it starts, changes or is due again."""
        description = describe_failure(error)
        retry = f"; retrying in {retry_in_s:.1f} s" if retry_in_s is not None else ""
        now = self.clock()
        with self._lock:
            self.failures += 1
            self._failures_since_logged += 1
            if self.failures == 1:
                self._first_failure_at = now
                level = logging.ERROR
                message = f"{self.task} failed: {description}{retry}"
                exc_info: BaseException | None = error
            elif type(error) is not self._last_error_type:
                level = logging.WARNING
                message = f"{self.task} now fails with another error: {description}{retry}"
                exc_info = None
            elif now - self._last_logged_at >= self.repeat_interval_s:
                level = logging.WARNING
                message = (
                    f"{self.task} still fails: {self._failures_since_logged} more failures in "
                    f"{now - self._last_logged_at:.0f} s, {self.failures} since the first "
                    f"({description}){retry}"
                )
                exc_info = None
            else:
                self.logger.debug("%s failed again: %s", self.task, description)
                return
            self._last_error_type = type(error)
            self._last_logged_at = now
            self._failures_since_logged = 0
        self.logger.log(level, "%s", message, exc_info=exc_info)

    def succeeded(self) -> None:
        """Record a success; logs one line when it ends a run of failures."""
        if not self.failures:
            return
        now = self.clock()
        with self._lock:
            failures = self.failures
            if not failures:
                return
            self.failures = 0
            self._last_error_type = None
            self._failures_since_logged = 0
            duration_s = now - self._first_failure_at
        self.logger.info(
            "%s works again after %d failures over %.0f s", self.task, failures, duration_s
        )
