"""The Prometheus metrics of a Noctis process.

Every metric lives in prometheus_client's default registry, so ``GET /metrics`` on the
HTTP app and the standalone exporter of ``NOCTIS_METRICS_PORT`` expose the same set.
Names follow the Prometheus conventions: the ``noctis_`` prefix, base units (seconds,
bytes), ``_total`` on counters. docs/metrics.md lists each metric with its labels.

Label values are bounded: DIMSE statuses, outcome words, configured destination AE
titles and HTTP route templates. No label ever carries a UID or a raw URL path.

The two queue depths (outbox, forwarding) and the age of the oldest unpublished event
are read from the index on each scrape by :class:`IndexDepthCollector`, so they are
right across processes and restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, event, func, select
from sqlalchemy.engine import ExceptionContext

from noctis_common.db import Database
from noctis_common.db.models import ForwardJob, OutboxEvent

logger = logging.getLogger(__name__)

# Seconds. Small C-STORE and HTTP requests take milliseconds; large objects and
# whole-study retrievals take seconds to minutes.
DURATION_BUCKETS_S = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)

# -- DIMSE --------------------------------------------------------------------------------

DIMSE_ASSOCIATIONS = Counter(
    "noctis_dimse_associations_total",
    "Associations the DIMSE gateway accepted or rejected, by how they ended.",
    ["outcome"],
)
DIMSE_ACTIVE_ASSOCIATIONS = Gauge(
    "noctis_dimse_active_associations",
    "Connections the DIMSE gateway is serving now, including associations in negotiation.",
)
DIMSE_STORE_REQUESTS = Counter(
    "noctis_dimse_store_requests_total",
    "C-STORE requests the DIMSE gateway answered, by outcome and response status.",
    ["outcome", "status"],
)
DIMSE_STORED_BYTES = Counter(
    "noctis_dimse_stored_bytes_total",
    "Bytes of Part 10 files (File Meta Information and dataset) newly stored by C-STORE.",
)
DIMSE_STORE_DURATION = Histogram(
    "noctis_dimse_store_duration_seconds",
    "Time from a received C-STORE dataset to its response status, spent storing it.",
    buckets=DURATION_BUCKETS_S,
)
DIMSE_QUERY_RETRIEVE_REQUESTS = Counter(
    "noctis_dimse_query_retrieve_requests_total",
    "C-FIND, C-MOVE and C-GET requests by command and final response status.",
    ["command", "status"],
)

# -- Store pipeline (C-STORE and STOW-RS), object store and index -------------------------

STORE_INSTANCES = Counter(
    "noctis_store_instances_total",
    "Instances that went through the store pipeline, from C-STORE or STOW-RS, by outcome.",
    ["outcome"],
)
STORED_BYTES = Counter(
    "noctis_stored_bytes_total",
    "Bytes of Part 10 files written to the object store for newly stored instances.",
)
STORE_DURATION = Histogram(
    "noctis_store_duration_seconds",
    "Time the store pipeline spent on one instance: parse, spool, object store, index.",
    ["outcome"],
    buckets=DURATION_BUCKETS_S,
)
STORAGE_ERRORS = Counter(
    "noctis_storage_errors_total",
    "Object store operations that failed, by operation: write, read or delete.",
    ["operation"],
)
DATABASE_ERRORS = Counter(
    "noctis_database_errors_total",
    "Statements the index database failed, by the DBAPI error class, retried ones included.",
    ["error"],
)


def count_database_errors(engine: Engine) -> None:
    """Count every error that ``engine``'s statements raise in :data:`DATABASE_ERRORS`.

    The label is the DB-API exception class (``IntegrityError``, ``OperationalError``,
    ...), a bounded set. Integrity errors of concurrent stores of one new study are
    expected and retried, and so are counted too.
    """

    @event.listens_for(engine, "handle_error")
    def _count(context: ExceptionContext) -> None:
        error = context.sqlalchemy_exception or context.original_exception
        DATABASE_ERRORS.labels(error=type(error).__name__).inc()


# -- Forwarding ---------------------------------------------------------------------------

FORWARDED_INSTANCES = Counter(
    "noctis_forward_instances_total",
    "Instances a forwarding destination acknowledged, by destination AE title.",
    ["destination"],
)
FORWARD_FAILED_ATTEMPTS = Counter(
    "noctis_forward_failed_attempts_total",
    "Forwarding attempts that failed, including the last attempt of a job given up.",
    ["destination"],
)
FORWARD_JOBS_GIVEN_UP = Counter(
    "noctis_forward_jobs_given_up_total",
    "Forward jobs marked failed for good, after the last attempt or a permanent error.",
    ["destination"],
)

# -- Outbox -------------------------------------------------------------------------------

OUTBOX_EVENTS_PUBLISHED = Counter(
    "noctis_outbox_events_published_total",
    "Outbox events this process handed to its publisher and marked published.",
)
OUTBOX_PUBLISH_ERRORS = Counter(
    "noctis_outbox_publish_errors_total",
    "Outbox relay batches whose publication or marking failed; each one is retried.",
)

# -- Event consumers ----------------------------------------------------------------------

CONSUMER_EVENTS = Counter(
    "noctis_consumer_events_total",
    "Kafka records an event consumer finished, by consumer group and outcome.",
    ["group", "outcome"],
)
CONSUMER_HANDLER_ERRORS = Counter(
    "noctis_consumer_handler_errors_total",
    "Attempts to handle an event that failed (handler or index error), the last included.",
    ["group"],
)
CONSUMER_LAG = Gauge(
    "noctis_consumer_lag_records",
    "Records in the partitions assigned to this consumer not yet consumed, by topic.",
    ["group", "topic"],
)
CONSUMER_HANDLE_DURATION = Histogram(
    "noctis_consumer_handle_duration_seconds",
    "Time per record from its parsing to the commit of its offset, retry waits included.",
    ["group"],
    buckets=DURATION_BUCKETS_S,
)

# -- HTTP ---------------------------------------------------------------------------------

HTTP_REQUESTS = Counter(
    "noctis_http_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_REQUEST_DURATION = Histogram(
    "noctis_http_request_duration_seconds",
    "Time from an HTTP request's arrival to the end of its response body.",
    ["method", "route", "status"],
    buckets=DURATION_BUCKETS_S,
)


def status_label(status: int) -> str:
    """Return a DIMSE status as the ``status`` label value, for example ``0xA700``."""
    return f"0x{status:04X}"


class IndexDepthCollector(Collector):
    """Counts unpublished outbox events and forward jobs in the index on each scrape.

    One collector serves the whole process. It reads the database of the archive
    context opened last and not yet closed. Processes normally open exactly one.
    A failed count is logged and left out of the scrape; the scrape itself succeeds.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._databases: list[Database] = []

    def track(self, database: Database) -> None:
        with self._lock:
            self._databases.append(database)

    def untrack(self, database: Database) -> None:
        with self._lock:
            if database in self._databases:
                self._databases.remove(database)

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Describing without collecting keeps registration from querying the index.
        yield from self._families()
        yield self._event_age_family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            database = self._databases[-1] if self._databases else None
        outbox, forward_queue = self._families()
        oldest_event_age = self._event_age_family()
        if database is not None:
            try:
                self._count(database, outbox, forward_queue)
                self._measure_event_age(database, oldest_event_age)
            except Exception:
                logger.exception("counting the outbox and forwarding queue for /metrics failed")
                return
        yield outbox
        yield oldest_event_age
        yield forward_queue

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        outbox = GaugeMetricFamily(
            "noctis_outbox_pending_events",
            "Outbox events written to the index and not yet published.",
        )
        forward_queue = GaugeMetricFamily(
            "noctis_forward_queue_jobs",
            "Forward jobs in the index, by status: pending (waiting or retrying) or failed.",
            labels=["status"],
        )
        return outbox, forward_queue

    @staticmethod
    def _event_age_family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "noctis_outbox_oldest_pending_age_seconds",
            "Age of the oldest outbox event not yet published (the event lag); 0 when none.",
        )

    @staticmethod
    def _measure_event_age(database: Database, oldest_event_age: GaugeMetricFamily) -> None:
        with database.read_session() as session:
            oldest = session.scalar(
                select(func.min(OutboxEvent.created_at)).where(OutboxEvent.published_at.is_(None))
            )
        age_s = 0.0
        if oldest is not None:
            # SQLite returns naive datetimes; the index stores UTC.
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            age_s = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        oldest_event_age.add_metric([], age_s)

    @staticmethod
    def _count(
        database: Database, outbox: GaugeMetricFamily, forward_queue: GaugeMetricFamily
    ) -> None:
        with database.read_session() as session:
            pending_events = session.scalar(
                select(func.count())
                .select_from(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
            )
            rows = session.execute(
                select(ForwardJob.status, func.count()).group_by(ForwardJob.status)
            )
            jobs_by_status = {str(status): int(count) for status, count in rows}
        outbox.add_metric([], float(pending_events or 0))
        for status in ("pending", "failed"):
            forward_queue.add_metric([status], float(jobs_by_status.get(status, 0)))


INDEX_DEPTHS = IndexDepthCollector()
REGISTRY.register(INDEX_DEPTHS)
