"""The benchmark run: ingest, reads, memory and the QIDO scale, targets in rotating order."""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydicom import dcmread

from bench.corpus import Corpus, CorpusStudy, generate_long_ingest_corpus
from bench.ingest import IngestFailedError, measure_ingest, send_c_store, stored_count
from bench.peers import (
    BarePynetdicom,
    NoctisArchive,
    NoctisQidoServices,
    NoctisScaleOut,
    Orthanc,
    PostgresServer,
    Storescp,
    Target,
)
from bench.populate import PopulatedIndex, populate_index
from bench.retrieval import (
    list_requests,
    measure_requests,
    measure_throughput,
    read_requests,
    study_list_requests,
)
from noctis_common.db import Database

logger = logging.getLogger(__name__)

MEMORY_SAMPLE_INTERVAL_S = 0.5
# The long-ingest memory measure fits its growth line to the samples taken after this
# share of the send's duration, because the samples before it are warm-up.
WARM_UP_SHARE = 0.5
LONG_INGEST_ASSOCIATIONS = 4
# The indexes of migration 0009, dropped for the "before" row of the QIDO scale table.
QUERY_INDEXES = (
    "ix_study_date_time_order",
    "ix_study_patient_name_pattern",
    "ix_series_study_order",
)


@dataclass(frozen=True)
class RunOptions:
    """The measures of one run and how often each is repeated."""

    repetitions: int
    requests_per_measure: int
    index_sizes_sqlite: tuple[int, ...]
    index_sizes_postgres: tuple[int, ...]
    scaleout_gateways: tuple[int, ...]
    # QIDO-RS throughput against the number of noctis_qido processes, on PostgreSQL.
    query_services: tuple[int, ...] = (1, 2, 4)
    query_index_size: int = 100_000
    query_clients: int = 8
    query_seconds: float = 10.0
    # The long ingest that watches memory growth: MR slices of about 130 KB each, sent
    # once per repetition to a fresh Noctis and a fresh durable Orthanc.
    memory_ingest_instances: int = 10_000
    memory_repetitions: int = 1
    # python -m bench --baseline REVISION: the ingest measures add the target
    # noctis-baseline, running the Noctis packages of that revision from this folder.
    baseline_revision: str | None = None
    baseline_packages: str | None = None


def rotated(items: list[Any], repetition: int) -> list[Any]:
    """Return ``items`` starting at position ``repetition``, so each goes first in turn."""
    shift = repetition % len(items)
    return items[shift:] + items[:shift]


class BenchmarkRun:
    """Runs every measure in ``work_dir`` and collects the result rows."""

    def __init__(self, work_dir: Path, corpus: Corpus, options: RunOptions) -> None:
        self.work_dir = work_dir
        self.corpus = corpus
        self.options = options
        self.postgres = PostgresServer()
        self.ingest_rows: list[dict[str, object]] = []
        self.read_rows: list[dict[str, object]] = []
        self.qido_scale_rows: list[dict[str, object]] = []
        self.memory_rows: list[dict[str, object]] = []
        self.long_ingest_memory: dict[str, object] | None = None
        self.query_process_rows: list[dict[str, object]] = []
        self._run_number = 0
        self._populated: PopulatedIndex | None = None

    def run_query_processes(self) -> None:
        """Run only :meth:`measure_query_processes`, with its own PostgreSQL server."""
        self.postgres.start()
        try:
            self.measure_query_processes()
        finally:
            self.postgres.stop()

    def run(self) -> None:
        self.postgres.start()
        try:
            self.measure_ingest()
            self.measure_reads()
            self.long_ingest_memory = measure_long_ingest_memory(
                self.work_dir / "long-ingest", self.options
            )
            self.measure_qido_scale()
            self.measure_query_processes()
        finally:
            self.postgres.stop()

    # -- ingest ------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        self._run_number += 1
        return self.work_dir / "targets" / f"{self._run_number:03d}-{name}"

    def _dimse_targets(self, associations: int) -> list[Callable[[], Target]]:
        factories: list[Callable[[], Target]] = [
            lambda: Storescp("storescp", self._folder("storescp")),
            lambda: BarePynetdicom("pynetdicom", self._folder("pynetdicom")),
            lambda: BarePynetdicom(
                "pynetdicom-events", self._folder("pynetdicom-events"), event_driven=True
            ),
            lambda: Orthanc("orthanc", self._folder("orthanc")),
            lambda: Orthanc("orthanc-fast", self._folder("orthanc-fast"), fast=True),
            lambda: NoctisArchive("noctis", self._folder("noctis")),
            *self._baseline_targets(),
        ]
        if associations > 1:
            for gateways in self.options.scaleout_gateways:
                factories.append(self._scaleout_factory(gateways))
        return factories

    def _scaleout_factory(self, gateways: int) -> Callable[[], Target]:
        def create() -> Target:
            name = f"noctis-scaleout-{gateways}"
            database_url = self.postgres.create_database(f"ingest_{self._run_number + 1}")
            return NoctisScaleOut(
                name,
                self._folder(name),
                database_url=database_url,
                gateways=gateways,
                postgres_pid=self.postgres.pid,
            )

        return create

    def _stow_targets(self) -> list[Callable[[], Target]]:
        return [
            lambda: Orthanc("orthanc", self._folder("orthanc")),
            lambda: NoctisArchive("noctis", self._folder("noctis")),
            *self._baseline_targets(),
        ]

    def _baseline_targets(self) -> list[Callable[[], Target]]:
        """Return the noctis-baseline target when the run has a baseline revision."""
        packages = self.options.baseline_packages
        if packages is None:
            return []
        # The baseline's packages come first on the path, ahead of the run's copy.
        path = os.pathsep.join(filter(None, [packages, os.environ.get("PYTHONPATH")]))
        return [
            lambda: NoctisArchive(
                "noctis-baseline",
                self._folder("noctis-baseline"),
                extra_environment={"PYTHONPATH": path},
            )
        ]

    def measure_ingest(self) -> None:
        files = self.corpus.ingest
        for repetition in range(self.options.repetitions):
            for protocol, clients in (
                ("C-STORE", 1),
                ("C-STORE", 4),
                ("STOW-RS", 1),
                ("STOW-RS", 4),
            ):
                factories = (
                    self._dimse_targets(clients) if protocol == "C-STORE" else self._stow_targets()
                )
                for factory in rotated(factories, repetition):
                    target = factory()
                    target.start()
                    try:
                        result = measure_ingest(target, files, protocol, clients, repetition)
                    finally:
                        target.stop()
                        shutil.rmtree(target.work_dir, ignore_errors=True)
                        # Write back what this target left in the page cache now, so
                        # that the next target's measure does not pay for it.
                        os.sync()
                    self.ingest_rows.append(result.as_json())

    # -- reads -------------------------------------------------------------------------

    def measure_reads(self) -> None:
        """Load the read corpus into Orthanc and Noctis once, then time every read request."""
        targets: list[Target] = [
            Orthanc("orthanc", self._folder("orthanc-reads"), fast=True),
            NoctisArchive("noctis", self._folder("noctis-reads")),
        ]
        requests = read_requests(self.corpus, first_sop_instance_uid)
        try:
            for target in targets:
                target.start()
                self.memory_rows.append(self._load_watching_memory(target))
            for repetition in range(self.options.repetitions):
                for target in rotated(targets, repetition):
                    assert target.dicomweb_url is not None
                    results = measure_requests(
                        target.name,
                        target.dicomweb_url,
                        requests,
                        count=self.options.requests_per_measure,
                        repetition=repetition,
                    )
                    self.read_rows += [result.as_json() for result in results]
        finally:
            for target in targets:
                target.stop()
                shutil.rmtree(target.work_dir, ignore_errors=True)

    def _load_watching_memory(self, target: Target) -> dict[str, object]:
        """Send the read corpus to ``target`` while sampling its RSS twice a second."""
        trace = send_watching_memory(target, self.corpus.loaded_files)
        samples = [rss for _seconds, rss in trace.samples]
        quarters = [samples[min(len(samples) - 1, len(samples) * part // 4)] for part in (1, 2, 3)]
        return {
            "target": target.name,
            "instances": len(self.corpus.loaded_files),
            "seconds": round(trace.seconds, 1),
            "rss_mb_before": round(trace.rss_before / 1e6, 1),
            "rss_mb_at_quarters": [round(value / 1e6, 1) for value in quarters],
            "rss_mb_after": round(trace.rss_after / 1e6, 1),
            "peak_rss_mb": round(target.sample().peak_rss_bytes / 1e6, 1),
        }

    # -- QIDO at index sizes -------------------------------------------------------------

    def measure_qido_scale(self) -> None:
        for size in self.options.index_sizes_sqlite:
            folder = self._folder(f"sqlite-{size}")
            url = f"sqlite:///{folder / 'data' / 'index.sqlite'}"
            database = Database(url)
            database.upgrade()
            self._measure_index(folder, "SQLite", url, database, size)
        for size in self.options.index_sizes_postgres:
            folder = self._folder(f"postgres-{size}")
            url = self.postgres.create_database(f"qido_{size}")
            database = Database(url)
            self._measure_index(folder, "PostgreSQL", url, database, size)
            if size == max(self.options.index_sizes_postgres):
                self._drop_query_indexes(database)
                self._measure_index(
                    folder,
                    "PostgreSQL",
                    url,
                    database,
                    size,
                    populate=False,
                    variant="without 0009",
                )
            database.dispose()

    def _measure_index(
        self,
        folder: Path,
        database_name: str,
        url: str,
        database: Database,
        size: int,
        *,
        populate: bool = True,
        variant: str = "",
    ) -> None:
        if populate or self._populated is None:
            self._populated = populate_index(database, size)
        populated = self._populated
        requests = study_list_requests(
            populated.patient_name, populated.study_date, populated.accession_number
        )
        requests += list_requests(populated.study_instance_uid, populated.series_instance_uid)
        # SQLite's own folder is data_dir: NoctisArchive finds index.sqlite there.
        target = NoctisArchive(
            "noctis",
            folder,
            database_url=None if database_name == "SQLite" else url,
        )
        target.start()
        try:
            assert target.dicomweb_url is not None
            results = measure_requests(
                "noctis",
                target.dicomweb_url,
                requests,
                count=self.options.requests_per_measure,
                repetition=0,
            )
        finally:
            target.stop()
        for result in results:
            row = result.as_json()
            row.update(
                {
                    "database": database_name,
                    "instances": populated.instances,
                    "studies": populated.studies,
                    "populate_s": round(populated.seconds, 1),
                    "variant": variant,
                }
            )
            self.qido_scale_rows.append(row)
        if database_name == "SQLite":
            database.dispose()
            shutil.rmtree(folder, ignore_errors=True)

    def measure_query_processes(self) -> None:
        """Measure study-list throughput of 1, 2 and 4 QIDO-RS processes over one index."""
        url = self.postgres.create_database("query_processes")
        database = Database(url)
        try:
            populated = populate_index(database, self.options.query_index_size)
        finally:
            database.dispose()
        request = study_list_requests(
            populated.patient_name, populated.study_date, populated.accession_number
        )[0]
        for repetition in range(self.options.repetitions):
            for services in rotated(list(self.options.query_services), repetition):
                target = NoctisQidoServices(
                    f"noctis-qido-{services}",
                    self._folder(f"qido-{services}"),
                    database_url=url,
                    services=services,
                    cpu_only_pids=[self.postgres.pid],
                )
                target.start()
                try:
                    before = target.sample()
                    responses, seconds = measure_throughput(
                        target.dicomweb_urls,
                        request,
                        clients=self.options.query_clients,
                        seconds=self.options.query_seconds,
                    )
                    after = target.sample()
                finally:
                    target.stop()
                    shutil.rmtree(target.work_dir, ignore_errors=True)
                per_second = responses / seconds
                logger.info("%d QIDO-RS processes: %.1f study lists/s", services, per_second)
                self.query_process_rows.append(
                    {
                        "processes": services,
                        "repetition": repetition,
                        "request": request.name,
                        "instances": populated.instances,
                        "clients": self.options.query_clients,
                        "responses_per_s": round(per_second, 1),
                        "cpu_ms_per_response": round(
                            (after.cpu_s - before.cpu_s) * 1000 / max(responses, 1), 2
                        ),
                    }
                )

    def _drop_query_indexes(self, database: Database) -> None:
        with database.engine.begin() as connection:
            for name in QUERY_INDEXES:
                connection.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
            connection.exec_driver_sql("ANALYZE")


def first_sop_instance_uid(study: CorpusStudy) -> str:
    """Return the SOP Instance UID of ``study``'s first file."""
    return str(dcmread(study.files[0], stop_before_pixels=True).SOPInstanceUID)


# -- memory while files arrive ---------------------------------------------------------


@dataclass
class MemoryTrace:
    """The RSS of one target before, during and after a C-STORE send, in bytes."""

    seconds: float
    rss_before: int
    # (seconds since sampling started, RSS) pairs, one every MEMORY_SAMPLE_INTERVAL_S.
    samples: list[tuple[float, int]]
    rss_after: int


def send_watching_memory(target: Target, files: list[Path]) -> MemoryTrace:
    """Send ``files`` to ``target`` on 4 associations while sampling its RSS twice a second."""
    samples: list[tuple[float, int]] = []
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        # The first sample comes at once, so even a send shorter than the interval has one.
        samples.append((time.perf_counter() - started, target.current_rss_bytes()))
        while not done.wait(MEMORY_SAMPLE_INTERVAL_S):
            samples.append((time.perf_counter() - started, target.current_rss_bytes()))

    sampler = threading.Thread(target=sample, name="rss-sampler")
    before = target.current_rss_bytes()
    sampler.start()
    try:
        seconds = send_c_store(target, files, LONG_INGEST_ASSOCIATIONS)
    finally:
        done.set()
        sampler.join()
    return MemoryTrace(seconds, before, samples, target.current_rss_bytes())


def growth_mb_per_1000_instances(trace: MemoryTrace, instances: int) -> float | None:
    """Estimate the RSS growth of ``trace`` in MB per 1,000 instances received.

    The estimate is the slope of a least-squares line through the samples taken after
    ``WARM_UP_SHARE`` of the send. storescu reports no progress while it runs, so the
    instances received by each sample's time are estimated from the send's mean rate.
    Returns None when fewer than two samples are late enough.
    """
    late = [
        (seconds, rss) for seconds, rss in trace.samples if seconds >= trace.seconds * WARM_UP_SHARE
    ]
    if len(late) < 2:
        return None
    received = [instances * seconds / trace.seconds for seconds, _rss in late]
    fit = statistics.linear_regression(received, [float(rss) for _seconds, rss in late])
    return fit.slope * 1000 / 1e6


def measure_long_ingest_memory(work_dir: Path, options: RunOptions) -> dict[str, object]:
    """Send a long MR corpus to a fresh Noctis and a fresh durable Orthanc, watching RSS.

    The corpus of ``options.memory_ingest_instances`` instances is written into
    ``work_dir`` and deleted at the end, as is each target's folder after a successful run.
    """
    started_at = datetime.now(UTC)
    corpus = generate_long_ingest_corpus(work_dir / "corpus", options.memory_ingest_instances)
    factories: list[Callable[[int], Target]] = [
        lambda repetition: NoctisArchive("noctis", work_dir / f"{repetition}-noctis"),
        lambda repetition: Orthanc("orthanc", work_dir / f"{repetition}-orthanc", fast=False),
    ]
    runs: list[dict[str, object]] = []
    try:
        for repetition in range(options.memory_repetitions):
            for factory in rotated(factories, repetition):
                target = factory(repetition)
                target.start()
                try:
                    runs.append(_watch_long_ingest(target, corpus.files, repetition))
                finally:
                    target.stop()
                # A failed run skips this line, so its target's folder and log stay for reading.
                shutil.rmtree(target.work_dir, ignore_errors=True)
        return {
            "started_at": started_at.isoformat(timespec="seconds"),
            "instances": len(corpus.files),
            "bytes": corpus.size_bytes,
            "studies": corpus.studies,
            "series": corpus.series,
            "associations": LONG_INGEST_ASSOCIATIONS,
            "sample_interval_s": MEMORY_SAMPLE_INTERVAL_S,
            "warm_up_share": WARM_UP_SHARE,
            "runs": runs,
        }
    finally:
        shutil.rmtree(work_dir / "corpus", ignore_errors=True)


def _watch_long_ingest(target: Target, files: list[Path], repetition: int) -> dict[str, object]:
    trace = send_watching_memory(target, files)
    stored = stored_count(target)
    if stored != len(files):
        raise IngestFailedError(
            f"{target.name} stored {stored} of the {len(files)} instances of the long ingest. "
            f"Its log in {target.work_dir} says why."
        )
    samples = [rss for _seconds, rss in trace.samples]
    tenths = [samples[min(len(samples) - 1, len(samples) * part // 10)] for part in range(1, 10)]
    growth = growth_mb_per_1000_instances(trace, len(files))
    peak = target.sample().peak_rss_bytes
    logger.info(
        "%s: %d instances in %.0f s, RSS %.0f to %.0f MB, peak %.0f MB, growth %s",
        target.name,
        len(files),
        trace.seconds,
        trace.rss_before / 1e6,
        trace.rss_after / 1e6,
        peak / 1e6,
        "not fitted" if growth is None else f"{growth:+.2f} MB per 1,000 instances",
    )
    return {
        "target": target.name,
        "repetition": repetition,
        "instances": len(files),
        "seconds": round(trace.seconds, 1),
        "instances_per_s": round(len(files) / trace.seconds, 1),
        "samples": len(samples),
        "rss_mb_before": round(trace.rss_before / 1e6, 1),
        "rss_mb_at_tenths": [round(value / 1e6, 1) for value in tenths],
        "rss_mb_after": round(trace.rss_after / 1e6, 1),
        "peak_rss_mb": round(peak / 1e6, 1),
        "growth_mb_per_1000_instances": None if growth is None else round(growth, 3),
    }
