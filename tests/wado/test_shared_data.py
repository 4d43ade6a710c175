"""WADO-RS over the real DICOM files in ../shared/data/dicom, when that folder exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import generate_fragments, parse_basic_offsets
from pydicom.filebase import DicomBytesIO
from pydicom.pixels.utils import get_expected_length

from noctis_common.archive import StoredInstance, StoreFailedError
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.routes import router
from tests.support import SHARED_DATA_DIR, dataset_bytes, is_part10, shared_data_files
from tests.wado.helpers import instance_url, parse_multipart, part10_dataset_bytes, store_file

pytestmark = pytest.mark.shared_data

SHARED_FILES = [path for path in shared_data_files() if is_part10(path)]
FILE_IDS = [str(path.relative_to(SHARED_DATA_DIR)) for path in SHARED_FILES]
# A client of the archive, and what each stored file was stored as.
SharedArchive = tuple[TestClient, dict[Path, StoredInstance]]


@pytest.fixture(scope="module")
def shared_archive(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SharedArchive]:
    """A WADO-RS client over an archive holding the first stored copy of each shared file."""
    if not SHARED_FILES:
        pytest.skip(f"no shared DICOM files: {SHARED_DATA_DIR} is absent")
    context = ArchiveContext.create(Settings(data_dir=tmp_path_factory.mktemp("shared") / "var"))
    stored: dict[Path, StoredInstance] = {}
    for path in SHARED_FILES:
        try:
            result = store_file(context, path)
        except StoreFailedError:
            continue  # files without the four UIDs, and re-encoded copies of a stored one
        if not result.duplicate:
            stored[path] = result
    app = create_app("Noctis WADO-RS shared data test", [router], context.settings, context)
    try:
        with TestClient(app) as client:
            yield client, stored
    finally:
        context.close()


def _stored(shared_archive: SharedArchive, path: Path) -> StoredInstance:
    stored = shared_archive[1].get(path)
    if stored is None:
        pytest.skip(
            f"{path.name} was not stored: it lacks a UID or repeats a stored SOP Instance UID"
        )
    return stored


@pytest.mark.parametrize("path", SHARED_FILES, ids=FILE_IDS)
def test_shared_instance_retrieved_unchanged(shared_archive: SharedArchive, path: Path) -> None:
    client = shared_archive[0]
    stored = _stored(shared_archive, path)
    # Named explicitly, because Implicit VR and big endian objects are otherwise transcoded.
    accept = (
        f'multipart/related; type="application/dicom"; transfer-syntax={stored.transfer_syntax_uid}'
    )

    response = client.get(instance_url(stored), headers={"Accept": accept})

    assert response.status_code == 200
    (part,) = parse_multipart(response)
    assert part10_dataset_bytes(part.content) == dataset_bytes(path)


@pytest.mark.parametrize("path", SHARED_FILES, ids=FILE_IDS)
def test_shared_instance_frames(shared_archive: SharedArchive, path: Path) -> None:
    client = shared_archive[0]
    stored = _stored(shared_archive, path)
    dataset = pydicom.dcmread(path)
    if "PixelData" not in dataset:
        pytest.skip(f"{path.name} has no Pixel Data")
    number_of_frames = int(dataset.get("NumberOfFrames") or 1)
    frame_list = ",".join(str(number) for number in range(1, number_of_frames + 1))

    response = client.get(f"{instance_url(stored)}/frames/{frame_list}")

    assert response.status_code == 200, response.text
    frames = [part.content for part in parse_multipart(response)]
    assert len(frames) == number_of_frames
    syntax = dataset.file_meta.TransferSyntaxUID
    if syntax.is_encapsulated:
        # Every fragment belongs to one frame, in order, even where an offset table is wrong.
        buffer = DicomBytesIO(dataset.PixelData)
        parse_basic_offsets(buffer)
        assert b"".join(frames) == b"".join(generate_fragments(buffer))
    elif syntax.is_little_endian and dataset.BitsAllocated % 8 == 0:
        frame_length = get_expected_length(dataset, "bytes") // number_of_frames
        for index, frame in enumerate(frames):
            start = index * frame_length
            assert frame == dataset.PixelData[start : start + frame_length], f"frame {index + 1}"


@pytest.mark.parametrize("path", SHARED_FILES, ids=FILE_IDS)
def test_shared_instance_bulkdata_uris(shared_archive: SharedArchive, path: Path) -> None:
    client = shared_archive[0]
    stored = _stored(shared_archive, path)
    metadata = client.get(f"{instance_url(stored)}/metadata")
    uris = re.findall(r'"BulkDataURI":"([^"]+)"', metadata.text)

    failed = [uri for uri in uris if client.get(uri).status_code != 200]

    assert metadata.status_code == 200
    assert failed == []
