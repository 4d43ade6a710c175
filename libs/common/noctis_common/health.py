"""Liveness and readiness of a service: ``/health/live`` and ``/health/ready``.

Liveness only shows that the process serves HTTP. Readiness checks the dependencies a
service needs for its work, each in its own thread. A required check is waited for at
most ``NOCTIS_READINESS_TIMEOUT_S``, which must stay below the orchestrator's probe
timeout. An optional check is never waited for: it runs in the background and the
report shows its last finished result, so a hung optional dependency cannot delay the
response past the probe timeout.

- ``database``: ``SELECT 1`` on the index;
- ``object_store``: the store's ``check()``;
- ``broker``, with ``NOCTIS_EVENTS_BACKEND=kafka`` only: the Kafka publisher's
  ``check()`` when it has one, else a topic list request to the brokers. Without Kafka
  the report leaves the broker out.

A failing *required* dependency makes readiness return 503 with a JSON body that names
it. An *optional* one is reported in the body but keeps the service ready. The broker
is optional for services that store instances: while it is down, events wait in the
outbox and ingest goes on, so taking them out of the load balancer would stop ingest
for nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kafka import KafkaAdminClient

from noctis_common.context import ArchiveContext
from noctis_common.kafka_client import kafka_connection_options

logger = logging.getLogger(__name__)

# Maximum length of the error text of one dependency in a readiness body, in characters.
MAX_ERROR_CHARS = 300


class Dependency(StrEnum):
    """A dependency that readiness can check, named as in the readiness body."""

    DATABASE = "database"
    OBJECT_STORE = "object_store"
    BROKER = "broker"


# Dependencies of the services that store instances. The broker is optional for them
# because its outage only delays events.
STORE_SERVICE_REQUIRED = (Dependency.DATABASE, Dependency.OBJECT_STORE)
STORE_SERVICE_OPTIONAL = (Dependency.BROKER,)


@runtime_checkable
class SupportsCheck(Protocol):
    """A publisher that can test its connection to the broker."""

    def check(self) -> None:
        """Return when the dependency responds; raise when it does not."""


@dataclass(frozen=True)
class DependencyStatus:
    """The outcome of one dependency check."""

    dependency: Dependency
    required: bool
    error: str | None
    # True for an optional check whose first run has not finished yet.
    pending: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.pending


@dataclass(frozen=True)
class ReadinessReport:
    """The outcome of every dependency check of one readiness request."""

    statuses: tuple[DependencyStatus, ...]
    shutting_down: bool = False

    @property
    def failing(self) -> list[str]:
        """Return the names of the required dependencies that failed."""
        return [str(item.dependency) for item in self.statuses if item.required and not item.ok]

    @property
    def ready(self) -> bool:
        return not self.shutting_down and not self.failing

    @property
    def status_code(self) -> int:
        return 200 if self.ready else 503

    def to_json(self) -> dict[str, Any]:
        """Return the readiness body: overall status, failing dependencies, each check."""
        dependencies: dict[str, dict[str, Any]] = {}
        for item in self.statuses:
            status = "ok" if item.ok else "failed"
            if item.pending:
                status = "pending"
            entry: dict[str, Any] = {"status": status, "required": item.required}
            if item.error is not None:
                entry["error"] = item.error
            dependencies[str(item.dependency)] = entry
        status = "ready" if self.ready else "not ready"
        if self.shutting_down:
            status = "shutting down"
        return {"status": status, "failing": self.failing, "dependencies": dependencies}


@dataclass
class _CheckRun:
    """One run of a dependency check; ``done`` is set once ``error`` contains its outcome."""

    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None


class _BoundedCheck:
    """Runs one dependency check in a daemon thread and waits for it at most a timeout.

    A check that outlives its timeout keeps running, and later requests wait for that
    same run instead of starting another, so a hung dependency occupies one thread only.
    ``last_finished`` is the most recent run that has finished, for optional checks.
    """

    def __init__(self, dependency: Dependency, function: Callable[[], None]) -> None:
        self.dependency = dependency
        self.function = function
        self._lock = threading.Lock()
        self._run: _CheckRun | None = None
        self.last_finished: _CheckRun | None = None

    def start(self) -> _CheckRun:
        """Start a run, or return the one still running."""
        with self._lock:
            if self._run is None or self._run.done.is_set():
                run = _CheckRun()
                self._run = run
                threading.Thread(
                    target=self._execute, args=(run,), name=f"ready-{self.dependency}", daemon=True
                ).start()
            return self._run

    def _execute(self, run: _CheckRun) -> None:
        try:
            self.function()
        except Exception as exception:
            run.error = describe_error(exception)
        self.last_finished = run
        run.done.set()

    @staticmethod
    def result(run: _CheckRun, timeout_s: float) -> str | None:
        """Return ``None`` when the run passed, else what failed."""
        if not run.done.wait(timeout_s):
            return f"check timed out after {timeout_s:g} s"
        return run.error


def describe_error(error: BaseException) -> str:
    """Return the error's type and the first line of its message, shortened."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 3] + "..."
    return text


class ReadinessProbe:
    """Checks the dependencies of one service for ``/health/ready``."""

    def __init__(
        self,
        context: ArchiveContext,
        required: Iterable[Dependency],
        optional: Iterable[Dependency] = (),
    ) -> None:
        self.timeout_s = context.settings.readiness_timeout_s
        self.shutting_down = False
        required_set = set(required)
        checked = required_set | set(optional)
        self._checks: list[tuple[_BoundedCheck, bool]] = []
        for dependency in Dependency:
            if dependency not in checked:
                continue
            function = _check_function(context, dependency)
            if function is not None:
                check = _BoundedCheck(dependency, function)
                self._checks.append((check, dependency in required_set))
        self._last_errors: dict[Dependency, str | None] = {}

    def check(self) -> ReadinessReport:
        """Run every check at once and wait for the required ones, each at most ``timeout_s``.

        Optional checks are started (unless one is still running) but not waited for:
        their status is that of their last finished run, or ``pending`` before the first.
        """
        started = [(check, required, check.start()) for check, required in self._checks]
        statuses = []
        for check, required, run in started:
            if required:
                error = check.result(run, self.timeout_s)
                status = DependencyStatus(check.dependency, required, error)
            else:
                status = _last_status(check)
            if not status.pending:
                self._log_change(check.dependency, status.error)
            statuses.append(status)
        return ReadinessReport(tuple(statuses), shutting_down=self.shutting_down)

    def _log_change(self, dependency: Dependency, error: str | None) -> None:
        """Log when a dependency starts or stops failing, not on every probe."""
        previous = self._last_errors.get(dependency)
        self._last_errors[dependency] = error
        if error is not None and previous is None:
            logger.warning("readiness: %s check failed: %s", dependency, error)
        elif error is None and previous is not None:
            logger.info("readiness: %s check passes again", dependency)


def _last_status(check: _BoundedCheck) -> DependencyStatus:
    """Return the status of an optional check from its last finished run."""
    finished = check.last_finished
    if finished is None:
        return DependencyStatus(check.dependency, False, None, pending=True)
    return DependencyStatus(check.dependency, False, finished.error)


def _check_function(context: ArchiveContext, dependency: Dependency) -> Callable[[], None] | None:
    """Return the function that checks ``dependency``, or ``None`` when it is not used."""
    if dependency is Dependency.DATABASE:
        return context.database.check
    if dependency is Dependency.OBJECT_STORE:
        return context.store.check
    publisher: object = context.kafka_publisher
    if publisher is None:
        return None
    if isinstance(publisher, SupportsCheck):
        return publisher.check
    settings = context.settings
    return lambda: check_kafka_brokers(
        kafka_connection_options(settings), settings.readiness_timeout_s
    )


def check_kafka_brokers(connection_options: dict[str, Any], timeout_s: float) -> None:
    """Ask the Kafka brokers for their topic list; raises a kafka-python error on failure."""
    timeout_ms = max(1000, int(timeout_s * 1000))
    admin = KafkaAdminClient(
        **connection_options, request_timeout_ms=timeout_ms, bootstrap_timeout_ms=timeout_ms
    )
    try:
        admin.list_topics()
    finally:
        admin.close()


router = APIRouter(include_in_schema=False)


@router.api_route("/health", methods=["GET", "HEAD"])
def health() -> dict[str, str]:
    """Return ``ok`` while the process serves HTTP (kept for older probes)."""
    return {"status": "ok"}


@router.api_route("/health/live", methods=["GET", "HEAD"])
def health_live() -> dict[str, str]:
    """Return ``alive`` while the process serves HTTP; it checks no dependency."""
    return {"status": "alive"}


@router.api_route("/health/ready", methods=["GET", "HEAD"])
def health_ready(request: Request) -> JSONResponse:
    """Check the service's dependencies; 503 names the required ones that failed."""
    probe: ReadinessProbe = request.app.state.readiness
    report = probe.check()
    return JSONResponse(report.to_json(), status_code=report.status_code)
