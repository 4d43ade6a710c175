"""Roles of a radiology department and the scopes each one grants.

The token service (``noctis_auth``) writes a token's ``roles`` claim and its ``scope``
claim from this table, and the services check the scope that an operation needs
(:mod:`noctis_common.auth`). With an external OpenID Connect provider, its role names
are mapped to these roles first and the scopes come from this table too.

======================  ==============================================================
Role                    Scopes
======================  ==============================================================
administrator           search retrieve store delete admin
radiologist             search retrieve store report sign
technologist            search retrieve store
referring_physician     search retrieve (only studies that name them, see below)
modality_gateway        store
ai_service              search retrieve store
report_service          search retrieve report
integration             search retrieve
======================  ==============================================================

The first four roles are for people, the last four for service clients, which get
tokens with the client credentials grant. The administrator manages users, clients and
signing keys and may delete studies, but does not report or sign: those are clinical
acts. Radiologists store the objects they create (key images, presentation states,
structured reports). Technologists correct and resend images but do not delete them.
A referring physician's token carries ``referring_physician_name``, and only studies
whose Referring Physician's Name matches it are visible to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from enum import StrEnum


class Scope(StrEnum):
    """An OAuth 2.0 scope: the kind of operation a token allows."""

    SEARCH = "search"  # QIDO-RS, C-FIND-like queries, the change feed
    RETRIEVE = "retrieve"  # WADO-RS, WADO-URI, rendered resources, metadata
    STORE = "store"  # STOW-RS
    DELETE = "delete"  # DELETE of studies, series and instances
    REPORT = "report"  # read and write reports
    SIGN = "sign"  # sign reports
    ADMIN = "admin"  # users, clients, signing keys, the audit trail


class Role(StrEnum):
    """A role of a person or of a service client."""

    ADMINISTRATOR = "administrator"
    RADIOLOGIST = "radiologist"
    TECHNOLOGIST = "technologist"
    REFERRING_PHYSICIAN = "referring_physician"
    MODALITY_GATEWAY = "modality_gateway"
    AI_SERVICE = "ai_service"
    REPORT_SERVICE = "report_service"
    INTEGRATION = "integration"


ROLE_NAMES = frozenset(role.value for role in Role)
USER_ROLES = frozenset(
    {Role.ADMINISTRATOR, Role.RADIOLOGIST, Role.TECHNOLOGIST, Role.REFERRING_PHYSICIAN}
)
CLIENT_ROLES = frozenset(
    {Role.MODALITY_GATEWAY, Role.AI_SERVICE, Role.REPORT_SERVICE, Role.INTEGRATION}
)

ROLE_SCOPES: Mapping[Role, frozenset[Scope]] = {
    Role.ADMINISTRATOR: frozenset(
        {Scope.SEARCH, Scope.RETRIEVE, Scope.STORE, Scope.DELETE, Scope.ADMIN}
    ),
    Role.RADIOLOGIST: frozenset(
        {Scope.SEARCH, Scope.RETRIEVE, Scope.STORE, Scope.REPORT, Scope.SIGN}
    ),
    Role.TECHNOLOGIST: frozenset({Scope.SEARCH, Scope.RETRIEVE, Scope.STORE}),
    Role.REFERRING_PHYSICIAN: frozenset({Scope.SEARCH, Scope.RETRIEVE}),
    Role.MODALITY_GATEWAY: frozenset({Scope.STORE}),
    Role.AI_SERVICE: frozenset({Scope.SEARCH, Scope.RETRIEVE, Scope.STORE}),
    Role.REPORT_SERVICE: frozenset({Scope.SEARCH, Scope.RETRIEVE, Scope.REPORT}),
    Role.INTEGRATION: frozenset({Scope.SEARCH, Scope.RETRIEVE}),
}


def scopes_for_roles(roles: Iterable[str]) -> frozenset[Scope]:
    """Return the union of the scopes of ``roles``; names that are no role grant nothing."""
    scopes: set[Scope] = set()
    for name in roles:
        if name in ROLE_NAMES:
            scopes |= ROLE_SCOPES[Role(name)]
    return frozenset(scopes)


def parse_roles(names: Iterable[str]) -> list[Role]:
    """Return ``names`` as roles, in table order, without duplicates.

    Raises ValueError naming the first unknown role and listing the known ones.
    """
    requested: set[Role] = set()
    for name in names:
        try:
            requested.add(Role(name))
        except ValueError:
            known = ", ".join(role.value for role in Role)
            raise ValueError(f"unknown role {name!r}; known roles: {known}") from None
    return [role for role in Role if role in requested]


def format_scope(scopes: Iterable[Scope]) -> str:
    """Return ``scopes`` as an OAuth 2.0 scope string, space-separated in table order."""
    granted = set(scopes)
    return " ".join(scope.value for scope in Scope if scope in granted)
