"""Status codes the SCP returns and the response datasets that carry them.

Storage statuses are defined in PS3.4 B.2.3; the general ones (0x0110, 0x0111) in
PS3.7 C.4. Each code a handler returns is named here.
"""

from __future__ import annotations

import re

from pydicom.dataset import Dataset

from noctis_common.archive import FailureReason

SUCCESS = 0x0000
# Failure statuses, shared with STOW-RS through FailureReason.
PROCESSING_FAILURE = int(FailureReason.PROCESSING_FAILURE)
DUPLICATE_SOP_INSTANCE = int(FailureReason.DUPLICATE_SOP_INSTANCE)
OUT_OF_RESOURCES = int(FailureReason.OUT_OF_RESOURCES)
DATASET_DOES_NOT_MATCH_SOP_CLASS = int(FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS)
CANNOT_UNDERSTAND = int(FailureReason.CANNOT_UNDERSTAND)
# Refused: Not Authorized, a general status of PS3.7 Annex C. The SCP returns it when the
# peer list does not give the calling AE title the permission for the operation.
NOT_AUTHORIZED = 0x0124

# Error Comment (0000,0902) has VR LO: at most 64 characters of the default
# repertoire, without backslash or control characters (PS3.5 6.2).
ERROR_COMMENT_MAX_LENGTH = 64
_NOT_IN_LO = re.compile(r"[^\x20-\x5b\x5d-\x7e]")

# The archive's messages for these statuses begin with UIDs that would fill the 64
# characters; the response's Affected SOP Instance UID already names the instance.
FIXED_ERROR_COMMENTS = {
    DUPLICATE_SOP_INSTANCE: "a different object with this SOP Instance UID is stored",
    DATASET_DOES_NOT_MATCH_SOP_CLASS: "dataset SOP Class UID differs from Affected SOP Class UID",
}


def error_comment(message: str) -> str:
    """Fit ``message`` into an Error Comment value, marking a cut with '...'."""
    text = _NOT_IN_LO.sub("?", " ".join(message.split()))
    if len(text) > ERROR_COMMENT_MAX_LENGTH:
        text = text[: ERROR_COMMENT_MAX_LENGTH - 3].rstrip() + "..."
    return text


def failure_status(status: int, message: str) -> Dataset:
    """Build a response status dataset with Status and Error Comment."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = FIXED_ERROR_COMMENTS.get(status) or error_comment(message)
    return response
