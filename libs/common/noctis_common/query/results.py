"""DICOM JSON elements (PS3.18 F.2) for the attributes of a query result."""

from __future__ import annotations

from typing import Any

from pydicom.datadict import dictionary_VR

from noctis_common.query.keys import IndexedKey
from noctis_common.query.values import VALUE_DELIMITER

PERSON_NAME_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")
UNKNOWN_VR = "UN"


def json_key(tag: int) -> str:
    """Return the DICOM JSON name of an attribute: its tag in eight uppercase hex digits."""
    return f"{tag:08X}"


def vr_of_tag(tag: int) -> str:
    """Return the dictionary VR of ``tag``: the first of ambiguous ones, UN when unknown."""
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        return UNKNOWN_VR
    return vr.split(" or ")[0]


def empty_element(tag: int) -> dict[str, Any]:
    """Return an attribute without a value, as Universal Matching returns an unknown one."""
    return {"vr": vr_of_tag(tag)}


def person_name_value(text: str) -> dict[str, str] | None:
    """Return a PN value ``alphabetic=ideographic=phonetic`` as a DICOM JSON object."""
    groups = {
        name: group
        for name, group in zip(PERSON_NAME_GROUPS, text.split("="), strict=False)
        if group
    }
    return groups or None


def index_element(key: IndexedKey, value: object) -> dict[str, Any]:
    """Return the DICOM JSON element for the value of an index column.

    Text columns keep multiple values separated by backslashes, as the archive wrote
    them; each becomes one entry of ``Value``. IS and US values are numbers.
    """
    if value is None or value == "":
        return {"vr": key.vr}
    if isinstance(value, int):
        return {"vr": key.vr, "Value": [value]}
    texts = str(value).split(VALUE_DELIMITER)
    if key.vr == "PN":
        return {"vr": "PN", "Value": [person_name_value(text) for text in texts]}
    return {"vr": key.vr, "Value": [text or None for text in texts]}
