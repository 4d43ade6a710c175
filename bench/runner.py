"""The benchmark run: ingest, reads and the QIDO scale, with the targets in rotating order."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread

from bench.corpus import Corpus, CorpusStudy
from bench.ingest import measure_ingest, send_c_store
from bench.peers import (
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

# The indexes of migration 0009, dropped for the "before" row of the QIDO scale table.
MEMORY_SAMPLE_INTERVAL_S = 0.5
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
            lambda: Orthanc("orthanc", self._folder("orthanc")),
            lambda: Orthanc("orthanc-fast", self._folder("orthanc-fast"), fast=True),
            lambda: NoctisArchive("noctis", self._folder("noctis")),
            # The same without batching the outbox relay's work: the "before" of that change.
            lambda: NoctisArchive(
                "noctis-relay-unbatched",
                self._folder("noctis-relay-unbatched"),
                extra_environment={"NOCTIS_OUTBOX_RELAY_BATCH_DELAY_S": "0"},
            ),
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
        samples: list[int] = []
        done = threading.Event()

        def sample() -> None:
            # The first sample comes at once, so even a load shorter than the interval has one.
            samples.append(target.current_rss_bytes())
            while not done.wait(MEMORY_SAMPLE_INTERVAL_S):
                samples.append(target.current_rss_bytes())

        sampler = threading.Thread(target=sample, name="rss-sampler")
        before = target.current_rss_bytes()
        sampler.start()
        try:
            seconds = send_c_store(target, self.corpus.loaded_files, 4)
        finally:
            done.set()
            sampler.join()
        quarters = [samples[min(len(samples) - 1, len(samples) * part // 4)] for part in (1, 2, 3)]
        return {
            "target": target.name,
            "instances": len(self.corpus.loaded_files),
            "seconds": round(seconds, 1),
            "rss_mb_before": round(before / 1e6, 1),
            "rss_mb_at_quarters": [round(value / 1e6, 1) for value in quarters],
            "rss_mb_after": round(target.current_rss_bytes() / 1e6, 1),
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
