"""STOW-RS end to end: dicomweb-client stores pydicom's test files over real HTTP."""

from __future__ import annotations

import io

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from sqlalchemy import create_engine, select

from noctis_common.archive import FailureReason
from noctis_common.db.models import Instance
from noctis_common.uids import InvalidUIDError, validate_uid
from tests.support import ArchiveProcess, pydicom_test_files


def can_be_encoded(dataset: Dataset) -> bool:
    """Return whether pydicom can write ``dataset`` again, as dicomweb-client must.

    pydicom 3.0 fails on SC_rgb_jpeg.dcm, whose File Meta Information names another
    transfer syntax than its dataset uses.
    """
    try:
        pydicom.dcmwrite(io.BytesIO(), dataset)
    except Exception:
        return False
    return True


def has_valid_uids(dataset: Dataset) -> bool:
    """Return whether the archive can index ``dataset``: its four UIDs must be valid."""
    keywords = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    try:
        for keyword in keywords:
            validate_uid(str(dataset.get(keyword, "")), keyword)
    except InvalidUIDError:
        return False
    return True


@pytest.mark.slow
def test_dicomweb_client_stores_test_files(archive_process: ArchiveProcess) -> None:
    datasets = [pydicom.dcmread(path) for path in pydicom_test_files()]
    datasets = [dataset for dataset in datasets if can_be_encoded(dataset)]
    valid_uids = {str(dataset.SOPInstanceUID) for dataset in datasets if has_valid_uids(dataset)}
    invalid_count = len(datasets) - len(valid_uids)
    client = DICOMwebClient(url=archive_process.dicomweb_url)

    response = client.store_instances(datasets)

    stored_uids = {
        str(item.ReferencedSOPInstanceUID) for item in response.get("ReferencedSOPSequence", [])
    }
    failure_reasons = [int(item.FailureReason) for item in response.get("FailedSOPSequence", [])]
    assert stored_uids == valid_uids, archive_process.log()
    assert failure_reasons == [FailureReason.CANNOT_UNDERSTAND] * invalid_count

    archive_process.stop()
    engine = create_engine(f"sqlite:///{archive_process.data_dir / 'index.sqlite'}")
    try:
        with engine.connect() as connection:
            indexed_uids = set(connection.scalars(select(Instance.sop_instance_uid)))
    finally:
        engine.dispose()
    assert indexed_uids == valid_uids
