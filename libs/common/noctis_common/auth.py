"""Access control of the HTTP APIs: OAuth 2.0 bearer tokens checked on every route.

Every protected router declares the scope its routes need, once::

    router = APIRouter(dependencies=[Depends(require_scope(Scope.SEARCH))])

and a handler that needs the caller declares ``principal: CurrentPrincipal``. The
dependency reads the bearer token from the ``Authorization`` header (RFC 6750 2.1).
PyJWT then checks its asymmetric signature against the JSON Web Key Set
(:mod:`noctis_common.auth_keys`), ``exp``, ``iat`` and ``nbf`` with
``NOCTIS_AUTH_CLOCK_SKEW_S`` of leeway, and the ``iss`` and ``aud`` claims. Then:

- no token: 401 with ``WWW-Authenticate: Bearer realm="noctis"``;
- an invalid token: 401 with ``error="invalid_token"`` and an ``error_description``
  that names the failed check (expired, bad signature, unknown key id, wrong issuer, ...);
- a valid token without the scope: 403 with ``error="insufficient_scope"`` and a JSON
  body ``{"detail": ..., "missing_scope": ...}``.

Routes that browsers open as plain links (WADO-URI, rendered images and thumbnails in
``<img>`` tags) cannot send headers, so routers that pass ``query_token=True`` also
accept the token as the ``access_token`` query parameter (RFC 6750 2.3). Such URLs end
up in browser histories and proxy logs: prefer the header wherever the client can set
it. Noctis's own access log lines drop the parameter (:class:`AccessTokenLogFilter`).

Roles grant scopes (:mod:`noctis_common.roles`), and the ``scope`` claim can only
narrow them. With ``internal`` the roles are the ``roles`` claim, and the principal gets
the scopes of the ``scope`` claim that its roles grant. With ``NOCTIS_AUTH_MODE=oidc``
the roles of the claim that ``NOCTIS_AUTH_ROLE_CLAIM`` names are mapped to Noctis
roles through ``NOCTIS_AUTH_ROLE_MAPPING``. The principal gets their scopes, narrowed
to those the ``scope`` claim names when it names any Noctis scope.

Where the keys come from: ``NOCTIS_AUTH_JWKS_URL`` when set; else, with ``internal``,
the token service of this process (:func:`set_local_key_source`); else the
``jwks_uri`` of ``NOCTIS_AUTH_ISSUER``'s OpenID discovery document. The key location is
never derived from request headers, which a client controls.

With ``NOCTIS_AUTH_MODE=off`` every request gets :data:`ANONYMOUS`, which holds every
scope; :mod:`noctis_common.auth_config` allows that only on a loopback listener.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any

import jwt
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse

from noctis_common.auth_keys import (
    ACCEPTED_ALGORITHMS,
    JWKSFetcher,
    KeySet,
    KeySetUnavailableError,
    UnknownKeyError,
    discovery_jwks_fetcher,
    http_jwks_fetcher,
)
from noctis_common.failure_log import RepeatedFailureLog
from noctis_common.roles import ROLE_NAMES, Role, Scope, scopes_for_roles
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

REALM = "noctis"
ACCESS_TOKEN_PARAMETER = "access_token"  # noqa: S105 (a parameter name, no secret)
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub"]
# Seconds a client should wait before it retries a 503 caused by an unreachable key set.
# The key set cache retries the fetch at most once a second.
KEY_SET_RETRY_AFTER_S = 5
# Roles limited to some studies. A principal whose only role is referring physician
# may read only the studies that name them.
RESTRICTED_ROLES = frozenset({Role.REFERRING_PHYSICIAN.value})


@dataclass(frozen=True)
class Principal:
    """The caller of a request: the verified claims of their token, as Noctis uses them."""

    subject: str
    username: str
    roles: frozenset[str]
    scopes: frozenset[Scope]
    client_address: str
    # The DICOM person name that limits which studies this principal may read, when
    # restricted_to_referring_physician is set. None then allows no study at all.
    referring_physician_name: str | None = None
    restricted_to_referring_physician: bool = False
    token_id: str = ""
    authenticated: bool = True
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


def anonymous_principal(client_address: str) -> Principal:
    """Return the principal of every request while auth is off: all scopes, no limits."""
    return Principal(
        subject="anonymous",
        username="anonymous",
        roles=frozenset(),
        scopes=frozenset(Scope),
        client_address=client_address,
        authenticated=False,
    )


class AuthenticationError(Exception):
    """The request carries no valid token (401)."""

    def __init__(
        self,
        description: str,
        *,
        token_present: bool = True,
        unavailable: bool = False,
        invalid_request: bool = False,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.token_present = token_present
        # The token could not be checked because the key set is out of reach: a server
        # fault (503), not a reason for the client to log in again.
        self.unavailable = unavailable
        # The request itself is malformed, such as one with two tokens (RFC 6750 3.1
        # invalid_request, which gets status 400).
        self.invalid_request = invalid_request

    @property
    def www_authenticate(self) -> str:
        # RFC 6750 3.1: a request without credentials gets no error code.
        if not self.token_present:
            return f'Bearer realm="{REALM}"'
        error_code = "invalid_request" if self.invalid_request else "invalid_token"
        return (
            f'Bearer realm="{REALM}", error="{error_code}", '
            f'error_description="{challenge_text(self.description)}"'
        )


def challenge_text(description: str) -> str:
    """Return ``description`` as RFC 6750 allows in ``error_description``.

    Those are printable ASCII characters without ``"`` and backslash. Token headers that a
    client sends (``alg``, ``kid``, ``crit``) end up in the description, so a line break or
    a character outside Latin-1 there would otherwise make the response header invalid.
    """
    text = description.replace("\\", "").replace('"', "'")
    return "".join(character if " " <= character <= "~" else "?" for character in text)


class InsufficientScopeError(Exception):
    """The token is valid but lacks the scope the route needs (403)."""

    def __init__(self, scope: Scope, principal: Principal) -> None:
        granted = " ".join(sorted(principal.scopes)) or "none"
        super().__init__(
            f"this operation needs the {scope.value!r} scope, which the token of "
            f"{principal.username!r} does not grant (granted: {granted}); ask an "
            "administrator for a role that includes it"
        )
        self.scope = scope

    @property
    def www_authenticate(self) -> str:
        return f'Bearer realm="{REALM}", error="insufficient_scope", scope="{self.scope.value}"'


class AuthConfigurationError(RuntimeError):
    """The service cannot verify tokens: no key set is configured."""


def claim_at_path(claims: Mapping[str, Any], path: str) -> Any:
    """Return the claim at a dotted ``path`` such as ``realm_access.roles``, or None."""
    value: Any = claims
    for name in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(name)
    return value


def _string_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


class Authenticator:
    """Verifies tokens for one app and turns their claims into a :class:`Principal`."""

    def __init__(
        self, settings: Settings, request_base_url: Callable[[Request], str] | None = None
    ) -> None:
        self.settings = settings
        # Returns scheme, host and root path of a request (web.dicomweb_base_url's
        # rules), from which the default issuer is derived.
        self.request_base_url = request_base_url or (lambda request: str(request.base_url))
        self._key_set: KeySet | None = None
        # Set by the token service of this process (auth mode internal).
        self.local_key_source: JWKSFetcher | None = None
        # While the key set cannot be fetched, every request fails the same way.
        self.key_set_failure_log = RepeatedFailureLog(
            logger, "verifying a token against the signing key set"
        )

    @property
    def enabled(self) -> bool:
        return self.settings.auth_mode != "off"

    def key_set(self) -> KeySet:
        """Return the key set, choosing its source on first use."""
        if self._key_set is None:
            self._key_set = KeySet(
                self._key_source(),
                max_age_s=self.settings.auth_jwks_max_age_s,
                min_refresh_interval_s=self.settings.auth_jwks_min_refresh_interval_s,
            )
        return self._key_set

    def check_configuration(self) -> None:
        """Raise :class:`AuthConfigurationError` when tokens cannot be verified."""
        if self.enabled:
            self._key_source()

    def _key_source(self) -> JWKSFetcher:
        settings = self.settings
        if settings.auth_jwks_url:
            return http_jwks_fetcher(settings.auth_jwks_url)
        # With auth off, routes that require a token all the same (the token service's
        # admin API) verify it against the token service of this process.
        if settings.auth_mode in ("internal", "off") and self.local_key_source is not None:
            return self.local_key_source
        if settings.auth_issuer:
            return discovery_jwks_fetcher(settings.auth_issuer)
        raise AuthConfigurationError(
            "cannot verify tokens: this process runs no token service, and neither "
            "NOCTIS_AUTH_JWKS_URL nor NOCTIS_AUTH_ISSUER is set; set NOCTIS_AUTH_JWKS_URL to "
            "the token service's key set (such as http://AUTH-HOST:8080/auth/jwks)"
        )

    def expected_issuer(self, request: Request) -> str:
        """Return the issuer tokens must name: ``NOCTIS_AUTH_ISSUER``, else the base URL + /auth.

        The base URL is ``NOCTIS_PUBLIC_BASE_URL`` without ``/dicom-web``, or the
        request's, as the token service (``noctis_auth``) derives it too.
        """
        if self.settings.auth_issuer:
            return self.settings.auth_issuer.rstrip("/")
        return self.request_base_url(request).rstrip("/") + "/auth"

    def verify(self, token: str, expected_issuer: str) -> dict[str, Any]:
        """Return the verified claims of ``token``; raise :class:`AuthenticationError`."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationError(f"the token is malformed: {error}") from error
        algorithm = header.get("alg")
        if algorithm not in ACCEPTED_ALGORITHMS:
            raise AuthenticationError(
                f"the token's algorithm {algorithm!r} is not accepted; tokens must be "
                f"signed with one of {', '.join(sorted(ACCEPTED_ALGORITHMS))}"
            )
        kid = header.get("kid")
        try:
            key = self.key_set().find(kid if isinstance(kid, str) else None)
        except UnknownKeyError as error:
            raise AuthenticationError(
                f"{error}; the token was not signed by a known key"
            ) from error
        except KeySetUnavailableError as error:
            self.key_set_failure_log.failed(error)
            raise AuthenticationError(
                "the signing keys could not be fetched, so the token cannot be verified; "
                "retry later",
                unavailable=True,
            ) from error
        self.key_set_failure_log.succeeded()
        return self._decode(token, key, algorithm, expected_issuer)

    def _decode(
        self, token: str, key: jwt.PyJWK, algorithm: str, expected_issuer: str
    ) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[algorithm],
                audience=self.settings.auth_audience,
                issuer=expected_issuer,
                leeway=self.settings.auth_clock_skew_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as error:
            raise AuthenticationError("the token expired; get a new one") from error
        except jwt.InvalidAudienceError as error:
            raise AuthenticationError(
                f"the token is not for this service: its audience is not "
                f"{self.settings.auth_audience!r}"
            ) from error
        except jwt.InvalidIssuerError as error:
            raise AuthenticationError(f"the token was not issued by {expected_issuer!r}") from error
        except jwt.InvalidSignatureError as error:
            raise AuthenticationError("the token's signature is invalid") from error
        except jwt.ImmatureSignatureError as error:
            raise AuthenticationError("the token is not valid yet") from error
        except jwt.MissingRequiredClaimError as error:
            raise AuthenticationError(f"the token lacks the {error.claim!r} claim") from error
        except jwt.PyJWTError as error:
            raise AuthenticationError(f"the token is invalid: {error}") from error
        return claims

    def principal_from_claims(self, claims: Mapping[str, Any], client_address: str) -> Principal:
        """Build the principal of verified ``claims``: roles, scopes and restrictions."""
        settings = self.settings
        scope_names = set(_string_list(claims.get("scope")))
        claimed_scopes = {scope for scope in Scope if scope.value in scope_names}
        if settings.auth_mode == "oidc":
            mapping = settings.auth_role_map
            provider_roles = _string_list(claim_at_path(claims, settings.auth_role_claim))
            roles = {mapping.get(name, name) for name in provider_roles}
            roles &= ROLE_NAMES
            # A provider's scope claim lists what the client asked for ("openid
            # profile"), which any client can ask for: it narrows the roles' scopes
            # when it names Noctis scopes, and grants none by itself.
            granted = scopes_for_roles(roles)
            scopes = granted & claimed_scopes if claimed_scopes else set(granted)
        else:
            roles = set(_string_list(claims.get("roles"))) & ROLE_NAMES
            # The token service writes the scopes granted to the token's roles, or
            # fewer; a scope outside the roles' is dropped all the same.
            scopes = claimed_scopes & scopes_for_roles(roles)
        subject = str(claims.get("sub", ""))
        physician = claims.get(settings.auth_referring_physician_claim)
        return Principal(
            subject=subject,
            username=str(claims.get("preferred_username") or subject),
            roles=frozenset(roles),
            scopes=frozenset(scopes),
            client_address=client_address,
            referring_physician_name=physician if isinstance(physician, str) else None,
            restricted_to_referring_physician=bool(roles) and roles <= RESTRICTED_ROLES,
            token_id=str(claims.get("jti", "")),
            claims=dict(claims),
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _bearer_token(request: Request, query_token: bool) -> str | None:
    """Return the request's one bearer token, or ``None`` when it carries none.

    RFC 6750 2 allows one token per request. A request with two Authorization headers,
    or with the header and the query parameter, is ambiguous, because a proxy or the
    audit trail could read another token than the one checked. It is rejected.
    """
    headers = request.headers.getlist("authorization")
    if len(headers) > 1:
        raise AuthenticationError(
            f"the request has {len(headers)} Authorization headers; send exactly one",
            invalid_request=True,
        )
    header = headers[0] if headers else None
    if header and query_token and ACCESS_TOKEN_PARAMETER in request.query_params:
        raise AuthenticationError(
            f"the request has a token in both the Authorization header and the "
            f"{ACCESS_TOKEN_PARAMETER} query parameter; send only one",
            invalid_request=True,
        )
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError(
                "the Authorization header must be 'Bearer TOKEN'", token_present=True
            )
        return token.strip()
    if query_token:
        return request.query_params.get(ACCESS_TOKEN_PARAMETER) or None
    return None


def authenticate_request(
    request: Request, *, query_token: bool = False, token_required: bool = False
) -> Principal:
    """Return the request's principal, verifying its token once per request.

    With ``token_required`` a token is verified even while auth mode is ``off``.
    """
    cached: Principal | None = getattr(request.state, "principal", None)
    if cached is not None and (cached.authenticated or not token_required):
        return cached
    authenticator: Authenticator = request.app.state.authenticator
    address = client_address(request)
    if not authenticator.enabled and not token_required:
        principal = anonymous_principal(address)
    else:
        token = _bearer_token(request, query_token)
        if token is None:
            raise AuthenticationError(
                "this request needs a bearer token in the Authorization header",
                token_present=False,
            )
        claims = authenticator.verify(token, authenticator.expected_issuer(request))
        principal = authenticator.principal_from_claims(claims, address)
    request.state.principal = principal
    return principal


@dataclass(frozen=True)
class ScopeRequirement:
    """A dependency that admits requests whose token grants ``scope``.

    It notes the scope in ``request.state.required_scope`` first, so the audit trail
    records refused requests too (:mod:`noctis_common.audit_http`).
    """

    scope: Scope
    query_token: bool = False
    token_required: bool = False

    def __call__(self, request: Request) -> Principal:
        request.state.required_scope = self.scope
        principal = authenticate_request(
            request, query_token=self.query_token, token_required=self.token_required
        )
        if self.scope not in principal.scopes:
            raise InsufficientScopeError(self.scope, principal)
        return principal


def require_scope(
    scope: Scope, *, query_token: bool = False, token_required: bool = False
) -> ScopeRequirement:
    """Return the dependency of routes that need ``scope``; see :class:`ScopeRequirement`.

    With ``query_token`` the token may come as the ``access_token`` query parameter.
    With ``token_required`` the routes need a token even while auth mode is ``off``:
    the token service's admin API uses it, so that user accounts are never open to
    changes without one.
    """
    return ScopeRequirement(scope, query_token, token_required)


def current_principal(request: Request) -> Principal:
    """Return the principal that the route's scope dependency authenticated."""
    return authenticate_request(request)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def has_scopes(principal: Principal, scopes: Iterable[Scope]) -> bool:
    return all(scope in principal.scopes for scope in scopes)


async def _authentication_error_response(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AuthenticationError)
    if error.unavailable:
        request.state.audit_outcome_description = f"HTTP 503: {error.description}"
        return JSONResponse(
            {"detail": error.description},
            status_code=503,
            headers={"Retry-After": str(KEY_SET_RETRY_AFTER_S)},
        )
    status_code = 400 if error.invalid_request else 401
    request.state.audit_outcome_description = f"HTTP {status_code}: {error.description}"
    return JSONResponse(
        {"detail": error.description},
        status_code=status_code,
        headers={"WWW-Authenticate": error.www_authenticate},
    )


async def _insufficient_scope_response(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, InsufficientScopeError)
    request.state.audit_outcome_description = f"HTTP 403: missing scope {error.scope.value}"
    return JSONResponse(
        {"detail": str(error), "missing_scope": error.scope.value},
        status_code=403,
        headers={"WWW-Authenticate": error.www_authenticate},
    )


class AccessTokenLogFilter(logging.Filter):
    """Replaces ``access_token`` query values in log records with ``<redacted>``.

    uvicorn's access log writes each request line with its query string, which
    contains the token when a browser link carries it. The name may come
    percent-encoded (``access%5Ftoken``), which Starlette decodes before the route
    reads the token, so every such spelling is redacted too.
    """

    PATTERN = re.compile(
        "("
        + "".join(
            f"(?:{re.escape(letter)}|%{ord(letter):02x})" for letter in ACCESS_TOKEN_PARAMETER
        )
        + r"=)[^&\s\"]*",
        re.IGNORECASE,
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                self.PATTERN.sub(r"\1<redacted>", value) if isinstance(value, str) else value
                for value in record.args
            )
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1<redacted>", record.msg)
        return True


_ACCESS_LOG_FILTER = AccessTokenLogFilter()


def install_access_control(
    app: FastAPI, settings: Settings, request_base_url: Callable[[Request], str] | None = None
) -> Authenticator:
    """Give ``app`` its authenticator and the 401 and 403 error responses."""
    authenticator = Authenticator(settings, request_base_url)
    app.state.authenticator = authenticator
    app.add_exception_handler(AuthenticationError, _authentication_error_response)
    app.add_exception_handler(InsufficientScopeError, _insufficient_scope_response)
    access_logger = logging.getLogger("uvicorn.access")
    if _ACCESS_LOG_FILTER not in access_logger.filters:
        access_logger.addFilter(_ACCESS_LOG_FILTER)
    return authenticator


def set_local_key_source(app: FastAPI, fetch: JWKSFetcher) -> None:
    """Let ``app`` verify tokens with the key set of the token service in this process.

    ``fetch`` returns the public JWKS document. It is used with auth mode ``internal``
    when ``NOCTIS_AUTH_JWKS_URL`` is unset.
    """
    authenticator: Authenticator = app.state.authenticator
    authenticator.local_key_source = fetch
