"""Throttling of failed logins per client address, against password guessing.

Account lockout (:mod:`noctis_auth.users`) stops guessing one account's password, but
an attacker who tries a few passwords on each of many accounts stays below it. So each
client address also gets a budget of failed logins: a token bucket that contains
NOCTIS_AUTH_THROTTLE_MAX_FAILURES tokens when full and refills at that many per
NOCTIS_AUTH_THROTTLE_WINDOW_S. Every failed password login, failed client
authentication and rejected code or refresh token at the token endpoint or on the
login form takes one token. While the bucket of an address is empty, the token
endpoint and the login form answer its requests with 429 and ``Retry-After`` before
checking any credential. Successful logins cost nothing.

The buckets live in the memory of each process, so N processes behind a load balancer
let an address fail up to N times the budget, and a restart forgets them. The address
is the TCP peer's, or, when that peer is one of NOCTIS_TRUSTED_PROXIES and
NOCTIS_TRUST_FORWARDED_HEADERS is on, the nearest untrusted address the proxies report
(:func:`noctis_common.client_address.request_client_address`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from noctis_common.settings import Settings

logger = logging.getLogger(__name__)

# Buckets kept at most; beyond it full buckets and then the least recently used go.
MAX_ADDRESSES = 100_000


@dataclass
class _Bucket:
    tokens: float
    updated: float


class LoginThrottle:
    """The failed-login budgets of client addresses in this process; thread-safe."""

    def __init__(
        self,
        max_failures: int,
        window_s: float,
        clock: Callable[[], float] = time.monotonic,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginThrottle:
        return cls(settings.auth_throttle_max_failures, settings.auth_throttle_window_s)

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    @property
    def _refill_per_s(self) -> float:
        return self.max_failures / self.window_s

    def _refilled(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.updated)
        return min(float(self.max_failures), bucket.tokens + elapsed * self._refill_per_s)

    def retry_after_s(self, address: str) -> int | None:
        """Return the seconds ``address`` must wait before it may log in again, or None."""
        if not self.enabled:
            return None
        with self._lock:
            bucket = self._buckets.get(address)
            if bucket is None:
                return None
            tokens = self._refilled(bucket, self.clock())
        if tokens >= 1.0:
            return None
        return max(1, math.ceil((1.0 - tokens) / self._refill_per_s))

    def record_failure(self, address: str) -> None:
        """Take one token from the bucket of ``address``."""
        if not self.enabled:
            return
        with self._lock:
            now = self.clock()
            bucket = self._buckets.pop(address, None)
            tokens = float(self.max_failures) if bucket is None else self._refilled(bucket, now)
            self._buckets[address] = _Bucket(max(0.0, tokens - 1.0), now)
            if len(self._buckets) > self.max_addresses:
                self._prune(now)
        if tokens >= 1.0 > tokens - 1.0:
            # Once per emptied bucket, so that an attack does not flood the log.
            logger.warning(
                "client address %s used up its %d failed logins; its token and login "
                "form requests get 429 until it regains one every %.1f s",
                address,
                self.max_failures,
                1.0 / self._refill_per_s,
            )

    def _prune(self, now: float) -> None:
        full = [
            address
            for address, bucket in self._buckets.items()
            if self._refilled(bucket, now) >= self.max_failures
        ]
        for address in full:
            del self._buckets[address]
        while len(self._buckets) > self.max_addresses:
            self._buckets.popitem(last=False)


def retry_after_message(address: str, retry_after_s: int) -> str:
    return (
        f"too many failed logins from {address}; wait {retry_after_s} seconds before the "
        "next attempt"
    )
