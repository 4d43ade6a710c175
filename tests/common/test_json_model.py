"""DICOM JSON conversion with relative BulkDataURIs."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from noctis_common.dicom.json_model import (
    BULK_DATA_THRESHOLD_BYTES,
    dataset_to_json,
    resolve_bulkdata_uris,
)
from tests.support import make_dataset


def test_nested_bulk_data_gets_item_path(tmp_path: Path) -> None:
    dataset = make_dataset()
    item = Dataset()
    item.add_new(0x00281201, "OW", b"\x01\x02" * BULK_DATA_THRESHOLD_BYTES)
    dataset.IconImageSequence = Sequence([item])
    path = tmp_path / "nested.dcm"
    dataset.save_as(path, enforce_file_format=True)

    converted = dataset_to_json(dcmread(path, defer_size=BULK_DATA_THRESHOLD_BYTES))

    nested = converted["00880200"]["Value"][0]["00281201"]
    assert nested == {"vr": "OW", "BulkDataURI": "noctis-instance:bulkdata/00880200/0/00281201"}


def test_small_binary_stays_inline() -> None:
    dataset = Dataset()
    dataset.add_new(0x00091010, "OB", b"\x00\x01\x02\x03")

    converted = dataset_to_json(dataset)

    assert converted["00091010"] == {"vr": "OB", "InlineBinary": "AAECAw=="}


def test_resolve_bulkdata_uris_makes_urls_absolute() -> None:
    text = '{"7FE00010":{"vr":"OW","BulkDataURI":"noctis-instance:bulkdata/7FE00010"}}'

    resolved = resolve_bulkdata_uris(text, "http://host/dicom-web/studies/1/series/2/instances/3")

    assert resolved == (
        '{"7FE00010":{"vr":"OW","BulkDataURI":'
        '"http://host/dicom-web/studies/1/series/2/instances/3/bulkdata/7FE00010"}}'
    )


def test_japanese_person_name_keeps_groups() -> None:
    dataset = Dataset()
    dataset.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
    dataset.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"

    converted = dataset_to_json(dataset)

    assert converted["00100010"]["Value"] == [
        {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
