"""Status codes of the Query/Retrieve SCP (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 C).

C-FIND, C-MOVE and C-GET share these codes. Each code a Query/Retrieve handler
returns is named here, and the handler's docstring lists when it is sent.
"""

from __future__ import annotations

from pydicom.dataset import Dataset

from noctis_ingest_scp.statuses import NOT_AUTHORIZED, error_comment

__all__ = [
    "CANCEL",
    "IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS",
    "IDENTIFIER_NOT_DECODED",
    "MOVE_DESTINATION_UNKNOWN",
    "NOT_AUTHORIZED",
    "PENDING",
    "PENDING_WITH_UNSUPPORTED_KEYS",
    "SUB_OPERATIONS_WARNING",
    "SUCCESS",
    "UNABLE_TO_PERFORM_SUB_OPERATIONS",
    "UNABLE_TO_PROCESS",
    "status_with_comment",
]

SUCCESS = 0x0000
PENDING = 0xFF00
# C-FIND: an Optional Key of the request was not supported for existence or matching.
PENDING_WITH_UNSUPPORTED_KEYS = 0xFF01
CANCEL = 0xFE00
# C-MOVE and C-GET: sub-operations complete, one or more failed or had a warning.
SUB_OPERATIONS_WARNING = 0xB000

# NOT_AUTHORIZED (0x0124) is the general status of PS3.7 C that C-STORE and C-ECHO
# also send: PS3.4 C.4 defines no Query/Retrieve code for a missing permission.
# C-MOVE and C-GET: every sub-operation failed, or none could be started.
UNABLE_TO_PERFORM_SUB_OPERATIONS = 0xA702
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
# "Failed: Unable to process" (Cxxx): the index or the object store failed, or the
# request Identifier cannot be decoded.
UNABLE_TO_PROCESS = 0xC001
IDENTIFIER_NOT_DECODED = 0xC002


def status_with_comment(status: int, message: str) -> Dataset:
    """Build a status dataset with Status and an Error Comment that fits its LO VR."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = error_comment(message)
    return response
