"""The index populator: synthetic studies written straight into the index tables.

It fills ``patient``, ``study``, ``series`` and ``instance`` with bulk inserts, without
storing objects, so that QIDO-RS can be measured at 1,000 to 1,000,000 instances without
sending them. Every study has 50 instances in 4 series, every patient 2 studies. The
``metadata_json`` of each instance is a short DICOM JSON object of its identifying
attributes. No object key points to a real file, so only queries can be measured.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, insert, text

from bench.corpus import FAMILY_NAMES, GIVEN_NAMES, STUDY_DESCRIPTIONS
from noctis_common.db import Database
from noctis_common.db.models import Instance, Patient, Series, Study
from noctis_common.dicom.attributes import person_name_search_form, time_key

logger = logging.getLogger(__name__)

INSTANCES_PER_STUDY = 50
SERIES_PER_STUDY = 4
STUDIES_PER_PATIENT = 2
CHUNK_ROWS = 20_000
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
MODALITY_MIXES = (("CT",), ("MR",), ("CT", "SR"), ("CR",), ("MR", "OT"))
UID_ROOT = "1.2.826.0.1.3680043.8.498.9"


@dataclass(frozen=True)
class PopulatedIndex:
    """The populated index: its size, and one study for the list queries to request."""

    instances: int
    studies: int
    seconds: float
    study_instance_uid: str
    series_instance_uid: str
    patient_name: str
    study_date: str
    accession_number: str


def _study_uid(number: int) -> str:
    return f"{UID_ROOT}.1.{number}"


def _series_uid(study: int, series: int) -> str:
    return f"{UID_ROOT}.2.{study}.{series}"


def _sop_instance_uid(study: int, instance: int) -> str:
    return f"{UID_ROOT}.3.{study}.{instance}"


def _metadata_json(study: int, series: int, instance: int, modality: str) -> str:
    return json.dumps(
        {
            "00080016": {"vr": "UI", "Value": [CT_IMAGE_STORAGE]},
            "00080018": {"vr": "UI", "Value": [_sop_instance_uid(study, instance)]},
            "00080060": {"vr": "CS", "Value": [modality]},
            "0020000D": {"vr": "UI", "Value": [_study_uid(study)]},
            "0020000E": {"vr": "UI", "Value": [_series_uid(study, series)]},
            "00200013": {"vr": "IS", "Value": [instance + 1]},
            "00280010": {"vr": "US", "Value": [512]},
            "00280011": {"vr": "US", "Value": [512]},
        },
        separators=(",", ":"),
    )


class IndexPopulator:
    """Generates the rows of ``instances`` synthetic instances from a seed."""

    def __init__(self, instances: int, seed: int = 8) -> None:
        self.studies = max(1, instances // INSTANCES_PER_STUDY)
        self.random = random.Random(seed)  # noqa: S311 (seeded test data, not secrets)
        self.now = datetime.now(UTC)
        self.study_rows = [self._study_row(number) for number in range(1, self.studies + 1)]

    def _study_row(self, number: int) -> dict[str, Any]:
        patient_number = (number - 1) // STUDIES_PER_PATIENT + 1
        names = random.Random(patient_number)  # noqa: S311 (seeded test data)
        patient_name = f"{names.choice(FAMILY_NAMES)}^{names.choice(GIVEN_NAMES)}"
        study_date = (
            f"{self.random.randint(2005, 2026):04d}{self.random.randint(1, 12):02d}"
            f"{self.random.randint(1, 28):02d}"
        )
        study_time = f"{self.random.randint(7, 19):02d}{self.random.randint(0, 59):02d}00"
        modalities = MODALITY_MIXES[number % len(MODALITY_MIXES)]
        return {
            "id": number,
            "study_instance_uid": _study_uid(number),
            "patient_fk": patient_number,
            "patient_name": patient_name,
            "patient_name_search": person_name_search_form(patient_name),
            "patient_id": f"PID{patient_number:08d}",
            "patient_birth_date": "19600101",
            "patient_sex": "F" if patient_number % 2 else "M",
            "study_date": study_date,
            "study_time": study_time,
            "study_time_key": time_key(study_time),
            "accession_number": f"A{number:09d}",
            "study_id": "1",
            "study_description": STUDY_DESCRIPTIONS[number % len(STUDY_DESCRIPTIONS)],
            "modalities_in_study": "\\".join(sorted(modalities)),
            "number_of_study_related_series": SERIES_PER_STUDY,
            "number_of_study_related_instances": INSTANCES_PER_STUDY,
            "completed_revision": 1,
            "revision": 1,
            "last_instance_at": self.now,
            "created_at": self.now,
            "updated_at": self.now,
        }

    def patient_rows(self) -> Iterator[dict[str, Any]]:
        for study in self.study_rows[::STUDIES_PER_PATIENT]:
            yield {
                "id": study["patient_fk"],
                "patient_id": study["patient_id"],
                "issuer_of_patient_id": "",
                "patient_name": study["patient_name"],
                "patient_birth_date": study["patient_birth_date"],
                "patient_sex": study["patient_sex"],
                "created_at": self.now,
            }

    def series_rows(self) -> Iterator[dict[str, Any]]:
        for study in self.study_rows:
            modalities = study["modalities_in_study"].split("\\")
            for series in range(SERIES_PER_STUDY):
                yield {
                    "id": (study["id"] - 1) * SERIES_PER_STUDY + series + 1,
                    "series_instance_uid": _series_uid(study["id"], series),
                    "study_fk": study["id"],
                    "modality": modalities[series % len(modalities)],
                    "series_number": series + 1,
                    "series_description": f"series {series + 1}",
                    "series_date": study["study_date"],
                    "series_time": study["study_time"],
                    "number_of_series_related_instances": INSTANCES_PER_STUDY // SERIES_PER_STUDY,
                    "revision": 1,
                    "created_at": self.now,
                    "updated_at": self.now,
                }

    def instance_rows(self) -> Iterator[dict[str, Any]]:
        for study in self.study_rows:
            modalities = study["modalities_in_study"].split("\\")
            for instance in range(INSTANCES_PER_STUDY):
                series = instance % SERIES_PER_STUDY
                sop_instance_uid = _sop_instance_uid(study["id"], instance)
                yield {
                    "id": (study["id"] - 1) * INSTANCES_PER_STUDY + instance + 1,
                    "sop_instance_uid": sop_instance_uid,
                    "series_fk": (study["id"] - 1) * SERIES_PER_STUDY + series + 1,
                    "study_fk": study["id"],
                    "sop_class_uid": CT_IMAGE_STORAGE,
                    "instance_number": instance + 1,
                    "rows": 512,
                    "columns": 512,
                    "bits_allocated": 16,
                    "number_of_frames": None,
                    "content_date": study["study_date"],
                    "content_time": study["study_time"],
                    "specific_character_set": "",
                    "transfer_syntax_uid": EXPLICIT_VR_LITTLE_ENDIAN,
                    "object_key": f"populated/{sop_instance_uid}",
                    "object_size": 526_000,
                    "dataset_offset": 0,
                    "dataset_sha256": "0" * 64,
                    "metadata_json": _metadata_json(
                        study["id"], series, instance, modalities[series % len(modalities)]
                    ),
                    "source_ae_title": "POPULATOR",
                    "created_at": self.now,
                }


def _insert_chunks(database: Database, table: Table, rows: Iterator[dict[str, Any]]) -> None:
    chunk: list[dict[str, Any]] = []
    with database.engine.begin() as connection:
        for row in rows:
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                connection.execute(insert(table), chunk)
                chunk = []
        if chunk:
            connection.execute(insert(table), chunk)


def populate_index(database: Database, instances: int, seed: int = 8) -> PopulatedIndex:
    """Write ``instances`` synthetic instances into the empty, migrated index ``database``."""
    started = time.perf_counter()
    populator = IndexPopulator(instances, seed)
    tables: list[tuple[Table, Iterator[dict[str, Any]]]] = [
        (Patient.__table__, populator.patient_rows()),  # type: ignore[list-item]
        (Study.__table__, iter(populator.study_rows)),  # type: ignore[list-item]
        (Series.__table__, populator.series_rows()),  # type: ignore[list-item]
        (Instance.__table__, populator.instance_rows()),  # type: ignore[list-item]
    ]
    for table, rows in tables:
        _insert_chunks(database, table, rows)
    with database.engine.begin() as connection:
        if database.is_sqlite:
            connection.execute(text("ANALYZE"))
        else:
            for table, _rows in tables:
                # The table names come from the models, not from input.
                statement = (
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "  # noqa: S608
                    f"(SELECT max(id) FROM {table.name}))"
                )
                connection.execute(text(statement))
    if not database.is_sqlite:
        with database.engine.connect().execution_options(
            isolation_level="AUTOCOMMIT"
        ) as connection:
            connection.execute(text("VACUUM ANALYZE"))
    seconds = time.perf_counter() - started
    reference = populator.study_rows[len(populator.study_rows) // 2]
    logger.info(
        "populated %d instances in %d studies in %.1f s", instances, populator.studies, seconds
    )
    return PopulatedIndex(
        instances=populator.studies * INSTANCES_PER_STUDY,
        studies=populator.studies,
        seconds=seconds,
        study_instance_uid=reference["study_instance_uid"],
        series_instance_uid=_series_uid(reference["id"], 0),
        patient_name=reference["patient_name"],
        study_date=reference["study_date"],
        accession_number=reference["accession_number"],
    )
