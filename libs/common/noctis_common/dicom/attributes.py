"""Extraction of the attributes that the index stores as columns."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from noctis_common.uids import validate_uid

logger = logging.getLogger(__name__)


def person_name_search_form(name: str) -> str:
    """Return the form of a person name that case-insensitive matching compares."""
    return name.casefold()


def normalize_date(value: str) -> str:
    """Return a DA value as ``YYYYMMDD``, converting the retired ``YYYY.MM.DD`` form.

    ACR-NEMA files and some old modalities write dates with dots. Kept as they are, the
    value would be cut to eight characters and break range matching.
    """
    text = value.strip()
    if len(text) == 10 and text[4] == "." and text[7] == "." and text.replace(".", "").isdigit():
        return text.replace(".", "")
    return text


def time_key(value: str) -> str:
    """Return a TM value as fixed-width ``HHMMSS.FFFFFF`` for range comparison.

    Missing minutes, seconds and fraction count as zero, so ``"1030"`` becomes
    ``"103000.000000"``. Colons from the retired ACR-NEMA form are removed.
    """
    text = value.strip().replace(":", "")
    if not text:
        return ""
    whole, _, fraction = text.partition(".")
    whole = (whole + "000000")[:6]
    fraction = (fraction + "000000")[:6]
    return f"{whole}.{fraction}"


def _text(dataset: Dataset, keyword: str) -> str:
    try:
        value = dataset.get(keyword)
    except Exception as error:  # a malformed value must not stop indexing
        logger.warning("ignored malformed %s: %s", keyword, error)
        return ""
    if value is None:
        return ""
    # NUL is not a character of DICOM text values, only padding that careless senders
    # leave in. PostgreSQL text columns cannot store it.
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        return "\\".join(str(item).replace("\x00", "") for item in value)
    return str(value).replace("\x00", "").strip()


def _integer(dataset: Dataset, keyword: str) -> int | None:
    try:
        value: Any = dataset.get(keyword)
        if value is None or value == "":
            return None
        return int(value)
    except Exception as error:  # IS values like "1.0" or "abc" occur in the wild
        logger.warning("ignored malformed %s: %s", keyword, error)
        return None


@dataclass(frozen=True)
class IndexRecord:
    """The index columns of one instance and its series, study and patient."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str

    patient_id: str
    issuer_of_patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str

    study_date: str
    study_time: str
    accession_number: str
    study_id: str
    study_description: str
    referring_physician_name: str
    timezone_offset_from_utc: str
    specific_character_set: str

    modality: str
    series_number: int | None
    series_description: str
    series_date: str
    series_time: str
    body_part_examined: str
    performed_procedure_step_start_date: str
    performed_procedure_step_start_time: str

    instance_number: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    number_of_frames: int | None
    content_date: str
    content_time: str


def extract_index_record(dataset: Dataset) -> IndexRecord:
    """Read the index columns from ``dataset``.

    Raises :class:`noctis_common.uids.InvalidUIDError` when one of the four identifying
    UIDs is missing or invalid, because the instance could not be addressed.
    """
    return IndexRecord(
        sop_class_uid=validate_uid(dataset.get("SOPClassUID", ""), "SOPClassUID"),
        sop_instance_uid=validate_uid(dataset.get("SOPInstanceUID", ""), "SOPInstanceUID"),
        series_instance_uid=validate_uid(dataset.get("SeriesInstanceUID", ""), "SeriesInstanceUID"),
        study_instance_uid=validate_uid(dataset.get("StudyInstanceUID", ""), "StudyInstanceUID"),
        patient_id=_text(dataset, "PatientID"),
        issuer_of_patient_id=_text(dataset, "IssuerOfPatientID"),
        patient_name=_text(dataset, "PatientName"),
        patient_birth_date=normalize_date(_text(dataset, "PatientBirthDate")),
        patient_sex=_text(dataset, "PatientSex"),
        study_date=normalize_date(_text(dataset, "StudyDate")),
        study_time=_text(dataset, "StudyTime"),
        accession_number=_text(dataset, "AccessionNumber"),
        study_id=_text(dataset, "StudyID"),
        study_description=_text(dataset, "StudyDescription"),
        referring_physician_name=_text(dataset, "ReferringPhysicianName"),
        timezone_offset_from_utc=_text(dataset, "TimezoneOffsetFromUTC"),
        specific_character_set=_text(dataset, "SpecificCharacterSet"),
        modality=_text(dataset, "Modality"),
        series_number=_integer(dataset, "SeriesNumber"),
        series_description=_text(dataset, "SeriesDescription"),
        series_date=normalize_date(_text(dataset, "SeriesDate")),
        series_time=_text(dataset, "SeriesTime"),
        body_part_examined=_text(dataset, "BodyPartExamined"),
        performed_procedure_step_start_date=normalize_date(
            _text(dataset, "PerformedProcedureStepStartDate")
        ),
        performed_procedure_step_start_time=_text(dataset, "PerformedProcedureStepStartTime"),
        instance_number=_integer(dataset, "InstanceNumber"),
        rows=_integer(dataset, "Rows"),
        columns=_integer(dataset, "Columns"),
        bits_allocated=_integer(dataset, "BitsAllocated"),
        number_of_frames=_integer(dataset, "NumberOfFrames"),
        content_date=normalize_date(_text(dataset, "ContentDate")),
        content_time=_text(dataset, "ContentTime"),
    )
