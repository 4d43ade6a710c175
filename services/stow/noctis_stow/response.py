"""The Store Instances Response (PS3.18 section 10.5.3 and annex I) and its status code."""

from __future__ import annotations

import json
from collections.abc import Sequence
from xml.etree import ElementTree

from fastapi.responses import JSONResponse
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from starlette import status
from starlette.responses import Response

from noctis_common.archive import FailureReason
from noctis_common.web import instance_url, study_url
from noctis_stow.media_types import DICOM_XML
from noctis_stow.request import StowRequestError
from noctis_stow.store import FailedPart, StoredPart, StoreOutcome

NATIVE_DICOM_MODEL_NAMESPACE = "http://dicom.nema.org/PS3.19/models/NativeDICOM"
WARNING_AGENT = "noctis"
# Caps on the Warning header fields that carry failure messages, so that a request
# with many failed parts cannot produce an oversized response header.
MAX_WARNING_FIELDS = 20
MAX_WARNING_TEXT_LENGTH = 300


def store_status_code(outcome: StoreOutcome) -> int:
    """Select the status code of PS3.18 table 10.5.3-1 for the per-instance results.

    200 when every instance is stored without warnings, 202 when some are stored but
    others failed or carry warnings, 409 when none is stored. When none is stored only
    because the object store or the index database failed (A700H for every part), the
    request had no conflict, so the status is 503, which clients retry.
    """
    if not outcome.stored:
        if all(part.failure_reason == FailureReason.OUT_OF_RESOURCES for part in outcome.failed):
            return status.HTTP_503_SERVICE_UNAVAILABLE
        return status.HTTP_409_CONFLICT
    has_warnings = any(part.warning_reason is not None for part in outcome.stored)
    if outcome.failed or has_warnings:
        return status.HTTP_202_ACCEPTED
    return status.HTTP_200_OK


def _study_retrieve_url(outcome: StoreOutcome, base_url: str) -> str:
    """Return the study's URL when the stored instances belong to one study, else ''.

    RetrieveURL is Type 2, so it is sent empty when instances of several studies or
    none were stored.
    """
    studies = {part.instance.study_instance_uid for part in outcome.stored}
    if len(studies) == 1:
        return study_url(base_url, studies.pop())
    return ""


def _referenced_sop_item(part: StoredPart, base_url: str) -> Dataset:
    instance = part.instance
    item = Dataset()
    item.ReferencedSOPClassUID = instance.sop_class_uid
    item.ReferencedSOPInstanceUID = instance.sop_instance_uid
    item.RetrieveURL = instance_url(
        base_url,
        instance.study_instance_uid,
        instance.series_instance_uid,
        instance.sop_instance_uid,
    )
    if part.warning_reason is not None:
        item.WarningReason = part.warning_reason
    return item


def _failed_sop_item(part: FailedPart) -> Dataset:
    item = Dataset()
    # NOTE: a part whose UIDs could not be read gets empty UIDs here, although the SOP
    # Instance Reference Macro makes them Type 1. Its Warning field names the part number.
    item.ReferencedSOPClassUID = part.uids.sop_class_uid
    item.ReferencedSOPInstanceUID = part.uids.sop_instance_uid
    item.FailureReason = part.failure_reason
    return item


def build_store_response(outcome: StoreOutcome, base_url: str) -> Dataset:
    """Build the Store Instances Response Module (PS3.18 table I.1-1)."""
    dataset = Dataset()
    dataset.RetrieveURL = _study_retrieve_url(outcome, base_url)
    if outcome.failed:
        dataset.FailedSOPSequence = [_failed_sop_item(part) for part in outcome.failed]
    if outcome.stored:
        dataset.ReferencedSOPSequence = [
            _referenced_sop_item(part, base_url) for part in outcome.stored
        ]
    return dataset


def _warning_field(part: FailedPart) -> str:
    """Format a failure as an HTTP Warning value (RFC 2616 section 14.46): 299 agent "text"."""
    subject = f"part {part.part_number}"
    if part.uids.sop_instance_uid:
        subject += f" (SOP Instance UID {part.uids.sop_instance_uid})"
    text = f"{subject} failed with Failure Reason {part.failure_reason:04X}H: {part.message}"
    text = text[:MAX_WARNING_TEXT_LENGTH]
    # Header values carry printable Latin-1 only, and quotes and backslashes are escaped.
    text = "".join(
        character if " " <= character <= "~" or "\xa0" <= character <= "\xff" else "?"
        for character in text
    )
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'299 {WARNING_AGENT} "{text}"'


def warning_fields(failed: Sequence[FailedPart]) -> list[str]:
    """Return Warning header values for the first :data:`MAX_WARNING_FIELDS` failures."""
    fields = [_warning_field(part) for part in failed[:MAX_WARNING_FIELDS]]
    if len(failed) > MAX_WARNING_FIELDS:
        fields.append(f'299 {WARNING_AGENT} "{len(failed) - MAX_WARNING_FIELDS} more parts failed"')
    return fields


def _append_xml_element(parent: ElementTree.Element, element: DataElement) -> None:
    attributes = {"tag": f"{element.tag:08X}", "vr": str(element.VR)}
    keyword = keyword_for_tag(element.tag)
    if keyword:
        attributes["keyword"] = keyword
    node = ElementTree.SubElement(parent, "DicomAttribute", attributes)
    if element.VR == "SQ":
        for number, item in enumerate(element.value, start=1):
            item_node = ElementTree.SubElement(node, "Item", {"number": str(number)})
            for child in item:
                _append_xml_element(item_node, child)
        return
    if element.value in (None, ""):
        return
    values = element.value if element.VM > 1 else [element.value]
    for number, value in enumerate(values, start=1):
        ElementTree.SubElement(node, "Value", {"number": str(number)}).text = str(value)


def dataset_to_xml(dataset: Dataset) -> bytes:
    """Encode ``dataset`` in the Native DICOM Model XML of PS3.19.

    Covers the VRs of the Store Instances Response: strings, numbers and sequences.
    """
    root = ElementTree.Element(
        "NativeDicomModel",
        {"xmlns": NATIVE_DICOM_MODEL_NAMESPACE, "xml:space": "preserve"},
    )
    for element in dataset:
        _append_xml_element(root, element)
    return bytes(ElementTree.tostring(root, encoding="utf-8", xml_declaration=True))


def render_store_response(outcome: StoreOutcome, base_url: str, media_type: str) -> Response:
    """Render the Store Instances Response with its status code and Warning fields."""
    dataset = build_store_response(outcome, base_url)
    if media_type == DICOM_XML:
        content = dataset_to_xml(dataset)
    else:
        content = json.dumps(dataset.to_json_dict(), separators=(",", ":")).encode("utf-8")
    # The media type goes out without a charset parameter: clients such as
    # dicomweb-client compare the Content-Type with "application/dicom+json" exactly.
    response = Response(content, status_code=store_status_code(outcome), media_type=media_type)
    for value in warning_fields(outcome.failed):
        response.headers.append("Warning", value)
    return response


def render_request_error(error: StowRequestError) -> Response:
    """Render a rejected request as JSON ``{"detail": ...}``, FastAPI's error format."""
    return JSONResponse({"detail": error.detail}, status_code=error.status_code)
