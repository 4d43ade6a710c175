"""The event-driven waits of pynetdicom's reactor threads (noctis_ingest_scp.reactors)."""

from __future__ import annotations

import gc
import logging
import queue
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom import dul as dul_module
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from noctis_common.settings import Settings
from noctis_ingest_scp import reactors
from noctis_ingest_scp.associations import AssociationRegistry
from noctis_ingest_scp.reactors import (
    EventDrivenReactors,
    _AssociationWaits,
    _ReactorClock,
    _WakingEvent,
    _WakingQueue,
)
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import write_series

# Generous bounds for a thread to finish or a condition to hold; never a measure.
LIVENESS_S = 30.0


def wait_until(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + LIVENESS_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_in_thread(target: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def unstarted_association() -> Iterator[tuple[Association, socket.socket, socket.socket]]:
    """An acceptor Association whose threads never start, on one end of a socket pair."""
    association = Association(AE(), "acceptor")
    local, remote = socket.socketpair()
    association.dul.socket = SimpleNamespace(socket=local)  # type: ignore[assignment]
    yield association, local, remote
    local.close()
    remote.close()


@dataclass
class InstalledWaits:
    """The waits of an unstarted association, with an idle wait that never ends."""

    association: Association
    waits: _AssociationWaits
    remote: socket.socket


@pytest.fixture
def installed(
    unstarted_association: tuple[Association, socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[InstalledWaits]:
    # An hour: a wait that returns within LIVENESS_S was woken, not timed out.
    monkeypatch.setattr(reactors, "IDLE_WAIT_S", 3600.0)
    association, _local, remote = unstarted_association
    waits = _AssociationWaits(association)
    waits.install()
    yield InstalledWaits(association, waits, remote)
    waits.close()


def assert_returns(wait: Callable[[], None], wake: Callable[[], None] = lambda: None) -> None:
    """Run ``wait`` in a thread, call ``wake``, and check that the thread ends."""
    waiting = run_in_thread(wait)
    wake()
    waiting.join(LIVENESS_S)
    assert not waiting.is_alive()


@pytest.mark.dcmtk
@pytest.mark.parametrize("event_driven", [True, False], ids=["event-driven", "polling"])
def test_series_stored_with_and_without_event_driven_reactors(
    sqlite_settings: Settings, tmp_path: Path, event_driven: bool
) -> None:
    paths = write_series(tmp_path / "series", 5)
    with running_scp(sqlite_settings, dimse_event_driven_reactors=event_driven) as running:
        sent = run_dcmtk("storescu", "127.0.0.1", running.port, *paths)
        echoed = run_dcmtk("echoscu", "127.0.0.1", running.port)

        assert sent.returncode == 0, sent.stdout
        assert echoed.returncode == 0, echoed.stdout
        for path in paths:
            uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            assert running.instance(uid) is not None


def test_incoming_association_gets_waits_until_it_closes(sqlite_scp: RunningSCP) -> None:
    assert isinstance(getattr(dul_module, "time", None), _ReactorClock)
    ae = AE(ae_title="REACTORTEST")
    ae.add_requested_context(Verification)
    client = ae.associate("127.0.0.1", sqlite_scp.port)
    assert client.is_established
    try:
        assert wait_until(lambda: len(sqlite_scp.scp.active_associations) == 1)
        [served] = sqlite_scp.scp.active_associations
        assert callable(getattr(served, "_noctis_idle_wait", None))
        assert callable(getattr(served.dul, "_noctis_idle_wait", None))
        # Outside the Query/Retrieve dispatcher, so that C-MOVE and C-GET count as served.
        assert served._serve_request.__name__ == "serve_and_count"
        # The reactor must wake for each request and the DUL thread for each response.
        for _ in range(3):
            status = client.send_c_echo()
            assert status.Status == 0x0000
    finally:
        client.release()
    assert wait_until(lambda: not sqlite_scp.scp.active_associations)


def test_aborted_association_ends(sqlite_scp: RunningSCP) -> None:
    ae = AE(ae_title="REACTORTEST")
    ae.add_requested_context(Verification)
    client = ae.associate("127.0.0.1", sqlite_scp.port)
    assert client.is_established
    assert wait_until(lambda: len(sqlite_scp.scp.active_associations) == 1)
    client.abort()
    assert wait_until(lambda: not sqlite_scp.scp.active_associations)


def test_unsupported_pynetdicom_keeps_polling(
    sqlite_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(reactors, "supported", lambda: False)
    monkeypatch.setattr(dul_module, "time", time)
    [path] = write_series(tmp_path / "series", 1)
    with caplog.at_level(logging.WARNING), running_scp(sqlite_settings) as running:
        result = run_dcmtk("storescu", "127.0.0.1", running.port, path)

        assert result.returncode == 0, result.stdout
        assert running.instance_count() == 1
    assert getattr(dul_module, "time", None) is time
    assert "keeping its polling reactors" in caplog.text


def test_clock_keeps_the_sleep_of_threads_without_waits() -> None:
    clock = _ReactorClock()
    assert clock.monotonic is time.monotonic
    asked: list[float] = []

    def record(seconds: float) -> None:
        asked.append(seconds)

    worker = threading.Thread(target=lambda: clock.sleep(0.25))
    vars(worker)["_noctis_idle_wait"] = record
    worker.start()
    worker.join(LIVENESS_S)
    plain = run_in_thread(lambda: clock.sleep(0.001))
    plain.join(LIVENESS_S)

    assert asked == [0.25]
    assert not plain.is_alive()


def test_waking_queue_wakes_on_put() -> None:
    earlier: queue.Queue[int] = queue.Queue()
    earlier.put(1)
    wakes: list[None] = []
    waking = _WakingQueue(lambda: wakes.append(None), earlier)

    waking.put(2)

    assert [waking.get_nowait(), waking.get_nowait()] == [1, 2]
    assert len(wakes) == 1


def test_waking_event_wakes_on_set_and_clear() -> None:
    wakes: list[None] = []
    event = _WakingEvent(lambda: wakes.append(None), is_set=True)
    assert event.is_set()
    assert not wakes

    event.clear()
    event.set()

    assert event.is_set()
    assert len(wakes) == 2


def test_dul_wait_ends_when_a_primitive_is_queued(installed: InstalledWaits) -> None:
    queue_primitive = installed.association.dul.to_provider_queue.put

    assert_returns(
        lambda: installed.waits.dul_wait(0.001),
        lambda: queue_primitive(object()),  # type: ignore[arg-type]
    )


def test_dul_wait_ends_when_the_peer_sends(installed: InstalledWaits) -> None:
    assert_returns(
        lambda: installed.waits.dul_wait(0.001), lambda: installed.remote.sendall(b"\x07")
    )


def test_dul_wait_after_close_sleeps_as_requested(installed: InstalledWaits) -> None:
    installed.waits.close()
    installed.waits.wake_dul()  # a late wake-up finds the pair closed and is ignored

    assert_returns(lambda: installed.waits.dul_wait(0.001))


@pytest.mark.parametrize(
    "wake",
    [
        lambda association: association.dimse.msg_queue.put((1, object())),
        lambda association: association.dul.to_user_queue.put(object()),
        lambda association: association._reactor_checkpoint.clear(),
    ],
    ids=["dimse-message", "acse-primitive", "reactor-paused"],
)
def test_association_wait_ends_on_work(
    installed: InstalledWaits, wake: Callable[[Association], None]
) -> None:
    assert_returns(
        lambda: installed.waits.association_wait(0.001), lambda: wake(installed.association)
    )


def test_association_wait_keeps_other_sleeps(installed: InstalledWaits) -> None:
    # pynetdicom's 0.1 ms poll for a reactor to pause, as a C-MOVE sub-operation does.
    assert_returns(lambda: installed.waits.association_wait(0.0001))


def test_association_wait_while_serving_sleeps_as_requested(
    unstarted_association: tuple[Association, socket.socket, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reactors, "IDLE_WAIT_S", 3600.0)
    association, _local, _remote = unstarted_association
    waits = _AssociationWaits(association)

    def handler(*_arguments: object) -> None:
        # A handler's own poll gets the sleep it requested, not the idle wait.
        waits.association_wait(0.001)

    monkeypatch.setattr(association, "_serve_request", handler)
    waits.install()

    assert_returns(lambda: association._serve_request(None, 1))  # type: ignore[arg-type]
    waits.close()


def test_handlers_close_the_wake_up_pair() -> None:
    association = Association(AE(), "acceptor")
    handlers = EventDrivenReactors()
    event = SimpleNamespace(assoc=association)

    handlers.handle_connection_open(event)  # type: ignore[arg-type]
    waits = vars(association)["_noctis_waits"]
    handlers.handle_connection_close(event)  # type: ignore[arg-type]

    assert waits._wake_reader.fileno() == -1
    assert waits._wake_writer.fileno() == -1


def test_association_without_queues_keeps_polling(caplog: pytest.LogCaptureFixture) -> None:
    association = Association(AE(), "acceptor")
    del association.dimse.msg_queue

    with caplog.at_level(logging.WARNING):
        EventDrivenReactors().handle_connection_open(
            SimpleNamespace(assoc=association)  # type: ignore[arg-type]
        )

    assert "_noctis_waits" not in vars(association)
    assert "keep polling" in caplog.text


def test_registry_closes_the_wake_up_pair() -> None:
    association = Association(AE(), "acceptor")
    EventDrivenReactors().handle_connection_open(
        SimpleNamespace(assoc=association)  # type: ignore[arg-type]
    )
    waits = vars(association)["_noctis_waits"]
    registry = AssociationRegistry()
    registry.record(association)

    # What the registry does for an association whose reader thread failed, which
    # pynetdicom ends without a close event.
    registry._finish(association, "ended by a protocol error", "aborted")

    assert waits._wake_reader.fileno() == -1


def test_unclosed_association_is_collected() -> None:
    association = Association(AE(), "acceptor")
    EventDrivenReactors().handle_connection_open(
        SimpleNamespace(assoc=association)  # type: ignore[arg-type]
    )
    waits = vars(association)["_noctis_waits"]
    reader = waits._wake_reader
    del waits
    collected = weakref.ref(association)

    del association
    gc.collect()

    assert collected() is None
    assert reader.fileno() == -1
