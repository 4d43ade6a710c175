"""Signing keys: creation, rotation, retirement and the published JSON Web Key Set.

Keys live in the index table ``auth_signing_key`` so that every process of the token
service signs with the same key. The newest key that no rotation has replaced signs
new tokens. A key is published in the JWKS (RFC 7517) until its ``retired_at``. A
rotation sets that to ``NOCTIS_AUTH_KEY_OVERLAP_S`` seconds later, so that the tokens
the old key signed keep verifying until they expire. An administrator can also retire
a key at once.

Threat model. Whoever holds a private signing key can issue tokens for any user and
role. With ``NOCTIS_AUTH_KEY_PASSPHRASE`` (or ``_FILE``) set, private keys are stored
as encrypted PKCS#8 (the best encryption the ``cryptography`` package offers), so a
copy of the index or of a database backup alone does not reveal them. Anyone who can
read the service's environment or passphrase file as well can still decrypt them.
Without a passphrase the keys are stored unencrypted and the index database itself
must be protected like the key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import select

from noctis_auth.clock import as_utc, utc_now
from noctis_common.db import Database
from noctis_common.db.models import AuthSigningKey
from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
RSA_KEY_BITS = 3072


class SigningKeyError(RuntimeError):
    """A signing key that cannot be created, loaded or retired as requested."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    algorithm: str
    private_key: PrivateKey


def read_key_passphrase(settings: Settings) -> bytes | None:
    """Return the passphrase that encrypts stored signing keys, or None when unset.

    Raises SigningKeyError when both settings are given or the file is unreadable
    or empty.
    """
    if settings.auth_key_passphrase is not None and settings.auth_key_passphrase_file:
        raise SigningKeyError(
            "both NOCTIS_AUTH_KEY_PASSPHRASE and NOCTIS_AUTH_KEY_PASSPHRASE_FILE are set; "
            "set only one of them"
        )
    if settings.auth_key_passphrase is not None:
        passphrase = settings.auth_key_passphrase.get_secret_value()
        source = "NOCTIS_AUTH_KEY_PASSPHRASE"
    elif settings.auth_key_passphrase_file is not None:
        source = f"the passphrase file {settings.auth_key_passphrase_file}"
        try:
            passphrase = settings.auth_key_passphrase_file.read_text().rstrip("\r\n")
        except OSError as error:
            raise SigningKeyError(f"cannot read {source}: {error.strerror}") from error
    else:
        return None
    if not passphrase:
        raise SigningKeyError(f"{source} is empty; give it a passphrase or unset it")
    return passphrase.encode()


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a public EC or RSA JWK, base64url-encoded."""
    members = ("crv", "kty", "x", "y") if jwk["kty"] == "EC" else ("e", "kty", "n")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def public_jwk(private_key: PrivateKey, algorithm: str) -> dict[str, Any]:
    """Return the public half of ``private_key`` as a JWK with ``kid``, ``use`` and ``alg``."""
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        jwk = dict(ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True))
    else:
        jwk = dict(RSAAlgorithm.to_jwk(private_key.public_key(), as_dict=True))
    jwk["kid"] = jwk_thumbprint(jwk)
    jwk["use"] = "sig"
    jwk["alg"] = algorithm
    return jwk


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    raise SigningKeyError(f"unsupported signing algorithm {algorithm!r}; use ES256 or RS256")


def is_published(row: AuthSigningKey, now: datetime) -> bool:
    return row.retired_at is None or as_utc(row.retired_at) > now


class SigningKeyStore:
    """The signing keys in the index, with their decrypted private keys cached by kid."""

    def __init__(
        self, database: Database, settings: Settings, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.database = database
        self.settings = settings
        self.clock = clock
        self._passphrase = read_key_passphrase(settings)
        self._private_keys: dict[str, PrivateKey] = {}
        self._lock = threading.Lock()

    def signing_key(self) -> SigningKey:
        """Return the key that signs new tokens, creating the first one when there is none."""
        with self.database.read_session() as session:
            row = session.scalars(
                select(AuthSigningKey)
                .where(AuthSigningKey.rotated_at.is_(None))
                .order_by(AuthSigningKey.created_at.desc(), AuthSigningKey.kid)
                .limit(1)
            ).first()
        if row is None:
            self.rotate()
            return self.signing_key()
        return SigningKey(row.kid, row.algorithm, self._private_key(row))

    def rotate(self) -> str:
        """Create a new signing key and return its kid.

        The keys it replaces stay published for ``auth_key_overlap_s`` seconds.
        """
        algorithm = self.settings.auth_signing_algorithm
        private_key = generate_private_key(algorithm)
        jwk = public_jwk(private_key, algorithm)
        if self._passphrase is not None:
            encryption: serialization.KeySerializationEncryption = (
                serialization.BestAvailableEncryption(self._passphrase)
            )
        else:
            encryption = serialization.NoEncryption()
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        ).decode()
        now = self.clock()
        retire_at = now + timedelta(seconds=self.settings.auth_key_overlap_s)
        with self.database.write_session() as session, session.begin():
            for previous in session.scalars(
                select(AuthSigningKey).where(AuthSigningKey.rotated_at.is_(None))
            ):
                previous.rotated_at = now
                if previous.retired_at is None or as_utc(previous.retired_at) > retire_at:
                    previous.retired_at = retire_at
            session.add(
                AuthSigningKey(
                    kid=jwk["kid"],
                    algorithm=algorithm,
                    private_key_pem=pem,
                    encrypted=self._passphrase is not None,
                    public_jwk=json.dumps(jwk),
                    created_at=now,
                )
            )
        with self._lock:
            self._private_keys[jwk["kid"]] = private_key
        logger.info("created signing key %s (%s)", jwk["kid"], algorithm)
        return str(jwk["kid"])

    def retire(self, kid: str) -> None:
        """Remove a replaced key from the JWKS now; tokens it signed stop verifying.

        Raises KeyError for an unknown kid and SigningKeyError for the key that signs
        new tokens, which must be rotated first.
        """
        now = self.clock()
        with self.database.write_session() as session, session.begin():
            row = session.get(AuthSigningKey, kid)
            if row is None:
                raise KeyError(kid)
            if row.rotated_at is None:
                raise SigningKeyError(
                    f"key {kid} signs new tokens; rotate the keys first, then retire it"
                )
            if row.retired_at is None or as_utc(row.retired_at) > now:
                row.retired_at = now
        logger.info("retired signing key %s", kid)

    def list_keys(self) -> list[AuthSigningKey]:
        """Return every stored key, newest first."""
        with self.database.read_session() as session:
            return list(
                session.scalars(
                    select(AuthSigningKey).order_by(
                        AuthSigningKey.created_at.desc(), AuthSigningKey.kid
                    )
                )
            )

    def published_jwks(self) -> list[dict[str, Any]]:
        """Return the public JWKs of every key that is not retired, newest first."""
        now = self.clock()
        return [json.loads(row.public_jwk) for row in self.list_keys() if is_published(row, now)]

    def _private_key(self, row: AuthSigningKey) -> PrivateKey:
        with self._lock:
            cached = self._private_keys.get(row.kid)
        if cached is not None:
            return cached
        if row.encrypted and self._passphrase is None:
            raise SigningKeyError(
                f"signing key {row.kid} is stored encrypted; set NOCTIS_AUTH_KEY_PASSPHRASE "
                "or NOCTIS_AUTH_KEY_PASSPHRASE_FILE to the passphrase it was created with"
            )
        try:
            loaded = serialization.load_pem_private_key(
                row.private_key_pem.encode(), self._passphrase if row.encrypted else None
            )
        except (ValueError, TypeError) as error:
            raise SigningKeyError(
                f"cannot decrypt signing key {row.kid}: the passphrase differs from the one "
                "it was created with, or the stored key is damaged; rotate the keys to "
                "replace it"
            ) from error
        if not isinstance(loaded, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise SigningKeyError(f"signing key {row.kid} is neither an EC nor an RSA key")
        with self._lock:
            self._private_keys[row.kid] = loaded
        return loaded
