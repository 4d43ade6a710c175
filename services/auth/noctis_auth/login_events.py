"""The record of each login: one log line, and an event in the audit trail."""

from __future__ import annotations

import logging

from noctis_common.audit import AuditTrail

logger = logging.getLogger(__name__)

# The user recorded for a login with a username that no account has. It cannot be a
# real username, which has no spaces or parentheses.
UNKNOWN_USERNAME = "(unknown username)"


def record_login(
    audit: AuditTrail | None,
    username: str | None,
    client_address: str,
    *,
    succeeded: bool,
    method: str,
    reason: str = "",
) -> None:
    """Log and audit a login attempt; ``username`` is None when no account has that name.

    The name an unknown user typed is recorded nowhere, because people type their
    password into the username field by mistake.
    """
    recorded_name = username if username is not None else UNKNOWN_USERNAME
    if succeeded:
        logger.info("login of %s from %s by %s succeeded", recorded_name, client_address, method)
    else:
        logger.info(
            "login of %s from %s by %s failed: %s", recorded_name, client_address, method, reason
        )
    if audit is not None:
        audit.record_login(
            username=recorded_name,
            client_address=client_address,
            succeeded=succeeded,
            description=f"{method}: {reason}" if reason else method,
        )
