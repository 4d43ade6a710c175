"""The Prometheus metrics of a Noctis process.

Every metric lives in prometheus_client's default registry, so ``GET /metrics`` on the
HTTP app and the standalone exporter of ``NOCTIS_METRICS_PORT`` expose the same set.
Names follow the Prometheus conventions: the ``noctis_`` prefix, base units (seconds,
bytes), ``_total`` on counters. docs/metrics.md lists each metric with its labels.

Label values are bounded: DIMSE statuses, outcome words, configured destination AE
titles and HTTP route templates. No label ever carries a UID or a raw URL path.

The two queue depths (outbox, forwarding) are counted from the index on each scrape by
:class:`IndexDepthCollector`, so they are right across processes and restarts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

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

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            database = self._databases[-1] if self._databases else None
        outbox, forward_queue = self._families()
        if database is not None:
            try:
                self._count(database, outbox, forward_queue)
            except Exception:
                logger.exception("counting the outbox and forwarding queue for /metrics failed")
                return
        yield outbox
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
