"""Audit records of stores and deletes reach the disk before the acknowledgement."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from noctis_common.audit import AuditEvent, AuditEventType, AuditTrail, Outcome
from noctis_common.audit_http import AuditMiddleware
from noctis_common.audit_journal import AuditJournal
from noctis_common.auth import anonymous_principal
from noctis_common.db import Database
from noctis_common.roles import Scope as TokenScope

WRITERS = 8


class SyncCounter:
    """Replaces os.fdatasync: counts calls, each taking ``delay_s``, then syncs for real."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls = 0
        self._real = os.fdatasync

    def __call__(self, descriptor: int) -> None:
        self.calls += 1
        time.sleep(self.delay_s)
        self._real(descriptor)


@pytest.fixture
def sync_counter(monkeypatch: pytest.MonkeyPatch) -> SyncCounter:
    counter = SyncCounter()
    monkeypatch.setattr(os, "fdatasync", counter)
    return counter


def event(event_type: AuditEventType) -> AuditEvent:
    return AuditEvent(event_type, Outcome.SUCCESS, "MODALITY", service="dimse")


def test_durable_append_syncs(tmp_path: Path, sync_counter: SyncCounter) -> None:
    journal = AuditJournal(tmp_path)
    journal.append("{}", durable=True)
    assert sync_counter.calls == 1
    journal.close()


def test_plain_append_does_not_sync(tmp_path: Path, sync_counter: SyncCounter) -> None:
    journal = AuditJournal(tmp_path)
    journal.append("{}")
    assert sync_counter.calls == 0
    journal.close()


def test_fsync_off_never_syncs(tmp_path: Path, sync_counter: SyncCounter) -> None:
    journal = AuditJournal(tmp_path, fsync=False)
    journal.append("{}", durable=True)
    journal.rotate()
    assert sync_counter.calls == 0
    journal.close()


def test_rotate_syncs_the_segment(tmp_path: Path, sync_counter: SyncCounter) -> None:
    journal = AuditJournal(tmp_path)
    journal.append("{}")
    journal.rotate()
    assert sync_counter.calls == 1
    journal.close()


def test_concurrent_appends_share_syncs(tmp_path: Path, sync_counter: SyncCounter) -> None:
    sync_counter.delay_s = 0.05
    journal = AuditJournal(tmp_path)
    start = threading.Barrier(WRITERS)

    def write() -> None:
        start.wait()
        journal.append("{}", durable=True)

    threads = [threading.Thread(target=write) for _ in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    segment = journal.rotate()
    assert segment is not None
    assert len(segment.read_lines()) == WRITERS
    # One sync for the first writer, one or two for those that wrote during it, one
    # by rotate(): far fewer than one per line.
    assert sync_counter.calls < WRITERS
    segment.discard()


@pytest.mark.parametrize(
    ("event_type", "expected_syncs"),
    [
        (AuditEventType.STORE, 1),
        (AuditEventType.DELETE, 1),
        (AuditEventType.QUERY, 0),
        (AuditEventType.RETRIEVE, 0),
        (AuditEventType.LOGIN, 0),
    ],
)
def test_trail_syncs_changes_only(
    tmp_path: Path, sync_counter: SyncCounter, event_type: AuditEventType, expected_syncs: int
) -> None:
    trail = AuditTrail(Database(f"sqlite:///{tmp_path / 'index.sqlite'}"), tmp_path, "TEST")
    trail.record(event(event_type))
    assert sync_counter.calls == expected_syncs
    trail.journal.close()


class RecordingTrail:
    """An audit trail that notes each record in the shared ``steps`` list."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    def record(self, event: AuditEvent, *, durable: bool | None = None) -> None:
        self.steps.append(f"record {event.event_type.value} durable={durable}")


def protected_app(scope_name: TokenScope, status_code: int = 200) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        scope["state"]["required_scope"] = scope_name
        scope["state"]["principal"] = anonymous_principal("127.0.0.1")
        await send({"type": "http.response.start", "status": status_code, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


@pytest.mark.parametrize(
    ("scope_name", "status_code", "expected"),
    [
        (
            TokenScope.STORE,
            200,
            ["record store durable=True", "http.response.start", "http.response.body"],
        ),
        (
            TokenScope.STORE,
            202,
            ["record store durable=True", "http.response.start", "http.response.body"],
        ),
        (
            TokenScope.STORE,
            403,
            ["http.response.start", "http.response.body", "record store durable=False"],
        ),
        (
            TokenScope.DELETE,
            204,
            ["record delete durable=True", "http.response.start", "http.response.body"],
        ),
        (
            TokenScope.SEARCH,
            200,
            ["http.response.start", "http.response.body", "record query durable=False"],
        ),
    ],
)
def test_store_record_precedes_response(
    scope_name: TokenScope, status_code: int, expected: list[str]
) -> None:
    steps: list[str] = []
    middleware = AuditMiddleware(
        protected_app(scope_name, status_code), lambda: RecordingTrail(steps)
    )

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        steps.append(message["type"])

    scope: Scope = {
        "type": "http",
        "method": "POST",
        "path": "/dicom-web/studies",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 4711),
    }
    asyncio.run(middleware(scope, receive, send))
    assert steps == expected
