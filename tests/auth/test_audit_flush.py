"""The audit flush: a record the database rejects is set aside instead of blocking the rest."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy.exc import DataError, OperationalError

from noctis_common import audit
from noctis_common.audit import REJECTED_FILE, AuditEvent, AuditEventType, AuditTrail, Outcome
from noctis_common.db import Database

POISON_USER = "poison"


class FakeIndex:
    """Replaces insert_audit_events: keeps events, rejects those of POISON_USER."""

    def __init__(self) -> None:
        self.inserted: list[AuditEvent] = []
        self.unreachable = False

    def insert(self, database: Database, events: Sequence[AuditEvent], source: str) -> int:
        if self.unreachable:
            raise OperationalError("INSERT", {}, Exception("connection refused"))
        if any(event.user_id == POISON_USER for event in events):
            raise DataError("INSERT", {}, Exception("invalid byte sequence"))
        self.inserted.extend(events)
        return len(events)


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> FakeIndex:
    fake = FakeIndex()
    monkeypatch.setattr(audit, "insert_audit_events", fake.insert)
    return fake


def query_event(user_id: str) -> AuditEvent:
    return AuditEvent(AuditEventType.QUERY, Outcome.SUCCESS, user_id, request="GET /studies")


def trail_in(tmp_path: Path) -> AuditTrail:
    return AuditTrail(Database(f"sqlite:///{tmp_path / 'index.sqlite'}"), tmp_path / "j", "T")


def test_rejected_event_does_not_block(tmp_path: Path, index: FakeIndex) -> None:
    trail = trail_in(tmp_path)
    for user_id in ("rad-1", POISON_USER, "rad-2"):
        trail.record(query_event(user_id))
    assert trail.flush() == 2
    assert [event.user_id for event in index.inserted] == ["rad-1", "rad-2"]
    assert trail.flush() == 0
    trail.journal.close()


def test_rejected_event_is_kept_aside(tmp_path: Path, index: FakeIndex) -> None:
    trail = trail_in(tmp_path)
    trail.record(query_event(POISON_USER))
    trail.flush()
    lines = (tmp_path / "j" / REJECTED_FILE).read_text().splitlines()
    assert len(lines) == 1
    assert AuditEvent.from_json(lines[0]).user_id == POISON_USER
    trail.journal.close()


def test_unreachable_database_keeps_events(tmp_path: Path, index: FakeIndex) -> None:
    trail = trail_in(tmp_path)
    trail.record(query_event("rad-1"))
    index.unreachable = True
    assert trail.flush() == 0
    assert not (tmp_path / "j" / REJECTED_FILE).exists()
    index.unreachable = False
    assert trail.flush() == 1
    trail.journal.close()
