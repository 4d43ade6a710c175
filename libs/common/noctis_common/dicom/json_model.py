"""Conversion of a stored dataset to the DICOM JSON model (PS3.18 annex F).

Binary values that are large, deferred by the reader, or Pixel Data are replaced by a
BulkDataURI. The index keeps each URI relative to its instance, behind the prefix
:data:`BULKDATA_URI_PREFIX`; :func:`resolve_bulkdata_uris` turns it into an absolute
URL when a response is built, so stored metadata does not depend on the host name.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, cast

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag

logger = logging.getLogger(__name__)

BULKDATA_URI_PREFIX = "noctis-instance:"
BULK_DATA_THRESHOLD_BYTES = 1024
BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_DATA_TAGS = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
UNDEFINED_LENGTH = 0xFFFFFFFF


def bulkdata_path(tag_path: list[str]) -> str:
    """Return the path of a bulk data element below its instance's WADO-RS URL."""
    return "bulkdata/" + "/".join(tag_path)


def _raw_vr(raw: RawDataElement) -> str:
    if raw.VR:
        return str(raw.VR)
    try:
        vr = dictionary_VR(raw.tag)
    except KeyError:
        return "UN"
    # Implicit VR files leave ambiguous VRs such as "OB or OW" to the reader: Pixel
    # Data and the other ambiguous binary elements are OW in Implicit VR Little Endian.
    return "OW" if " or " in vr and "OW" in vr else vr.split(" or ")[0]


def _is_bulk(tag: BaseTag, vr: str, length: int | None, deferred: bool) -> bool:
    if tag in PIXEL_DATA_TAGS:
        return True
    if vr not in BINARY_VRS:
        return False
    return deferred or length is None or length > BULK_DATA_THRESHOLD_BYTES


def dataset_to_json(dataset: Dataset, tag_path: list[str] | None = None) -> dict[str, Any]:
    """Convert ``dataset`` to a DICOM JSON object with relative BulkDataURIs.

    Elements whose values cannot be decoded are left out with a warning, so that one
    malformed value does not stop the whole instance from being indexed.
    """
    path = tag_path or []
    result: dict[str, Any] = {}
    # Annex F orders attributes by tag; a dataset built in memory keeps insertion order.
    for tag in sorted(dataset.keys()):
        if tag & 0xFFFF == 0:
            continue  # Group Length elements are not part of the JSON model (F.2.2)
        json_key = f"{tag:08X}"
        element_path = [*path, json_key]
        raw: object = dataset.get_item(tag, keep_deferred=True)
        if isinstance(raw, RawDataElement):
            vr = _raw_vr(raw)
            deferred = raw.value is None and raw.length not in (0, UNDEFINED_LENGTH)
            length = None if raw.length == UNDEFINED_LENGTH else raw.length
            if _is_bulk(tag, vr, length, deferred):
                result[json_key] = {
                    "vr": vr,
                    "BulkDataURI": BULKDATA_URI_PREFIX + bulkdata_path(element_path),
                }
                continue
        try:
            element = dataset[tag]
            if element.VR == "SQ":
                items = [
                    dataset_to_json(item, [*element_path, str(index)])
                    for index, item in enumerate(element.value)
                ]
                result[json_key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                continue
            value = element.value
            length = len(value) if isinstance(value, bytes | bytearray) else None
            if _is_bulk(BaseTag(tag), str(element.VR), length, deferred=False) and value:
                result[json_key] = {
                    "vr": element.VR,
                    "BulkDataURI": BULKDATA_URI_PREFIX + bulkdata_path(element_path),
                }
                continue
            if element.VR in ("DS", "IS"):
                result[json_key] = _number_string_json(str(element.VR), raw, element.value)
                continue
            converted = element.to_json_dict(None, BULK_DATA_THRESHOLD_BYTES)
            if "Value" in converted:
                converted["Value"] = _clean_values(str(element.VR), converted["Value"])
            result[json_key] = converted
        except Exception as error:  # pydicom raises many types on malformed values
            logger.warning("left element %s out of the metadata: %s", json_key, error)
    return result


def _number_from_string(text: str, vr: str) -> int | float | str | None:
    """Return a DS or IS value as a JSON number, or as its string when a number would
    lose digits, which PS3.18 F.2.3 allows. Empty values become null."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        if vr == "IS":
            return int(stripped)
        number = float(stripped)
    except ValueError:
        logger.warning("kept the invalid %s value %r as a string in the metadata", vr, stripped)
        return stripped
    if not math.isfinite(number):
        return stripped
    if (
        number.is_integer()
        and abs(number) < 2**53
        and "." not in stripped
        and "e" not in stripped.lower()
    ):
        return int(number)
    if Decimal(repr(number)) == Decimal(stripped):
        return number
    return stripped


def _number_string_json(vr: str, raw: object, value: object) -> dict[str, Any]:
    """Convert a DS or IS element from its encoded text, so empty values stay null."""
    if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes):
        text = raw.value.decode("ascii", errors="replace").rstrip("\x00")
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        items = cast(Iterable[object], value)
        text = "\\".join("" if item is None else str(item) for item in items)
    else:
        text = "" if value is None else str(value)
    if not text.strip():
        return {"vr": vr}
    return {"vr": vr, "Value": [_number_from_string(item, vr) for item in text.split("\\")]}


def _clean_values(vr: str, values: list[Any]) -> list[Any]:
    """Fix what pydicom's conversion leaves outside PS3.18 annex F.

    Person names lose empty component groups (F.2.2), and floating point values that
    JSON cannot hold (NaN, infinities) become the strings "NaN", "Infinity" and
    "-Infinity".
    """
    if vr == "PN":
        cleaned = []
        for name in values:
            groups = {key: group for key, group in name.items() if group} if name else {}
            cleaned.append(groups or None)
        return cleaned
    if vr in ("FL", "FD"):
        return [_finite_or_string(value) for value in values]
    return values


def _finite_or_string(value: Any) -> Any:
    # NOTE: annex F gives no encoding for NaN or infinity; these strings follow
    # JavaScript's names so that a JSON parser accepts the response.
    if isinstance(value, float) and not math.isfinite(value):
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    return value


def resolve_bulkdata_uris(metadata_json: str, instance_url: str) -> str:
    """Replace the relative BulkDataURI prefix in stored JSON text by ``instance_url``."""
    return metadata_json.replace(BULKDATA_URI_PREFIX, instance_url.rstrip("/") + "/")
