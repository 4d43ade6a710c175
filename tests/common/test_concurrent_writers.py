"""Concurrent stores of one new study create exactly one patient, study and series row.

Replicas that receive the same study at once race on the unique patient, study and
series keys and on the study's counts. These tests store the instances of one new
study from many threads, and from several processes with several threads each, all
released at the same moment, then check the rows and counts of the index.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, inspect, select

from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance, OutboxEvent, Patient, Series, Study
from noctis_common.events import INSTANCE_STORED
from noctis_common.settings import Settings
from tests.common.concurrent_store_worker import READY, store_concurrently
from tests.support import REPOSITORY_ROOT, make_dataset

# One series per modality, so that ModalitiesInStudy shows lost updates too.
MODALITIES = ("CT", "MR", "PT", "US")
WORKER_PROCESSES = 3
THREADS_PER_PROCESS = 3
WORKER_TIMEOUT_S = 180


def write_study(folder: Path, instances_per_series: int) -> tuple[str, list[Path]]:
    """Write one new study of ``len(MODALITIES)`` series, interleaving the series."""
    folder.mkdir(parents=True)
    study_instance_uid = generate_uid()
    series_uids = {modality: generate_uid() for modality in MODALITIES}
    paths = []
    for number in range(1, instances_per_series + 1):
        for modality, series_instance_uid in series_uids.items():
            dataset = make_dataset(
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                modality=modality,
                instance_number=number,
            )
            path = folder / f"{dataset.SOPInstanceUID}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            paths.append(path)
    return study_instance_uid, paths


def check_one_study_indexed(
    context: ArchiveContext, study_instance_uid: str, instance_count: int
) -> None:
    per_series = instance_count // len(MODALITIES)
    with context.database.read_session() as session:
        patients = session.scalar(select(func.count()).select_from(Patient))
        studies = session.scalars(select(Study)).all()
        series = session.scalars(select(Series)).all()
        instances = session.scalar(select(func.count()).select_from(Instance))
        payloads = [
            json.loads(payload)
            for payload in session.scalars(
                select(OutboxEvent.payload_json).where(OutboxEvent.event_type == INSTANCE_STORED)
            )
        ]

    assert patients == 1
    assert [study.study_instance_uid for study in studies] == [study_instance_uid]
    assert studies[0].number_of_study_related_series == len(MODALITIES)
    assert studies[0].number_of_study_related_instances == instance_count
    assert studies[0].modalities_in_study == "\\".join(sorted(MODALITIES))
    assert studies[0].revision == 1
    assert sorted(row.modality for row in series) == sorted(MODALITIES)
    assert [row.number_of_series_related_instances for row in series] == [per_series] * len(
        MODALITIES
    )
    assert instances == instance_count
    assert len(payloads) == instance_count
    assert sum(payload["NewStudy"] for payload in payloads) == 1
    assert sum(payload["NewSeries"] for payload in payloads) == len(MODALITIES)


@pytest.mark.parametrize(
    ("table", "columns"),
    [
        ("patient", ["patient_id", "issuer_of_patient_id"]),
        ("study", ["study_instance_uid"]),
        ("series", ["series_instance_uid"]),
        ("instance", ["sop_instance_uid"]),
    ],
)
def test_index_has_unique_key(
    context: ArchiveContext, table: str, columns: list[str | None]
) -> None:
    inspector = inspect(context.database.engine)
    unique_keys: list[list[str | None]] = [
        list(constraint["column_names"]) for constraint in inspector.get_unique_constraints(table)
    ]
    unique_keys += [
        list(index["column_names"]) for index in inspector.get_indexes(table) if index["unique"]
    ]

    assert columns in unique_keys


def test_threads_store_one_new_study_once(context: ArchiveContext, tmp_path: Path) -> None:
    study_instance_uid, paths = write_study(tmp_path / "incoming", instances_per_series=4)

    failures = store_concurrently(context.archive, paths, threads=8)

    assert failures == []
    check_one_study_indexed(context, study_instance_uid, len(paths))


def test_processes_store_one_new_study_once(
    context: ArchiveContext, settings: Settings, tmp_path: Path
) -> None:
    study_instance_uid, paths = write_study(tmp_path / "incoming", instances_per_series=6)
    start_file = tmp_path / "start"
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.common.concurrent_store_worker",
                str(settings.data_dir),
                settings.resolved_database_url,
                str(start_file),
                str(THREADS_PER_PROCESS),
                *map(str, paths[index::WORKER_PROCESSES]),
            ],
            cwd=REPOSITORY_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for index in range(WORKER_PROCESSES)
    ]
    try:
        # Release the workers together once all are ready to store.
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline().decode().strip() == READY
        start_file.touch()
        outputs = [worker.communicate(timeout=WORKER_TIMEOUT_S)[0] for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()

    assert [worker.returncode for worker in workers] == [0] * WORKER_PROCESSES, outputs
    check_one_study_indexed(context, study_instance_uid, len(paths))
