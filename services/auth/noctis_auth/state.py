"""The token service's objects in one app: index, settings, signing keys, audit trail."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from noctis_auth.clock import utc_now
from noctis_auth.keys import SigningKeyStore
from noctis_auth.throttle import LoginThrottle
from noctis_common.audit import AuditTrail
from noctis_common.context import ArchiveContext
from noctis_common.db import Database
from noctis_common.settings import Settings


@dataclass
class AuthService:
    """The objects every handler of the token service works with.

    ``audit`` is None where no audit trail runs, as in the command-line tools.
    ``throttle`` contains the failed-login budgets of client addresses in this process.
    """

    database: Database
    settings: Settings
    keys: SigningKeyStore
    audit: AuditTrail | None = None
    clock: Callable[[], datetime] = field(default=utc_now)
    throttle: LoginThrottle = field(init=False)

    def __post_init__(self) -> None:
        self.throttle = LoginThrottle.from_settings(self.settings)

    @classmethod
    def from_context(cls, context: ArchiveContext) -> AuthService:
        return cls(
            context.database,
            context.settings,
            SigningKeyStore(context.database, context.settings),
            context.audit,
        )


def get_auth_service(request: Request) -> AuthService:
    """Return the app's AuthService, built from its ArchiveContext on first use."""
    service: AuthService | None = getattr(request.app.state, "auth_service", None)
    if service is None:
        service = AuthService.from_context(request.app.state.context)
        request.app.state.auth_service = service
    return service


Auth = Annotated[AuthService, Depends(get_auth_service)]
