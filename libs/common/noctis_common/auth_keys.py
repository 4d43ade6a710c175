"""The JSON Web Key Set that token signatures are checked against, fetched and cached.

A :class:`KeySet` holds the public keys by key id (``kid``). It fetches the set on first
use, again once it is older than ``max_age_s``, and again when a token names a key id it
does not hold, because the token service may have rotated its keys. Fetches caused by
unknown key ids are at least ``min_refresh_interval_s`` apart, so tokens with forged key
ids cannot make every request fetch the set; the first such fetch is never delayed,
so a key rotated in just after a fetch is picked up at once.

Only asymmetric signature algorithms are accepted (:data:`ACCEPTED_ALGORITHMS`). A key
for any other algorithm, such as a symmetric ``oct`` key, is left out of the set.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWKError

logger = logging.getLogger(__name__)

# RS256 and ES256 are what the Noctis token service signs with; the others are the
# asymmetric algorithms that OpenID Connect providers such as Keycloak offer.
ACCEPTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
FETCH_TIMEOUT_S = 10.0
MAX_DOCUMENT_BYTES = 1024 * 1024

JWKSFetcher = Callable[[], Mapping[str, Any]]


class KeySetUnavailableError(RuntimeError):
    """The key set cannot be fetched or parsed, and no earlier copy is at hand."""


class UnknownKeyError(LookupError):
    """The key set has no usable key with the token's key id."""


def _fetch_json(url: str) -> Mapping[str, Any]:
    # Callers pass http(s) URLs only: the fetchers below check the scheme.
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S) as response:  # noqa: S310
            body = response.read(MAX_DOCUMENT_BYTES + 1)
    except OSError as error:
        raise KeySetUnavailableError(f"fetching {url} failed: {error}") from error
    if len(body) > MAX_DOCUMENT_BYTES:
        raise KeySetUnavailableError(f"{url} returned more than {MAX_DOCUMENT_BYTES} bytes")
    try:
        document = json.loads(body)
    except ValueError as error:
        raise KeySetUnavailableError(f"{url} returned no JSON: {error}") from error
    if not isinstance(document, dict):
        raise KeySetUnavailableError(f"{url} returned JSON that is not an object")
    return document


def http_jwks_fetcher(jwks_url: str) -> JWKSFetcher:
    """Return a fetcher that GETs the key set at ``jwks_url``."""
    if not jwks_url.startswith(("https://", "http://")):
        raise ValueError(f"invalid NOCTIS_AUTH_JWKS_URL {jwks_url!r}: give an http(s) URL")
    return lambda: _fetch_json(jwks_url)


def discovery_jwks_fetcher(issuer: str) -> JWKSFetcher:
    """Return a fetcher that reads ``jwks_uri`` from the issuer's OpenID discovery document.

    The document is at ``{issuer}/.well-known/openid-configuration`` (OpenID Connect
    Discovery 1.0, section 4). It is read on each fetch, so a provider that moves its
    key set is followed. The document must name ``issuer`` as its issuer (section 4.3),
    because otherwise it describes another provider or another realm. An https issuer
    must name an https ``jwks_uri``, so that no one on the network can swap the keys.
    """
    discovery_url = issuer.rstrip("/") + "/.well-known/openid-configuration"

    def fetch() -> Mapping[str, Any]:
        document = _fetch_json(discovery_url)
        named_issuer = document.get("issuer")
        if not isinstance(named_issuer, str) or named_issuer.rstrip("/") != issuer.rstrip("/"):
            raise KeySetUnavailableError(
                f"{discovery_url} names the issuer {named_issuer!r}, not {issuer!r}; set "
                "NOCTIS_AUTH_ISSUER to the issuer that the provider's tokens carry"
            )
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri.startswith(("https://", "http://")):
            raise KeySetUnavailableError(f"{discovery_url} names no http(s) jwks_uri")
        if issuer.startswith("https://") and not jwks_uri.startswith("https://"):
            raise KeySetUnavailableError(
                f"{discovery_url} names the http jwks_uri {jwks_uri!r} for an https issuer; "
                "configure the provider to publish its keys over https, or set "
                "NOCTIS_AUTH_JWKS_URL"
            )
        return _fetch_json(jwks_uri)

    return fetch


def parse_key_set(document: Mapping[str, Any]) -> dict[str, PyJWK]:
    """Return the usable keys of a JWKS document by key id.

    Keys without ``kid``, for encryption (``use`` other than ``sig``), or for an
    algorithm outside :data:`ACCEPTED_ALGORITHMS` are skipped.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise KeySetUnavailableError("the key set has no 'keys' list")
    keys: dict[str, PyJWK] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("kid"), str):
            continue
        if entry.get("use", "sig") != "sig":
            continue
        try:
            key = PyJWK(entry)
        except PyJWKError as error:
            logger.warning("skipped key %r of the key set: %s", entry.get("kid"), error)
            continue
        if key.algorithm_name not in ACCEPTED_ALGORITHMS:
            logger.warning(
                "skipped key %r of the key set: algorithm %s is not accepted",
                entry["kid"],
                key.algorithm_name,
            )
            continue
        keys[entry["kid"]] = key
    return keys


class KeySet:
    """Public signing keys by key id, fetched through ``fetch`` and cached."""

    def __init__(
        self,
        fetch: JWKSFetcher,
        *,
        max_age_s: float,
        min_refresh_interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self.max_age_s = max_age_s
        self.min_refresh_interval_s = min_refresh_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, PyJWK] | None = None
        self._fetched_at = 0.0
        self._attempted_at: float | None = None
        self._unknown_key_refreshed_at: float | None = None
        # Number of successful fetches, for tests and the log.
        self.fetch_count = 0

    def _refresh(self) -> None:
        """Fetch the set; keep the old keys when the fetch fails and some are held."""
        self._attempted_at = self._clock()
        try:
            keys = parse_key_set(self._fetch())
        except KeySetUnavailableError as error:
            if self._keys is None:
                raise
            logger.warning("key set refresh failed, using the keys fetched before: %s", error)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        self.fetch_count += 1
        logger.info("fetched the signing key set: %d keys (%s)", len(keys), ", ".join(keys))

    def find(self, kid: str | None) -> PyJWK:
        """Return the key with id ``kid``; ``None`` selects the only key of a one-key set.

        Raises :class:`UnknownKeyError` or :class:`KeySetUnavailableError`.
        """
        with self._lock:
            now = self._clock()
            stale = self._keys is None or now - self._fetched_at >= self.max_age_s
            # A failed fetch is retried at most once a second, not on every request.
            fetched = stale and (self._attempted_at is None or now - self._attempted_at >= 1.0)
            if fetched:
                self._refresh()
            if self._keys is None:
                raise KeySetUnavailableError("the key set could not be fetched yet")
            key = self._select(kid)
            if key is None and not fetched and self._may_refresh_for_unknown_key(now):
                self._unknown_key_refreshed_at = now
                self._refresh()
                key = self._select(kid)
        if key is None:
            raise UnknownKeyError(
                f"no signing key with key id {kid!r}"
                if kid is not None
                else "the token has no key id and the key set has more than one key"
            )
        return key

    def _select(self, kid: str | None) -> PyJWK | None:
        assert self._keys is not None
        if kid is None:
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)

    def _may_refresh_for_unknown_key(self, now: float) -> bool:
        last = self._unknown_key_refreshed_at
        return last is None or now - last >= self.min_refresh_interval_s
