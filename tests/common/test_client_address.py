"""The client address of a request: forwarded headers count from trusted proxies only."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from noctis_common.client_address import request_client_address
from noctis_common.settings import Settings


def request_from(peer: str, headers: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "client": (peer, 4711),
        }
    )


def test_default_ignores_remote_forwarded_for() -> None:
    settings = Settings(auth_mode="off")
    request = request_from("198.51.100.20", {"X-Forwarded-For": "203.0.113.1"})

    assert request_client_address(request, settings) == "198.51.100.20"


def test_default_trusts_loopback_proxy() -> None:
    settings = Settings(auth_mode="off")
    request = request_from("127.0.0.1", {"X-Forwarded-For": "203.0.113.1"})

    assert request_client_address(request, settings) == "203.0.113.1"


def test_rotating_forwarded_for_keeps_peer() -> None:
    settings = Settings(auth_mode="off")
    addresses = {
        request_client_address(
            request_from("198.51.100.20", {"X-Forwarded-For": f"203.0.113.{number}"}), settings
        )
        for number in range(10)
    }

    assert addresses == {"198.51.100.20"}


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        # An Ingress controller (10.1.0.7) in front of the gateway (10.2.0.3).
        ({"X-Forwarded-For": "203.0.113.1, 10.1.0.7"}, "203.0.113.1"),
        # The client forged the first entry; the first untrusted one from the right wins.
        ({"X-Forwarded-For": "192.0.2.66, 203.0.113.1, 10.1.0.7"}, "203.0.113.1"),
        ({"Forwarded": "for=203.0.113.1, for=10.1.0.7"}, "203.0.113.1"),
        # Every entry is a proxy: the leftmost one is the best address there is.
        ({"X-Forwarded-For": "10.1.0.8, 10.1.0.7"}, "10.1.0.8"),
        ({}, "10.2.0.3"),
    ],
)
def test_chain_of_trusted_proxies_skipped(headers: dict[str, str], expected: str) -> None:
    settings = Settings(auth_mode="off", trusted_proxies="10.0.0.0/8")

    assert request_client_address(request_from("10.2.0.3", headers), settings) == expected


def test_invalid_trusted_proxy_rejected() -> None:
    with pytest.raises(ValueError, match="invalid NOCTIS_TRUSTED_PROXIES entry"):
        Settings(auth_mode="off", trusted_proxies="127.0.0.1,proxy.example")
