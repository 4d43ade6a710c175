"""Frame offsets indexed at store time, and Retrieve Frames with and without them."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, encapsulate_extended
from pydicom.uid import JPEGBaseline8Bit
from sqlalchemy import delete, select

from noctis_common.archive import StoredInstance
from noctis_common.context import ArchiveContext
from noctis_common.db.models import FrameIndex, Instance
from noctis_common.dicom.frame_index import unpack_frame_ranges
from tests.support import SHARED_DATA_DIR, make_dataset
from tests.wado.helpers import (
    instance_url,
    parse_multipart,
    pydicom_file,
    store_dataset,
    store_file,
)

US_CINE_120_FRAMES = SHARED_DATA_DIR / "multiframe" / "US_color3d_120frame_jpeg.dcm"


def _index_row(context: ArchiveContext, stored: StoredInstance) -> FrameIndex | None:
    with context.database.read_session() as session:
        return session.scalar(
            select(FrameIndex)
            .join(Instance, FrameIndex.instance_fk == Instance.id)
            .where(Instance.sop_instance_uid == stored.sop_instance_uid)
        )


def _drop_index_row(context: ArchiveContext, stored: StoredInstance) -> None:
    with context.database.write_session() as session:
        instance_id = session.scalar(
            select(Instance.id).where(Instance.sop_instance_uid == stored.sop_instance_uid)
        )
        session.execute(delete(FrameIndex).where(FrameIndex.instance_fk == instance_id))
        session.commit()


def _frames(client: TestClient, stored: StoredInstance, frame_list: str) -> list[bytes]:
    response = client.get(f"{instance_url(stored)}/frames/{frame_list}")
    assert response.status_code == 200, response.text
    return [part.content for part in parse_multipart(response)]


def _synthetic_frame(index: int) -> bytes:
    body = bytes((index * 13 + position) % 200 for position in range(300))
    return b"\xff\xd8" + body + b"\xff\xd9"


def _jpeg_dataset(frames: list[bytes], layout: str) -> Dataset:
    dataset = make_dataset(rows=8, columns=8)
    dataset.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.NumberOfFrames = len(frames)
    if layout == "extended offset table":
        pixel_data, offsets, lengths = encapsulate_extended(frames)
        dataset.ExtendedOffsetTable = offsets
        dataset.ExtendedOffsetTableLengths = lengths
    else:
        pixel_data = encapsulate(
            frames, fragments_per_frame=3 if layout == "three fragments" else 1, has_bot=True
        )
    dataset.PixelData = pixel_data
    dataset["PixelData"].VR = "OB"
    return dataset


@pytest.mark.parametrize(
    "name", ["emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm"]
)
def test_store_writes_frame_index_row(context: ArchiveContext, name: str) -> None:
    stored = store_file(context, pydicom_file(name))

    row = _index_row(context, stored)

    assert row is not None
    assert row.number_of_frames == (2 if name.startswith("SC_") else 10)


def test_native_index_records_frame_length(context: ArchiveContext) -> None:
    stored = store_file(context, pydicom_file("emri_small.dcm"))

    row = _index_row(context, stored)

    assert row is not None
    assert row.frame_length == 64 * 64 * 2
    assert row.frame_ranges is None


def test_encapsulated_index_records_each_frame(context: ArchiveContext) -> None:
    stored = store_file(context, pydicom_file("emri_small_jpeg_2k_lossless.dcm"))

    row = _index_row(context, stored)

    assert row is not None and row.frame_ranges is not None
    assert len(unpack_frame_ranges(row.frame_ranges)) == 10


@pytest.mark.parametrize(
    "name", ["emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_rle_2frame.dcm"]
)
def test_indexed_frames_equal_parsed_frames(
    client: TestClient, context: ArchiveContext, name: str
) -> None:
    stored = store_file(context, pydicom_file(name))
    frame_list = "2,1" if name.startswith("SC_") else "10,1,5"
    indexed = _frames(client, stored, frame_list)

    _drop_index_row(context, stored)
    parsed = _frames(client, stored, frame_list)

    assert indexed == parsed


@pytest.mark.parametrize("layout", ["extended offset table", "basic offset table"])
def test_offset_table_frames_equal_parsed_frames(
    client: TestClient, context: ArchiveContext, tmp_path: Path, layout: str
) -> None:
    frames = [_synthetic_frame(index) for index in range(5)]
    stored = store_dataset(context, _jpeg_dataset(frames, layout), tmp_path)
    was_indexed = _index_row(context, stored) is not None
    indexed = _frames(client, stored, "4,2")

    _drop_index_row(context, stored)

    assert was_indexed
    assert indexed == [frames[3], frames[1]]
    assert _frames(client, stored, "4,2") == indexed


def test_frames_of_several_fragments_are_parsed(
    client: TestClient, context: ArchiveContext, tmp_path: Path
) -> None:
    frames = [_synthetic_frame(index) for index in range(4)]
    stored = store_dataset(context, _jpeg_dataset(frames, "three fragments"), tmp_path)

    assert _index_row(context, stored) is None
    assert _frames(client, stored, "3") == [frames[2]]


def test_instance_without_index_row_serves_frames(
    client: TestClient, context: ArchiveContext
) -> None:
    stored = store_file(context, pydicom_file("emri_small.dcm"))
    _drop_index_row(context, stored)

    frames = _frames(client, stored, "10")

    assert len(frames[0]) == 64 * 64 * 2


def test_frame_past_indexed_count_is_not_found(client: TestClient, context: ArchiveContext) -> None:
    stored = store_file(context, pydicom_file("emri_small_jpeg_2k_lossless.dcm"))

    response = client.get(f"{instance_url(stored)}/frames/11")

    assert response.status_code == 404


def test_shared_us_cine_frames_equal_parsed_frames(
    sqlite_client: TestClient, sqlite_context: ArchiveContext
) -> None:
    if not US_CINE_120_FRAMES.is_file():
        pytest.skip(f"shared data file {US_CINE_120_FRAMES} is absent")
    stored = store_file(sqlite_context, US_CINE_120_FRAMES)
    indexed = _frames(sqlite_client, stored, "120,1,60")

    _drop_index_row(sqlite_context, stored)

    assert _frames(sqlite_client, stored, "120,1,60") == indexed


def test_parsed_request_writes_missing_index_row(
    client: TestClient, context: ArchiveContext
) -> None:
    stored = store_file(context, pydicom_file("emri_small_jpeg_2k_lossless.dcm"))
    stored_row = _index_row(context, stored)
    assert stored_row is not None
    _drop_index_row(context, stored)

    _frames(client, stored, "1")
    filled_row = _index_row(context, stored)

    assert filled_row is not None
    assert filled_row.frame_ranges == stored_row.frame_ranges
