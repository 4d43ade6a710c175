"""Conversion of a stored dataset to the DICOM JSON model (PS3.18 annex F).

Binary values that are large, deferred by the reader, or Pixel Data are replaced by a
BulkDataURI. The index keeps each URI relative to its instance, behind the prefix
:data:`BULKDATA_URI_PREFIX`; :func:`resolve_bulkdata_uris` turns it into an absolute
URL when a response is built, so stored metadata does not depend on the host name.
"""

from __future__ import annotations

import logging
from typing import Any

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
    for tag in dataset.keys():  # noqa: SIM118 (iterating a Dataset yields elements)
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
            result[json_key] = element.to_json_dict(None, BULK_DATA_THRESHOLD_BYTES)
        except Exception as error:  # pydicom raises many types on malformed values
            logger.warning("left element %s out of the metadata: %s", json_key, error)
    return result


def resolve_bulkdata_uris(metadata_json: str, instance_url: str) -> str:
    """Replace the relative BulkDataURI prefix in stored JSON text by ``instance_url``."""
    return metadata_json.replace(BULKDATA_URI_PREFIX, instance_url.rstrip("/") + "/")
