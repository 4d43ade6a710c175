"""C-FIND SCP of the Patient Root and Study Root models (PS3.4 C.4.1).

The request Identifier becomes a query of the matching engine that QIDO-RS uses
(:mod:`noctis_common.query`). Matches are read one page at a time, each page in its
own read transaction, and every match is sent as a Pending response as soon as its
page is read, so a C-CANCEL stops the query between two matches.

Each response Identifier carries the keys of the request that the archive supports,
the Unique Keys of the levels above the query's level, Query/Retrieve Level, Retrieve
AE Title (this SCP) and Instance Availability (always ONLINE) (PS3.4 C.4.1.1.3.2). Its
Specific Character Set is ISO_IR 192 (UTF-8) when a value is outside the default
repertoire, and absent otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, cast

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName
from pynetdicom.dimse_primitives import C_FIND
from pynetdicom.events import Event

from noctis_common.audit import AuditEventType, AuditTrail
from noctis_common.db import Database
from noctis_common.metrics import DIMSE_QUERY_RETRIEVE_REQUESTS, status_label
from noctis_common.query import (
    InvalidQueryError,
    describe_tag,
    find_matches,
    find_patient_matches,
    vr_of_tag,
)
from noctis_ingest_scp.audit_events import record_dimse_event
from noctis_ingest_scp.peers import Permission
from noctis_ingest_scp.qr_identifiers import (
    TIMEZONE_OFFSET_FROM_UTC_TAG,
    FindRequest,
    IdentifierError,
    parse_find_identifier,
)
from noctis_ingest_scp.qr_models import InformationModel, Level, model_of_sop_class
from noctis_ingest_scp.qr_statuses import (
    CANCEL,
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS,
    IDENTIFIER_NOT_DECODED,
    NOT_AUTHORIZED,
    PENDING,
    PENDING_WITH_UNSUPPORTED_KEYS,
    SUCCESS,
    UNABLE_TO_PROCESS,
    status_with_comment,
)
from noctis_ingest_scp.security import AccessControl, not_authorized_comment

logger = logging.getLogger(__name__)

FIND_PAGE_SIZE = 100
UTF8_CHARACTER_SET = "ISO_IR 192"
INSTANCE_AVAILABILITY_ONLINE = "ONLINE"

FindResponse = tuple[int | Dataset, Dataset | None]


def _no_bulk_data(_tag: str, _vr: str, _uri: str) -> None:
    """Leave bulk data empty: C-FIND responses carry no values fetched by URI."""
    return


def data_element(name: str, element: dict[str, Any]) -> DataElement:
    """Convert one DICOM JSON element to a pydicom element; bulk data becomes empty.

    A value that pydicom cannot convert is logged and sent empty, so one malformed
    stored value does not fail the whole response.
    """
    tag = int(name, 16)
    vr = str(element.get("vr") or vr_of_tag(tag))
    for value_key in ("Value", "InlineBinary"):
        if value_key in element:
            try:
                return DataElement.from_json(
                    Dataset, name, vr, element[value_key], value_key, _no_bulk_data
                )
            except Exception as error:  # pydicom raises many types on malformed values
                logger.warning("returned %s empty: %s", describe_tag(tag), error)
    return DataElement(tag, vr, None)


def _is_default_repertoire(value: object) -> bool:
    if isinstance(value, Sequence):
        return all(_dataset_is_default_repertoire(item) for item in value)
    if isinstance(value, MultiValue | list | tuple):
        return all(_is_default_repertoire(item) for item in value)
    if isinstance(value, str | PersonName):
        return str(value).isascii()
    return True


def _dataset_is_default_repertoire(dataset: Dataset) -> bool:
    return all(_is_default_repertoire(element.value) for element in dataset)


def render_identifier(
    attributes: dict[str, dict[str, Any]], request: FindRequest, retrieve_ae_title: str
) -> Dataset:
    """Build the Identifier of one Pending C-FIND response (PS3.4 C.4.1.1.3.2)."""
    identifier = Dataset()
    for name, element in attributes.items():
        tag = int(name, 16)
        if tag not in request.return_tags:
            continue
        if tag == TIMEZONE_OFFSET_FROM_UTC_TAG and "Value" not in element:
            continue  # PS3.4 C.4.1.1.3.2: never sent with a zero-length value
        identifier.add(data_element(name, element))
    identifier.QueryRetrieveLevel = request.level.term
    identifier.RetrieveAETitle = retrieve_ae_title
    identifier.InstanceAvailability = INSTANCE_AVAILABILITY_ONLINE
    if not _dataset_is_default_repertoire(identifier):
        identifier.SpecificCharacterSet = UTF8_CHARACTER_SET
    return identifier


def find_identifiers(
    database: Database, request: FindRequest, retrieve_ae_title: str
) -> Iterator[Dataset]:
    """Yield the response Identifier of each match, reading the index page by page.

    Raises :class:`InvalidQueryError` when the engine rejects a key value.

    NOTE: pages are read by offset in separate transactions, so an entity indexed
    while a long query runs can shift a page: one match may then be sent twice or
    not at all.
    """
    offset = 0
    while True:
        with database.read_session() as session:
            if request.level is Level.PATIENT:
                patient_page = find_patient_matches(
                    session, request.patient_query(offset, FIND_PAGE_SIZE)
                )
                found = [match.attributes for match in patient_page.matches]
                more_matches = patient_page.more_matches
            else:
                page = find_matches(session, request.query(offset, FIND_PAGE_SIZE))
                found = [match.attributes for match in page.matches]
                more_matches = page.more_matches
        for attributes in found:
            yield render_identifier(attributes, request, retrieve_ae_title)
        if not more_matches:
            return
        offset += len(found)


def _match_keywords(request: FindRequest) -> str:
    return ",".join(describe_tag(tag) for tag, _ in request.match_keys) or "none"


def _describe_query(request: FindRequest) -> str:
    """Return the level and match keys of a request, for the audit record (may hold PHI)."""
    keys = "; ".join(f"{describe_tag(tag)}={value}" for tag, value in request.match_keys)
    return f"{request.level.term}: {keys}" if keys else request.level.term


def handle_c_find(
    event: Event,
    database: Database,
    access: AccessControl,
    ae_title: str,
    audit: AuditTrail | None = None,
) -> Iterator[FindResponse]:
    """Respond to a C-FIND request of the Patient Root or Study Root model (PS3.4 C.4.1).

    Yields
    ------
    (int or pydicom.dataset.Dataset, pydicom.dataset.Dataset or None)
        * ``0xFF00`` Pending with the Identifier of one match, or ``0xFF01`` when a
          key of the request was not supported for matching or for return.
        * ``0xFE00`` Cancel: a C-CANCEL arrived before the last match was sent.
        * ``0x0124`` Refused: Not Authorized: the calling AE title lacks the
          ``query`` permission.
        * ``0xA900`` Identifier Does Not Match SOP Class: the Query/Retrieve Level is
          missing or not in the model, a Unique Key of a level above is missing or not
          a single value, or a key value is invalid for its VR.
        * ``0xC001`` Unable to Process: the index query failed; logged with its
          traceback.
        * ``0xC002`` Unable to Process: the Identifier cannot be decoded.

        Failures carry an Error Comment. pynetdicom sends the final ``0x0000``
        Success after the last Pending response.

    Each request is recorded in ``audit`` with the studies of the matches sent.
    """
    started = time.monotonic()
    request = cast(C_FIND, event.request)
    calling_ae_title = event.assoc.requestor.ae_title
    # The SCP accepts C-FIND contexts of these two models only, so the fallback is unused.
    model = model_of_sop_class(str(request.AffectedSOPClassUID)) or InformationModel.STUDY_ROOT
    matched_studies: list[str] = []
    query = ""

    def log_outcome(status: int, matches: int, detail: str) -> None:
        record_dimse_event(
            audit,
            event.assoc,
            event_type=AuditEventType.QUERY,
            command=f"C-FIND {model.title}",
            status=status,
            study_instance_uids=dict.fromkeys(matched_studies),
            query=query,
        )
        DIMSE_QUERY_RETRIEVE_REQUESTS.labels(command="C-FIND", status=status_label(status)).inc()
        logger.info(
            "C-FIND %s from %s: %d matches, status 0x%04X%s, %.0f ms",
            model.title,
            calling_ae_title,
            matches,
            status,
            detail,
            (time.monotonic() - started) * 1000,
        )

    if not access.is_allowed(event, Permission.QUERY):
        log_outcome(NOT_AUTHORIZED, 0, ": not authorized")
        message = not_authorized_comment(calling_ae_title, Permission.QUERY)
        yield status_with_comment(NOT_AUTHORIZED, message), None
        return
    try:
        find_request = parse_find_identifier(event.identifier, model)
    except IdentifierError as error:
        log_outcome(error.status, 0, f": {error.message}")
        yield status_with_comment(error.status, error.message), None
        return
    except Exception as error:  # pydicom raises many types on an undecodable Identifier
        log_outcome(IDENTIFIER_NOT_DECODED, 0, f": {type(error).__name__}")
        message = f"the Identifier cannot be decoded: {error}"
        yield status_with_comment(IDENTIFIER_NOT_DECODED, message), None
        return

    query = _describe_query(find_request)
    pending = PENDING if find_request.all_keys_supported else PENDING_WITH_UNSUPPORTED_KEYS
    detail = f", {find_request.level.term} level, keys {_match_keywords(find_request)}"
    sent = 0
    try:
        for identifier in find_identifiers(database, find_request, ae_title):
            if event.is_cancelled:
                log_outcome(CANCEL, sent, detail)
                yield CANCEL, None
                return
            yield pending, identifier
            matched_studies.append(str(identifier.get("StudyInstanceUID", "")))
            sent += 1
    except InvalidQueryError as error:
        # The engine's message quotes the rejected value, which may be a patient's, so
        # only the keys reach the log.
        log_outcome(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, sent, f"{detail}, a value is invalid")
        yield status_with_comment(IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS, str(error)), None
        return
    except Exception:
        logger.exception("C-FIND from %s failed while reading the index", calling_ae_title)
        log_outcome(UNABLE_TO_PROCESS, sent, detail)
        message = "the index query failed; the archive log has the details"
        yield status_with_comment(UNABLE_TO_PROCESS, message), None
        return
    if find_request.unsupported_keywords or find_request.unmatched_keywords:
        detail += (
            f", not matched: {','.join(find_request.unmatched_keywords) or 'none'}"
            f", not supported: {','.join(find_request.unsupported_keywords) or 'none'}"
        )
    log_outcome(SUCCESS, sent, detail)
