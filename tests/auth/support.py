"""Signing keys, tokens and a JWKS server on loopback for the access control tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from noctis_common.roles import ROLE_SCOPES, Role, format_scope

ISSUER = "https://pacs.example/auth"
AUDIENCE = "noctis"
TOKEN_LIFETIME_S = 300


@dataclass
class SigningKey:
    """A private key with its key id and algorithm."""

    kid: str
    algorithm: str
    private_key: Any

    @classmethod
    def generate(cls, algorithm: str = "ES256") -> SigningKey:
        private_key: Any
        if algorithm == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        else:
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(uuid.uuid4().hex[:12], algorithm, private_key)

    def public_jwk(self) -> dict[str, Any]:
        public_key = self.private_key.public_key()
        if self.algorithm == "ES256":
            jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(public_key))
        else:
            jwk = json.loads(RSAAlgorithm.to_jwk(public_key))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return jwk


@dataclass
class KeyServer:
    """A JWKS document served over HTTP on loopback; ``keys`` may change while it runs."""

    keys: list[SigningKey]
    port: int = 0
    requests: int = 0
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def jwks_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/jwks"

    def document(self) -> dict[str, Any]:
        return {"keys": [key.public_jwk() for key in self.keys]}


@contextmanager
def serving_keys(keys: list[SigningKey]) -> Iterator[KeyServer]:
    """Serve ``keys`` as a JWKS at ``/jwks`` on a free loopback port."""
    key_server = KeyServer(keys)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            key_server.requests += 1
            body = json.dumps(key_server.document()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    key_server.port = int(server.server_address[1])
    key_server._server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield key_server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def make_token(
    key: SigningKey,
    *,
    roles: tuple[Role, ...] = (),
    scope: str | None = None,
    subject: str = "user-1",
    username: str = "jdoe",
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    lifetime_s: float = TOKEN_LIFETIME_S,
    issued_at: float | None = None,
    kid: str | None = None,
    **claims: Any,
) -> str:
    """Return a token as the Noctis token service writes it, signed by ``key``."""
    now = time.time() if issued_at is None else issued_at
    granted = {granted_scope for role in roles for granted_scope in ROLE_SCOPES[role]}
    payload = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "preferred_username": username,
        "iat": int(now),
        "exp": int(now + lifetime_s),
        "jti": uuid.uuid4().hex,
        "scope": format_scope(granted) if scope is None else scope,
        "roles": [role.value for role in roles],
        **claims,
    }
    return jwt.encode(
        payload,
        key.private_key,
        algorithm=key.algorithm,
        headers={"kid": key.kid if kid is None else kid},
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
