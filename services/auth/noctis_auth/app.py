"""Mounting the token service in an app built by :func:`noctis_common.web.create_app`."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from noctis_auth.log_redaction import install_access_log_redaction
from noctis_auth.routes import router
from noctis_auth.state import AuthService
from noctis_auth.tokens import jwks_document
from noctis_common.auth import set_local_key_source
from noctis_common.context import ArchiveContext

logger = logging.getLogger(__name__)


def mount_token_service(app: FastAPI, context: ArchiveContext) -> AuthService:
    """Serve the ``/auth`` routes in ``app`` and let its APIs verify tokens in-process.

    Call it before the app starts, after the index is migrated. With NOCTIS_AUTH_MODE
    ``internal`` and no NOCTIS_AUTH_JWKS_URL, the app's other routes verify tokens
    against these keys without an HTTP request.
    """
    settings = context.settings
    if settings.auth_key_overlap_s < settings.auth_access_token_lifetime_s:
        logger.warning(
            "NOCTIS_AUTH_KEY_OVERLAP_S (%d s) is shorter than "
            "NOCTIS_AUTH_ACCESS_TOKEN_LIFETIME_S (%d s): after a key rotation, tokens the "
            "old key signed stop verifying before they expire; raise the overlap",
            settings.auth_key_overlap_s,
            settings.auth_access_token_lifetime_s,
        )
    service = AuthService.from_context(context)
    # Creates the first signing key, so the JWKS is never empty.
    service.keys.signing_key()
    app.state.auth_service = service
    app.include_router(router)
    set_local_key_source(app, lambda: jwks_document(service.keys))
    install_access_log_redaction()
    return service
