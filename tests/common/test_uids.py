"""UID validation and object keys."""

from __future__ import annotations

import pytest

from noctis_common.uids import InvalidUIDError, instance_object_key, validate_uid


@pytest.mark.parametrize("value", ["1.2.840.10008.1.2", "0", "2.25.1234", "1.2.3\x00", "1.2.3 "])
def test_valid_uid_is_accepted(value: str) -> None:
    assert validate_uid(value) == value.rstrip("\x00 ")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("1.2." + "3" * 70, "over the 64 allowed"),
        ("../1.2", "only digits"),
        ("1.2/3", "only digits"),
        ("1..2", "only digits"),
        (".1.2", "only digits"),
        ("1.2.", "only digits"),
        ("1.2.a", "only digits"),
        (None, "must be a string"),
    ],
)
def test_invalid_uid_is_rejected(value: object, reason: str) -> None:
    with pytest.raises(InvalidUIDError, match=reason):
        validate_uid(value, "SOPInstanceUID")


def test_object_key_nests_uids_and_digest() -> None:
    key = instance_object_key("1.2", "1.2.3", "1.2.3.4", "ab" * 32)

    assert key == "1.2/1.2.3/1.2.3.4.abababababababab.dcm"


def test_object_key_rejects_bad_digest() -> None:
    with pytest.raises(ValueError, match="content digest"):
        instance_object_key("1.2", "1.2.3", "1.2.3.4", "../x")
