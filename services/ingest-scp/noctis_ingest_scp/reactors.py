"""Event-driven waits for the two reactor threads of each incoming association.

pynetdicom 3 serves an association with two threads that poll. The DUL reactor reads
the socket and sends queued PDUs, and when it finds nothing to do it sleeps 1 ms and
looks again. The association reactor sleeps 1 ms before each look at the decoded DIMSE
messages. A C-STORE therefore waits up to a millisecond at each hand-over: after the
last PDU of a dataset arrives, before the handler starts, and again before the
response is sent. On one association that made half the time of a bare pynetdicom
SCP's store, and eight idle threads on four associations wake 8,000 times a second.

This module lets those sleeps end as soon as there is work:

- pynetdicom's ``dul`` and ``association`` modules get a clock whose ``sleep`` calls the
  wait of the calling thread. Threads without one (requestor associations, any
  other caller) sleep as before.
- The DUL thread of an incoming association waits in ``select`` on its socket and on a
  wake-up socket pair, which is written whenever a primitive is queued for it.
- The association thread waits on an :class:`threading.Event` set whenever a DIMSE
  message or an ACSE primitive is queued for it, and when another thread pauses,
  resumes or stops the reactor.

Both waits end after :data:`IDLE_WAIT_S` at the latest, so the timers that the
reactors check on each turn (ARTIM, the network timeout) fire at most that much late.
In the association thread only the reactor's own 1 ms sleep between requests waits for
a wake-up. Every other sleep there (a handler's, or pynetdicom's 0.1 ms polls while a
C-MOVE sends on another association) keeps its length. The wake-up pair is closed on
the close event, or when the association registry finishes an association whose
reader thread failed without one.

The waits rely on pynetdicom's internal names (the queues, ``_serve_request``,
``_reactor_checkpoint``). :func:`supported` checks the module and class names, and each
new association is checked for the queues and the event before its waits go in.
Without them the gateway logs a warning and keeps pynetdicom's polling, which is
slower but correct.
``NOCTIS_DIMSE_EVENT_DRIVEN_REACTORS=false`` keeps the polling too.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
import time
import types
import weakref
from collections.abc import Callable
from typing import Any

import pynetdicom
from pynetdicom import association as association_module
from pynetdicom import dul as dul_module
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.events import Event

logger = logging.getLogger(__name__)

# Maximum wait of a reactor without a wake-up, after which it checks its timers again.
IDLE_WAIT_S = 0.02
# The sleep of pynetdicom's association reactor between two looks for work. Only that
# sleep waits for a wake-up: the association thread sleeps for other reasons too, such
# as 0.1 ms polls for a reactor to pause while a C-MOVE sends on another association.
ASSOCIATION_REACTOR_POLL_S = 0.001

_WAIT_ATTRIBUTE = "_noctis_idle_wait"
# Kept on the association itself, so that an association whose reader thread dies
# without a close event is not kept alive by a table of waits.
_WAITS_ATTRIBUTE = "_noctis_waits"


class _ReactorClock:
    """A stand-in for the ``time`` module inside pynetdicom's ``dul`` and ``association``."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        wait: Callable[[float], None] | None = getattr(
            threading.current_thread(), _WAIT_ATTRIBUTE, None
        )
        if wait is None:
            time.sleep(seconds)
        else:
            wait(seconds)


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls ``wake`` after each put."""

    def __init__(self, wake: Callable[[], None], items: queue.Queue[Any]) -> None:
        super().__init__()
        self._wake: Callable[[], None] = lambda: None
        while True:
            try:
                self.put_nowait(items.get_nowait())
            except queue.Empty:
                break
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self._wake()


class _WakingEvent(threading.Event):
    """A :class:`threading.Event` that calls ``wake`` after each set and clear."""

    def __init__(self, wake: Callable[[], None], is_set: bool) -> None:
        super().__init__()
        self._wake = wake
        if is_set:
            super().set()

    def set(self) -> None:
        super().set()
        self._wake()

    def clear(self) -> None:
        super().clear()
        self._wake()


def supported() -> bool:
    """Return whether this pynetdicom has the internals that the waits replace."""
    return (
        isinstance(getattr(dul_module, "time", None), types.ModuleType | _ReactorClock)
        and isinstance(getattr(association_module, "time", None), types.ModuleType | _ReactorClock)
        and all(
            hasattr(DULServiceProvider, name)
            for name in ("run_reactor", "kill_dul", "_process_recv_primitive")
        )
        and all(hasattr(Association, name) for name in ("_run_reactor", "_serve_request"))
    )


def install_clock() -> bool:
    """Give pynetdicom's reactor modules the waking clock; return ``False`` if unsupported.

    Process-wide and idempotent. Associations without waits of their own keep
    sleeping for the time pynetdicom requests.
    """
    if not supported():
        logger.warning(
            "pynetdicom %s lacks the internal names that the event-driven DIMSE reactors "
            "replace; keeping its polling reactors, which are slower",
            pynetdicom.__version__,
        )
        return False
    # The modules imported ``time`` for themselves; their sleeps look it up there.
    setattr(dul_module, "time", _ReactorClock())  # noqa: B010
    setattr(association_module, "time", _ReactorClock())  # noqa: B010
    return True


class _AssociationWaits:
    """The wake-ups and waits of one incoming association's two reactor threads."""

    def __init__(self, association: Association) -> None:
        self.association = association
        self.dul = association.dul
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_reader.setblocking(False)
        self._wake_writer.setblocking(False)
        self._association_event = threading.Event()
        self._serving = 0
        self._closed = False

    def install(self) -> None:
        association, dul = self.association, self.dul
        dul.to_provider_queue = _WakingQueue(self.wake_dul, dul.to_provider_queue)
        dul.to_user_queue = _WakingQueue(self._association_event.set, dul.to_user_queue)
        association.dimse.msg_queue = _WakingQueue(
            self._association_event.set, association.dimse.msg_queue
        )
        association._reactor_checkpoint = _WakingEvent(
            self._association_event.set, association._reactor_checkpoint.is_set()
        )
        kill_dul = dul.kill_dul

        def kill_and_wake() -> None:
            kill_dul()
            self.wake_dul()

        dul.kill_dul = kill_and_wake  # type: ignore[method-assign]
        serve_request = association._serve_request

        def serve_and_count(*args: Any, **kwargs: Any) -> None:
            self._serving += 1
            try:
                serve_request(*args, **kwargs)
            finally:
                self._serving -= 1

        association._serve_request = serve_and_count  # type: ignore[method-assign]
        setattr(dul, _WAIT_ATTRIBUTE, self.dul_wait)
        setattr(association, _WAIT_ATTRIBUTE, self.association_wait)
        # A reader thread that dies without closing its socket leaves no close event.
        weakref.finalize(association, _close_pair, self._wake_reader, self._wake_writer)

    def wake_dul(self) -> None:
        # Closed, or full: either way the DUL thread wakes or has ended.
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"\0")

    def dul_wait(self, seconds: float) -> None:
        """Wait until the socket is readable, a primitive is queued, or the idle time ends."""
        transport = getattr(self.dul.socket, "socket", None)
        if transport is None or self._closed:
            time.sleep(seconds)
            return
        if isinstance(transport, ssl.SSLSocket) and transport.pending():
            return  # decrypted bytes wait in the TLS layer, which select cannot see
        try:
            select.select([transport, self._wake_reader], [], [], IDLE_WAIT_S)
            while self._wake_reader.recv(4096):
                pass
        except BlockingIOError:
            pass  # every wake-up byte read
        except (OSError, ValueError):
            time.sleep(seconds)  # the socket closed meanwhile

    def association_wait(self, seconds: float) -> None:
        """Wait until a message is queued or the reactor is paused or stopped."""
        if self._serving or seconds != ASSOCIATION_REACTOR_POLL_S:
            # A handler, or pynetdicom serving a request for it, polls for a condition
            # of its own, so it keeps the sleep it requested.
            time.sleep(seconds)
            return
        self._association_event.wait(IDLE_WAIT_S)
        self._association_event.clear()

    def close(self) -> None:
        self._closed = True
        _close_pair(self._wake_reader, self._wake_writer)


def _close_pair(*sockets: socket.socket) -> None:
    for item in sockets:
        item.close()


class EventDrivenReactors:
    """EVT_CONN_OPEN and EVT_CONN_CLOSE handlers that give each association its waits."""

    def handle_connection_open(self, event: Event) -> None:
        if not _has_instance_internals(event.assoc):
            logger.warning(
                "pynetdicom %s lacks the queues or the reactor event of an association; "
                "its reactors keep polling",
                pynetdicom.__version__,
            )
            return
        waits = _AssociationWaits(event.assoc)
        waits.install()
        setattr(event.assoc, _WAITS_ATTRIBUTE, waits)

    def handle_connection_close(self, event: Event) -> None:
        close_waits(event.assoc)


def _has_instance_internals(association: Association) -> bool:
    """Return whether ``association`` has the queues and the event that the waits wrap."""
    dul = getattr(association, "dul", None)
    dimse = getattr(association, "dimse", None)
    queues = (
        getattr(dul, "to_provider_queue", None),
        getattr(dul, "to_user_queue", None),
        getattr(dimse, "msg_queue", None),
    )
    return all(isinstance(item, queue.Queue) for item in queues) and isinstance(
        getattr(association, "_reactor_checkpoint", None), threading.Event
    )


def close_waits(association: Association) -> None:
    """Close the wake-up pair of ``association``, if it has one; the threads then poll.

    Called on the close event and by the association registry when it finishes an
    association, because pynetdicom sends no close event when the reader thread fails.
    """
    waits = getattr(association, _WAITS_ATTRIBUTE, None)
    if isinstance(waits, _AssociationWaits):
        waits.close()
