"""Export of audit records as DICOM audit messages (PS3.15 A.5, as IHE ATNA uses them).

Each record becomes one ``AuditMessage`` element that validates against the audit
message schema of PS3.15 A.5.1 (``audit_message.rng`` beside this module, in RELAX NG
XML syntax). The event codes follow PS3.15 A.5.3 and the DCM codes of PS3.16:

=============  ==========================================  =======================
Event type     EventID                                     EventActionCode
=============  ==========================================  =======================
query          110112 Query                                E
retrieve       110104 DICOM Instances Transferred          R
store          110104 DICOM Instances Transferred          C
delete         110105 DICOM Study Deleted                  D
login, logout  110114 User Authentication (type 110122,    E
               110123)
audit-read     110101 Audit Log Used                       R
admin          110113 Security Alert                       E
report-*       110103 DICOM Instances Accessed             R or U
=============  ==========================================  =======================

An export of several records is an ``AuditMessages`` element around their messages:
the schema defines one message per document, so each child is what validates.
"""

from __future__ import annotations

import base64
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree

from noctis_common.audit import AuditEventType
from noctis_common.db.models import AuditRecord

AUDIT_MESSAGE_SCHEMA = Path(__file__).with_name("audit_message.rng")
STUDY_ROOT_FIND_SOP_CLASS_UID = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass(frozen=True)
class Code:
    """A coded value: csd-code, codeSystemName and originalText (the code meaning)."""

    value: str
    scheme: str
    meaning: str

    def element(self, parent: ElementTree.Element, name: str) -> ElementTree.Element:
        return ElementTree.SubElement(
            parent,
            name,
            {"csd-code": self.value, "codeSystemName": self.scheme, "originalText": self.meaning},
        )


QUERY = Code("110112", "DCM", "Query")
INSTANCES_TRANSFERRED = Code("110104", "DCM", "DICOM Instances Transferred")
STUDY_DELETED = Code("110105", "DCM", "DICOM Study Deleted")
USER_AUTHENTICATION = Code("110114", "DCM", "User Authentication")
LOGIN = Code("110122", "DCM", "Login")
LOGOUT = Code("110123", "DCM", "Logout")
AUDIT_LOG_USED = Code("110101", "DCM", "Audit Log Used")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
INSTANCES_ACCESSED = Code("110103", "DCM", "DICOM Instances Accessed")
SOURCE_ROLE = Code("110153", "DCM", "Source Role ID")
DESTINATION_ROLE = Code("110152", "DCM", "Destination Role ID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")

EVENT_IDS: dict[str, Code] = {
    AuditEventType.QUERY: QUERY,
    AuditEventType.RETRIEVE: INSTANCES_TRANSFERRED,
    AuditEventType.STORE: INSTANCES_TRANSFERRED,
    AuditEventType.DELETE: STUDY_DELETED,
    AuditEventType.LOGIN: USER_AUTHENTICATION,
    AuditEventType.LOGOUT: USER_AUTHENTICATION,
    AuditEventType.AUDIT_READ: AUDIT_LOG_USED,
    AuditEventType.ADMIN: SECURITY_ALERT,
    AuditEventType.REPORT_READ: INSTANCES_ACCESSED,
    AuditEventType.REPORT_WRITE: INSTANCES_ACCESSED,
    AuditEventType.REPORT_SIGN: INSTANCES_ACCESSED,
}
EVENT_TYPE_CODES: dict[str, Code] = {AuditEventType.LOGIN: LOGIN, AuditEventType.LOGOUT: LOGOUT}
# (role of the requesting user, role of the archive) for events that move data.
PARTICIPANT_ROLES: dict[str, tuple[Code, Code]] = {
    AuditEventType.QUERY: (SOURCE_ROLE, DESTINATION_ROLE),
    AuditEventType.RETRIEVE: (DESTINATION_ROLE, SOURCE_ROLE),
    AuditEventType.STORE: (SOURCE_ROLE, DESTINATION_ROLE),
}


def _event_date_time(value: datetime) -> str:
    # SQLite returns the stored UTC times without their offset.
    aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return aware.isoformat()


def _network_access_point_type(address: str) -> str:
    """Return NetworkAccessPointTypeCode: 2 for an IP address, 1 for a machine name."""
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "1"
    return "2"


def _add_event_identification(message: ElementTree.Element, record: AuditRecord) -> None:
    identification = ElementTree.SubElement(
        message,
        "EventIdentification",
        {
            "EventActionCode": record.event_action,
            "EventDateTime": _event_date_time(record.event_time),
            "EventOutcomeIndicator": str(record.outcome),
        },
    )
    EVENT_IDS.get(record.event_type, SECURITY_ALERT).element(identification, "EventID")
    type_code = EVENT_TYPE_CODES.get(record.event_type)
    if type_code is not None:
        type_code.element(identification, "EventTypeCode")
    if record.outcome_description:
        ElementTree.SubElement(
            identification, "EventOutcomeDescription"
        ).text = record.outcome_description


def _add_active_participants(
    message: ElementTree.Element, record: AuditRecord, audit_source_id: str
) -> None:
    roles = PARTICIPANT_ROLES.get(record.event_type)
    user = ElementTree.SubElement(
        message,
        "ActiveParticipant",
        {"UserID": record.user_id or "unknown", "UserIsRequestor": "true"},
    )
    if roles is not None:
        roles[0].element(user, "RoleIDCode")
    if record.user_name:
        user.set("UserName", record.user_name)
    if record.calling_ae_title and record.calling_ae_title != record.user_id:
        user.set("AlternativeUserID", record.calling_ae_title)
    if record.network_access_point:
        user.set("NetworkAccessPointID", record.network_access_point)
        user.set(
            "NetworkAccessPointTypeCode", _network_access_point_type(record.network_access_point)
        )
    archive = ElementTree.SubElement(
        message,
        "ActiveParticipant",
        {"UserID": audit_source_id, "UserIsRequestor": "false"},
    )
    if roles is not None:
        roles[1].element(archive, "RoleIDCode")


def _add_participant_objects(message: ElementTree.Element, record: AuditRecord) -> None:
    if record.event_type == AuditEventType.QUERY:
        query_object = ElementTree.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": STUDY_ROOT_FIND_SOP_CLASS_UID,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "24",
            },
        )
        SOP_CLASS_UID.element(query_object, "ParticipantObjectIDTypeCode")
        ElementTree.SubElement(query_object, "ParticipantObjectQuery").text = base64.b64encode(
            record.query.encode("utf-8")
        ).decode("ascii")
    studies = [item for item in record.objects if item.object_type == "study"]
    for study in studies:
        element = ElementTree.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": study.object_id,
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "3",
            },
        )
        STUDY_INSTANCE_UID.element(element, "ParticipantObjectIDTypeCode")
        ElementTree.SubElement(element, "ParticipantObjectName").text = study.object_id
        if record.number_of_instances is not None and len(studies) == 1:
            description = ElementTree.SubElement(element, "ParticipantObjectDescription")
            ElementTree.SubElement(
                description, "SOPClass", {"NumberOfInstances": str(record.number_of_instances)}
            )
    for patient in (item for item in record.objects if item.object_type == "patient"):
        element = ElementTree.SubElement(
            message,
            "ParticipantObjectIdentification",
            {
                "ParticipantObjectID": patient.object_id,
                "ParticipantObjectTypeCode": "1",
                "ParticipantObjectTypeCodeRole": "1",
            },
        )
        PATIENT_NUMBER.element(element, "ParticipantObjectIDTypeCode")
        ElementTree.SubElement(element, "ParticipantObjectName").text = (
            patient.object_name or patient.object_id
        )


def audit_message(record: AuditRecord) -> ElementTree.Element:
    """Return the DICOM audit message (PS3.15 A.5.1) of one audit record."""
    audit_source_id = record.audit_source_id or "noctis"
    message = ElementTree.Element("AuditMessage")
    _add_event_identification(message, record)
    _add_active_participants(message, record, audit_source_id)
    source = ElementTree.SubElement(
        message, "AuditSourceIdentification", {"AuditSourceID": audit_source_id}
    )
    # Audit Source Type Code 4: application server process.
    ElementTree.SubElement(source, "AuditSourceTypeCode", {"csd-code": "4"})
    _add_participant_objects(message, record)
    return message


def audit_message_document(record: AuditRecord) -> bytes:
    """Return one record as an XML document whose root is its ``AuditMessage``."""
    document: bytes = ElementTree.tostring(
        audit_message(record), encoding="utf-8", xml_declaration=True
    )
    return document


def audit_messages_document(records: Iterable[AuditRecord]) -> bytes:
    """Return records as an ``AuditMessages`` document, one ``AuditMessage`` child each."""
    root = ElementTree.Element("AuditMessages")
    root.extend(audit_message(record) for record in records)
    document: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)
    return document
