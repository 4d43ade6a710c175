"""The Store Instances Response: status codes, Warning fields and the XML encoding."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest

from noctis_common.archive import FailureReason, StoredInstance
from noctis_stow.response import (
    MAX_WARNING_FIELDS,
    MAX_WARNING_TEXT_LENGTH,
    build_store_response,
    dataset_to_xml,
    store_status_code,
    warning_fields,
)
from noctis_stow.store import FailedPart, InstanceUIDs, StoredPart, StoreOutcome

BASE_URL = "http://archive.test/dicom-web"
COERCION_OF_DATA_ELEMENTS = 0xB000


def stored_part(number: int, warning_reason: int | None = None) -> StoredPart:
    instance = StoredInstance(
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.4",
        sop_instance_uid=f"1.2.3.4.{number}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        duplicate=False,
    )
    return StoredPart(number, instance, warning_reason)


def failed_part(
    number: int,
    message: str = "the dataset cannot be parsed",
    reason: FailureReason = FailureReason.CANNOT_UNDERSTAND,
) -> FailedPart:
    return FailedPart(
        number,
        InstanceUIDs("1.2.840.10008.5.1.4.1.1.2", f"1.2.9.{number}", "1.2.9"),
        reason,
        message,
    )


OUT_OF_RESOURCES = FailureReason.OUT_OF_RESOURCES


@pytest.mark.parametrize(
    ("outcome", "status_code"),
    [
        pytest.param(StoreOutcome(stored=[stored_part(1)]), 200, id="all-stored"),
        pytest.param(
            StoreOutcome(stored=[stored_part(1, COERCION_OF_DATA_ELEMENTS)]),
            202,
            id="stored-with-warning",
        ),
        pytest.param(
            StoreOutcome(stored=[stored_part(1)], failed=[failed_part(2)]),
            202,
            id="some-failed",
        ),
        pytest.param(StoreOutcome(failed=[failed_part(1)]), 409, id="all-failed"),
        pytest.param(
            StoreOutcome(failed=[failed_part(1, "index down", OUT_OF_RESOURCES)]),
            503,
            id="all-failed-out-of-resources",
        ),
        pytest.param(
            StoreOutcome(failed=[failed_part(1), failed_part(2, "index down", OUT_OF_RESOURCES)]),
            409,
            id="all-failed-mixed",
        ),
    ],
)
def test_status_code_from_outcome(outcome: StoreOutcome, status_code: int) -> None:
    assert store_status_code(outcome) == status_code


def test_warning_reason_is_in_referenced_item() -> None:
    outcome = StoreOutcome(stored=[stored_part(1, COERCION_OF_DATA_ELEMENTS)])

    dataset = build_store_response(outcome, BASE_URL)

    assert dataset.ReferencedSOPSequence[0].WarningReason == COERCION_OF_DATA_ELEMENTS


def test_warning_field_escapes_its_text() -> None:
    part = failed_part(3, 'bad value "x\\y" in Ä\u65e5\n')

    (value,) = warning_fields([part])

    assert value == (
        '299 noctis "part 3 (SOP Instance UID 1.2.9.3) failed with Failure Reason C000H: '
        'bad value \\"x\\\\y\\" in Ä??"'
    )


def test_warning_text_is_cut_to_limit() -> None:
    (value,) = warning_fields([failed_part(1, "x" * 1000)])

    assert len(value) == len('299 noctis ""') + MAX_WARNING_TEXT_LENGTH


def test_warning_fields_are_capped() -> None:
    failed = [failed_part(number) for number in range(1, MAX_WARNING_FIELDS + 6)]

    values = warning_fields(failed)

    assert len(values) == MAX_WARNING_FIELDS + 1
    assert values[-1] == '299 noctis "5 more parts failed"'


def test_xml_encodes_sequences_and_empty_values() -> None:
    outcome = StoreOutcome(stored=[stored_part(1)], failed=[failed_part(2)])
    dataset = build_store_response(outcome, BASE_URL)
    dataset.RetrieveURL = ""

    root = ElementTree.fromstring(dataset_to_xml(dataset))

    namespace = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
    retrieve_url = root.find(f"{namespace}DicomAttribute[@tag='00081190']")
    assert retrieve_url is not None
    assert retrieve_url.attrib == {"tag": "00081190", "vr": "UR", "keyword": "RetrieveURL"}
    assert list(retrieve_url) == []
    items = root.findall(
        f"{namespace}DicomAttribute[@keyword='ReferencedSOPSequence']/{namespace}Item"
    )
    assert [item.attrib["number"] for item in items] == ["1"]
    instance_url = items[0].find(f"{namespace}DicomAttribute[@tag='00081190']/{namespace}Value")
    assert instance_url is not None
    assert instance_url.text == (f"{BASE_URL}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.1")
