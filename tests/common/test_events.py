"""The outbox relay thread publishes committed events to subscribers."""

from __future__ import annotations

import threading

from noctis_common.context import ArchiveContext
from noctis_common.events import Event
from tests.support import make_dataset


def test_relay_thread_delivers_after_commit(context: ArchiveContext) -> None:
    delivered = threading.Event()
    received: list[Event] = []

    def subscriber(event: Event) -> None:
        received.append(event)
        delivered.set()

    context.publisher.subscribe(subscriber)
    context.start()
    path = context.archive.new_spool_path()
    make_dataset().save_as(path, enforce_file_format=True)

    context.archive.store_part10(path)

    assert delivered.wait(timeout=30)
    assert len(received) == 1


def test_failing_subscriber_does_not_block_others(context: ArchiveContext) -> None:
    received: list[Event] = []

    def broken(_event: Event) -> None:
        raise RuntimeError("subscriber bug")

    context.publisher.subscribe(broken)
    context.publisher.subscribe(received.append)
    path = context.archive.new_spool_path()
    make_dataset().save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)

    assert context.relay.relay_once() == 1
    assert len(received) == 1
