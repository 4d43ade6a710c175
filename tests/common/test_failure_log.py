"""Repeated failures of background work: one traceback, then a line per change or minute."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from noctis_common.db import Database
from noctis_common.events import Event, OutboxRelay
from noctis_common.failure_log import RepeatedFailureLog
from noctis_common.study_complete import StudyCompleteSweeper

LOGGER_NAME = "tests.failure_log"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


def database_down() -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception("connection refused"))


def test_first_failure_logged_with_traceback(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    failure_log = RepeatedFailureLog(logging.getLogger(LOGGER_NAME), "the sweep", 60.0, clock)

    with caplog.at_level(logging.DEBUG, LOGGER_NAME):
        for _ in range(20):
            failure_log.failed(database_down(), retry_in_s=5.0)
            clock.now += 5.0

    records = error_records(caplog)
    assert len(records) == 2
    assert records[0].levelno == logging.ERROR
    assert records[0].exc_info is not None
    assert records[0].getMessage().startswith("the sweep failed: OperationalError: ")
    assert records[0].getMessage().endswith("; retrying in 5.0 s")
    assert records[1].exc_info is None
    assert "12 more failures in 60 s, 13 since the first" in records[1].getMessage()


def test_changed_error_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    failure_log = RepeatedFailureLog(logging.getLogger(LOGGER_NAME), "the sweep", 60.0, FakeClock())

    with caplog.at_level(logging.DEBUG, LOGGER_NAME):
        failure_log.failed(database_down())
        failure_log.failed(TimeoutError("timed out"))
        failure_log.failed(TimeoutError("timed out"))

    messages = [record.getMessage() for record in error_records(caplog)]
    assert messages[1:] == ["the sweep now fails with another error: TimeoutError: timed out"]


def test_recovery_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    failure_log = RepeatedFailureLog(logging.getLogger(LOGGER_NAME), "the sweep", 60.0, clock)

    with caplog.at_level(logging.INFO, LOGGER_NAME):
        failure_log.failed(database_down())
        clock.now = 30.0
        failure_log.failed(database_down())
        failure_log.succeeded()
        failure_log.succeeded()

    infos = [record.getMessage() for record in caplog.records if record.levelno == logging.INFO]
    assert infos == ["the sweep works again after 2 failures over 30 s"]


def test_sweeper_logs_one_traceback_while_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # An index without tables fails every sweep, like one whose server is down.
    database = Database(f"sqlite:///{tmp_path / 'index.db'}")
    sweeper = StudyCompleteSweeper(database, quiet_s=1.0, interval_s=1.0, public_base_url=None)

    with caplog.at_level(logging.INFO, "noctis_common.study_complete"):
        for _ in range(10):
            sweeper.sweep()

    records = error_records(caplog)
    assert len(records) == 1
    assert records[0].exc_info is not None


class DatabaseDownRelay(OutboxRelay):
    """A relay whose every batch fails as if the index database were down."""

    def relay_once(self) -> int:
        raise database_down()


class UnusedPublisher:
    def publish(self, events: Sequence[Event]) -> None:
        raise AssertionError("the relay published while its database was down")


def test_relay_logs_one_traceback_while_down(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = Database(f"sqlite:///{tmp_path / 'index.db'}")
    relay = DatabaseDownRelay(database, UnusedPublisher(), poll_interval_s=0.01, retry_max_s=0.01)

    with caplog.at_level(logging.INFO, "noctis_common.events"):
        relay.start()
        try:
            for _ in range(500):
                if relay.failure_log.failures >= 20:
                    break
                time.sleep(0.01)
        finally:
            relay.stop()

    records = error_records(caplog)
    assert relay.failure_log.failures >= 20
    assert len(records) == 1
    assert records[0].exc_info is not None
