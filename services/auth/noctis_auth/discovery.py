"""The OpenID Connect discovery document (OpenID Connect Discovery 1.0, section 3).

Every endpoint URL is the issuer followed by the endpoint's path, so NOCTIS_AUTH_ISSUER
must be the URL at which this service's ``/auth`` routes are reachable.
"""

from __future__ import annotations

from typing import Any

from noctis_auth.clients import GRANT_TYPES
from noctis_auth.scopes import OIDC_SCOPES
from noctis_common.roles import Scope
from noctis_common.settings import Settings

CLIENT_AUTHENTICATION_METHODS = ["client_secret_basic", "client_secret_post", "none"]
CLAIMS = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "name",
    "preferred_username",
    "roles",
    "scope",
    "client_id",
    "referring_physician_name",
]


def openid_configuration(issuer: str, settings: Settings) -> dict[str, Any]:
    """Return the discovery document of the token service at ``issuer``."""
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/jwks",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "revocation_endpoint": f"{issuer}/revoke",
        "end_session_endpoint": f"{issuer}/logout",
        "scopes_supported": [*OIDC_SCOPES, *(scope.value for scope in Scope)],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": list(GRANT_TYPES),
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [settings.auth_signing_algorithm],
        "token_endpoint_auth_methods_supported": CLIENT_AUTHENTICATION_METHODS,
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTHENTICATION_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": CLAIMS,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
    }
