"""The ``scope`` parameter: Noctis scopes from the roles, plus the OpenID Connect scopes.

A request that names no Noctis scope gets every scope its roles grant. A request that
names some gets those its roles grant (RFC 6749 3.3 lets the server issue fewer than
requested, and the response's ``scope`` lists them), and ``invalid_scope`` when its roles
grant none of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from noctis_auth.errors import invalid_scope
from noctis_common.roles import Scope, format_scope, scopes_for_roles

# ``openid`` requests an ID token. ``profile`` and ``offline_access`` are accepted
# because OpenID Connect clients send them. They change nothing, because tokens always
# carry the profile claims and logins always get a refresh token.
OIDC_SCOPES = ("openid", "profile", "offline_access")
NOCTIS_SCOPE_NAMES = frozenset(scope.value for scope in Scope)


@dataclass(frozen=True)
class RequestedScope:
    noctis: frozenset[Scope]
    oidc: frozenset[str]

    @property
    def wants_id_token(self) -> bool:
        return "openid" in self.oidc


def parse_scope(value: str | None) -> RequestedScope:
    """Parse a space-separated ``scope`` parameter; raise ``invalid_scope`` for unknown names."""
    noctis: set[Scope] = set()
    oidc: set[str] = set()
    for name in (value or "").split():
        if name in NOCTIS_SCOPE_NAMES:
            noctis.add(Scope(name))
        elif name in OIDC_SCOPES:
            oidc.add(name)
        else:
            known = " ".join([*OIDC_SCOPES, *(scope.value for scope in Scope)])
            raise invalid_scope(f"unknown scope {name!r}; known scopes: {known}")
    return RequestedScope(frozenset(noctis), frozenset(oidc))


def grant_scopes(requested: RequestedScope, roles: Iterable[str]) -> frozenset[Scope]:
    """Return the Noctis scopes to grant to a holder of ``roles``."""
    roles = tuple(roles)
    allowed = scopes_for_roles(roles)
    if not requested.noctis:
        return allowed
    granted = requested.noctis & allowed
    if not granted:
        raise invalid_scope(
            f"the roles {' '.join(roles) or '(none)'} grant none of the requested scopes "
            f"{format_scope(requested.noctis)}; they grant {format_scope(allowed) or 'none'}"
        )
    return granted


def scope_string(granted: Iterable[Scope], oidc: Iterable[str]) -> str:
    """Return the ``scope`` of a token response: OpenID Connect scopes, then Noctis scopes."""
    requested_oidc = set(oidc)
    names = [name for name in OIDC_SCOPES if name in requested_oidc]
    noctis = format_scope(granted)
    return " ".join([*names, noctis]) if noctis else " ".join(names)
