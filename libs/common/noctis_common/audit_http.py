"""Audit records of HTTP requests: one per request to a route that needs a scope.

:class:`AuditMiddleware` runs when each request ends, rejected ones included, and records who
made it (the principal that :mod:`noctis_common.auth` put in the request state), from
which address, the path, the query string, the outcome from the status code, and the
studies concerned: the ``study_instance_uid`` path parameter, WADO-URI's ``studyUID``,
and whatever the handler added with :func:`note_audit_details` (the matches of a search,
the studies of a store request). The record of a successful store or delete is
journaled and synced to disk before the response starts, so the client never gets an
acknowledgement whose record a power loss could lose. Other records are journaled after the response
has been sent, so they cost the client no time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote_plus

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from noctis_common.audit import (
    DURABLE_EVENT_TYPES,
    AuditEvent,
    AuditEventType,
    AuditPatient,
    AuditTrail,
    Outcome,
    outcome_of_http_status,
)
from noctis_common.auth import ACCESS_TOKEN_PARAMETER, Principal
from noctis_common.client_address import request_client_address
from noctis_common.roles import Scope as TokenScope
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

MAX_UID_LENGTH = 64
EVENT_TYPES = {
    TokenScope.SEARCH: AuditEventType.QUERY,
    TokenScope.RETRIEVE: AuditEventType.RETRIEVE,
    TokenScope.STORE: AuditEventType.STORE,
    TokenScope.DELETE: AuditEventType.DELETE,
    TokenScope.ADMIN: AuditEventType.ADMIN,
    TokenScope.REPORT: AuditEventType.REPORT_READ,
    TokenScope.SIGN: AuditEventType.REPORT_SIGN,
}


class _State:
    """Request state attributes, read from a scope after the app has run."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def get(self, name: str) -> Any:
        return self.values.get(name)


def note_audit_details(
    state: Any,
    *,
    study_instance_uids: Iterable[str] = (),
    patients: Iterable[AuditPatient] = (),
    number_of_instances: int | None = None,
    event_type: AuditEventType | None = None,
) -> None:
    """Add what a handler learned to the audit record of its request.

    ``state`` is ``request.state``. Study UIDs are added to those already noted.
    """
    noted: list[str] = list(getattr(state, "audit_study_instance_uids", None) or [])
    noted.extend(study_instance_uids)
    state.audit_study_instance_uids = noted
    noted_patients: list[AuditPatient] = list(getattr(state, "audit_patients", None) or [])
    noted_patients.extend(patients)
    state.audit_patients = noted_patients
    if number_of_instances is not None:
        state.audit_number_of_instances = number_of_instances
    if event_type is not None:
        state.audit_event_type = event_type


def _query_without_token(query_string: bytes) -> str:
    """Return the query string without its ``access_token`` parameters.

    Names are compared percent-decoded, as Starlette reads them, so that
    ``access%5Ftoken=`` is dropped too.
    """
    text = query_string.decode("latin-1")
    kept = [
        item
        for item in text.split("&")
        if unquote_plus(item.partition("=")[0]).strip() != ACCESS_TOKEN_PARAMETER
    ]
    return "&".join(kept)


def _study_uids(
    scope: Scope, state: _State, principal: Principal | None, outcome: Outcome
) -> tuple[str, ...]:
    """Return the studies of a request's audit record, whose patients the flush adds.

    For a principal restricted to the studies naming them as referring physician, only
    the studies that the handler noted as returned count, and none for a failed
    request. A hidden study looks absent to them, so the record must not name its
    patient either. The request path and query still show which study was requested.
    """
    if principal is not None and principal.restricted_to_referring_physician:
        if outcome is not Outcome.SUCCESS:
            return ()
        noted = state.get("audit_study_instance_uids") or []
        return tuple(uid for uid in dict.fromkeys(noted) if 0 < len(uid) <= MAX_UID_LENGTH)
    uids: list[str] = []
    path_uid = scope.get("path_params", {}).get("study_instance_uid")
    if isinstance(path_uid, str):
        uids.append(path_uid)
    if scope.get("path") == "/wado":
        for item in scope.get("query_string", b"").decode("latin-1").split("&"):
            name, _, value = item.partition("=")
            if name == "studyUID" and value:
                uids.append(value)
    uids.extend(state.get("audit_study_instance_uids") or [])
    return tuple(uid for uid in dict.fromkeys(uids) if 0 < len(uid) <= MAX_UID_LENGTH)


def _client_address(scope: Scope) -> str:
    """Return the client address as the token service records it in login records.

    That is the TCP peer, or, when the peer is one of NOCTIS_TRUSTED_PROXIES and
    NOCTIS_TRUST_FORWARDED_HEADERS is on, the nearest untrusted address the proxies
    report. Apps without settings get the TCP peer.
    """
    settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
    if isinstance(settings, Settings):
        return request_client_address(Request(scope), settings)
    client = scope.get("client")
    return str(client[0]) if client else ""


def audit_event_of_request(scope: Scope, status_code: int) -> AuditEvent | None:
    """Return the audit event of a finished request, or None when its route needs no scope."""
    state = _State(scope.get("state") or {})
    required_scope = state.get("required_scope")
    if required_scope is None:
        return None
    principal: Principal | None = state.get("principal")
    event_type = state.get("audit_event_type") or EVENT_TYPES.get(
        required_scope, AuditEventType.ADMIN
    )
    description = state.get("audit_outcome_description") or f"HTTP {status_code}"
    outcome = outcome_of_http_status(status_code)
    return AuditEvent(
        event_type=event_type,
        outcome=outcome,
        user_id=principal.subject if principal is not None else "unauthenticated",
        user_name=principal.username if principal is not None else "",
        user_roles=tuple(sorted(principal.roles)) if principal is not None else (),
        client_address=_client_address(scope),
        session_id=principal.token_id if principal is not None else "",
        service="wado-uri" if scope.get("path") == "/wado" else "http",
        request=f"{scope.get('method', '')} {scope.get('path', '')}",
        query=_query_without_token(scope.get("query_string", b"")),
        outcome_description=description,
        study_instance_uids=_study_uids(scope, state, principal, outcome),
        patients=tuple(state.get("audit_patients") or ()),
        number_of_instances=state.get("audit_number_of_instances"),
    )


class AuditMiddleware:
    """Records an audit event for every request that reached a scope-protected route."""

    def __init__(self, app: ASGIApp, trail_of_app: Any) -> None:
        self.app = app
        # Returns the AuditTrail of the running app, or None before start-up.
        self.trail_of_app = trail_of_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        status_code = 500
        recorded = False

        async def recording_send(message: Message) -> None:
            nonlocal status_code, recorded
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                event = self._event(scope, status_code)
                # Only acknowledgements need the sync: 200, 202 (partly stored), 204.
                # Refused requests skip it, so that they cannot make the server sync.
                if (
                    event is not None
                    and event.event_type in DURABLE_EVENT_TYPES
                    and status_code < 400
                ):
                    recorded = True
                    # The sync blocks, so it waits in a worker thread.
                    await run_in_threadpool(self._journal, scope, event, True)
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            if not recorded:
                event = self._event(scope, status_code)
                if event is not None:
                    self._journal(scope, event, False)

    def _event(self, scope: Scope, status_code: int) -> AuditEvent | None:
        try:
            return audit_event_of_request(scope, status_code)
        except Exception:
            logger.exception("building the audit record of %s failed", scope.get("path"))
            return None

    def _journal(self, scope: Scope, event: AuditEvent, durable: bool) -> None:
        try:
            trail: AuditTrail | None = self.trail_of_app()
        except Exception:
            logger.exception("finding the audit trail for %s failed", scope.get("path"))
            return
        if trail is None:
            logger.error("no audit trail to record %s %s", scope.get("method"), scope.get("path"))
            return
        trail.record(event, durable=durable)
