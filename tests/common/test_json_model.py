"""DICOM JSON conversion with relative BulkDataURIs."""

from __future__ import annotations

import json
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


def test_ideographic_only_name_has_no_alphabetic() -> None:
    dataset = Dataset()
    dataset.SpecificCharacterSet = "ISO_IR 192"
    dataset.PatientName = "=山田^太郎"

    converted = dataset_to_json(dataset)

    assert converted["00100010"]["Value"] == [{"Ideographic": "山田^太郎"}]


def test_decimal_strings_keep_value_and_nulls() -> None:
    dataset = Dataset()
    dataset.add_new(0x00181318, "DS", ["1.50", "", "3"])
    dataset.add_new(0x00280030, "DS", ["0.123456789012345678", "2"])
    dataset.add_new(0x00200013, "IS", "7")

    converted = dataset_to_json(dataset)

    assert converted["00181318"]["Value"] == [1.5, None, 3]
    assert converted["00280030"]["Value"] == ["0.123456789012345678", 2]
    assert converted["00200013"]["Value"] == [7]


def test_non_finite_floats_give_valid_json() -> None:
    dataset = Dataset()
    dataset.add_new(0x00189087, "FD", [float("nan"), float("inf"), float("-inf"), 1.0])

    converted = dataset_to_json(dataset)

    assert converted["00189087"]["Value"] == ["NaN", "Infinity", "-Infinity", 1.0]
    json.dumps(converted, allow_nan=False)


def test_attributes_sorted_without_group_length() -> None:
    dataset = Dataset()
    dataset.PatientName = "Doe^Jane"
    dataset.add_new(0x00080000, "UL", 4)
    dataset.Modality = "CT"

    assert list(dataset_to_json(dataset)) == ["00080060", "00100010"]


def test_private_and_unknown_elements_are_kept() -> None:
    dataset = Dataset()
    dataset.add_new(0x00291010, "LO", "vendor value")
    dataset.add_new(0x00111010, "UN", b"abcd")

    converted = dataset_to_json(dataset)

    assert converted["00291010"] == {"vr": "LO", "Value": ["vendor value"]}
    assert converted["00111010"] == {"vr": "UN", "InlineBinary": "YWJjZA=="}
