"""Throttling of failed logins per client address: 429 with Retry-After, before any check."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from noctis_auth.throttle import LoginThrottle
from noctis_common.client_address import request_client_address
from noctis_common.settings import Settings
from tests.auth_service.conftest import auth_settings, running_auth_app
from tests.auth_service.helpers import (
    PASSWORD,
    AuthApp,
    Pkce,
    authorization_parameters,
    create_user,
    create_viewer_client,
    open_login_form,
)

MAX_FAILURES = 3
WINDOW_S = 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def throttled_app(tmp_path: Path, **overrides: object) -> Iterator[AuthApp]:
    settings = auth_settings(
        tmp_path / "var",
        auth_throttle_max_failures=MAX_FAILURES,
        auth_throttle_window_s=WINDOW_S,
        # Far above MAX_FAILURES, so that no account locks in these tests.
        auth_lockout_threshold=50,
        **overrides,
    )
    for running in running_auth_app(settings):
        create_user(running.service, "rad", ["radiologist"])
        create_viewer_client(running.service)
        yield running


@pytest.fixture
def auth_app(tmp_path: Path) -> Iterator[AuthApp]:
    yield from throttled_app(tmp_path)


def from_address(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def password_attempt(
    client: TestClient, address: str, password: str, username: str = "rad"
) -> httpx.Response:
    response: httpx.Response = client.post(
        "/auth/token",
        data={"grant_type": "password", "username": username, "password": password},
        headers=from_address(address),
    )
    return response


def fail_from(client: TestClient, address: str, count: int) -> None:
    for _ in range(count):
        assert password_attempt(client, address, "wrong password").status_code == 400


def test_bucket_allows_max_failures() -> None:
    throttle = LoginThrottle(MAX_FAILURES, WINDOW_S, clock=FakeClock())
    for _ in range(MAX_FAILURES - 1):
        throttle.record_failure("192.0.2.1")
    assert throttle.retry_after_s("192.0.2.1") is None
    throttle.record_failure("192.0.2.1")
    assert throttle.retry_after_s("192.0.2.1") == WINDOW_S / MAX_FAILURES


def test_bucket_regains_one_per_interval() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(MAX_FAILURES, WINDOW_S, clock=clock)
    for _ in range(MAX_FAILURES):
        throttle.record_failure("192.0.2.1")
    clock.now += WINDOW_S / MAX_FAILURES
    assert throttle.retry_after_s("192.0.2.1") is None
    throttle.record_failure("192.0.2.1")
    assert throttle.retry_after_s("192.0.2.1") is not None


def test_bucket_keeps_addresses_apart() -> None:
    throttle = LoginThrottle(MAX_FAILURES, WINDOW_S, clock=FakeClock())
    for _ in range(MAX_FAILURES):
        throttle.record_failure("192.0.2.1")
    assert throttle.retry_after_s("192.0.2.2") is None


def test_bucket_memory_is_bounded() -> None:
    throttle = LoginThrottle(MAX_FAILURES, WINDOW_S, clock=FakeClock(), max_addresses=10)
    for number in range(25):
        throttle.record_failure(f"192.0.2.{number}")
    assert len(throttle._buckets) <= 10


def test_zero_failures_turns_throttle_off() -> None:
    throttle = LoginThrottle(0, WINDOW_S, clock=FakeClock())
    for _ in range(10):
        throttle.record_failure("192.0.2.1")
    assert throttle.retry_after_s("192.0.2.1") is None


def test_token_endpoint_answers_429(auth_app: AuthApp) -> None:
    fail_from(auth_app.client, "192.0.2.1", MAX_FAILURES)
    response = password_attempt(auth_app.client, "192.0.2.1", PASSWORD)
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(int(WINDOW_S / MAX_FAILURES))
    assert response.json()["error"] == "temporarily_unavailable"
    assert "too many failed logins from 192.0.2.1" in response.json()["error_description"]


def test_guessing_across_accounts_is_throttled(auth_app: AuthApp) -> None:
    for username in ("alice", "bob", "carol"):
        assert password_attempt(auth_app.client, "192.0.2.1", "guess", username).status_code == 400
    assert password_attempt(auth_app.client, "192.0.2.1", "guess", "dave").status_code == 429


def test_other_address_is_not_throttled(auth_app: AuthApp) -> None:
    fail_from(auth_app.client, "192.0.2.1", MAX_FAILURES)
    assert password_attempt(auth_app.client, "192.0.2.2", PASSWORD).status_code == 200


def test_successful_logins_cost_nothing(auth_app: AuthApp) -> None:
    for _ in range(MAX_FAILURES + 2):
        assert password_attempt(auth_app.client, "192.0.2.1", PASSWORD).status_code == 200


def test_wrong_client_secret_counts(auth_app: AuthApp) -> None:
    for _ in range(MAX_FAILURES):
        response = auth_app.client.post(
            "/auth/token",
            data={"grant_type": "client_credentials"},
            auth=("no-such-client", "guessed secret"),
            headers=from_address("192.0.2.1"),
        )
        assert response.status_code == 401
    assert password_attempt(auth_app.client, "192.0.2.1", PASSWORD).status_code == 429


def test_login_form_answers_429(auth_app: AuthApp) -> None:
    client = auth_app.client
    fail_from(client, "192.0.2.1", MAX_FAILURES)
    pkce = Pkce.generate()
    csrf_token = open_login_form(client, pkce)
    response = client.post(
        "/auth/authorize",
        data={
            **authorization_parameters(pkce),
            "csrf_token": csrf_token,
            "username": "rad",
            "password": PASSWORD,
        },
        headers=from_address("192.0.2.1"),
        follow_redirects=False,
    )
    assert response.status_code == 429
    assert response.headers["retry-after"] == str(int(WINDOW_S / MAX_FAILURES))
    assert "Too many failed logins" in response.text


def test_login_form_failures_count(auth_app: AuthApp) -> None:
    client = auth_app.client
    for _ in range(MAX_FAILURES):
        pkce = Pkce.generate()
        csrf_token = open_login_form(client, pkce)
        failed = client.post(
            "/auth/authorize",
            data={
                **authorization_parameters(pkce),
                "csrf_token": csrf_token,
                "username": "rad",
                "password": "wrong password",
            },
            headers=from_address("192.0.2.1"),
        )
        assert failed.status_code == 200
    assert password_attempt(client, "192.0.2.1", PASSWORD).status_code == 429


def test_untrusted_forwarded_header_is_ignored(tmp_path: Path) -> None:
    for running in throttled_app(tmp_path, trust_forwarded_headers=False):
        for number in range(MAX_FAILURES):
            attempt = password_attempt(running.client, f"192.0.2.{number}", "wrong password")
            assert attempt.status_code == 400
        response = password_attempt(running.client, "192.0.2.99", PASSWORD)
        assert response.status_code == 429
        assert "from testclient" in response.json()["error_description"]


def request_with(headers: dict[str, str]) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": "/",
            "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
            "client": ("10.0.0.5", 4711),
        }
    )


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, "10.0.0.5"),
        ({"X-Forwarded-For": "198.51.100.7"}, "198.51.100.7"),
        # The client wrote the first entry, the proxy appended the last one.
        ({"X-Forwarded-For": "203.0.113.1, 198.51.100.7"}, "198.51.100.7"),
        ({"Forwarded": 'for="[2001:db8::1]:4711";proto=https'}, "2001:db8::1"),
        ({"Forwarded": "for=203.0.113.1, for=198.51.100.7"}, "198.51.100.7"),
    ],
)
def test_client_address_from_proxy_headers(headers: dict[str, str], expected: str) -> None:
    settings = Settings(trust_forwarded_headers=True, trusted_proxies="10.0.0.5", auth_mode="off")
    assert request_client_address(request_with(headers), settings) == expected


def test_client_address_without_trust_is_peer() -> None:
    settings = Settings(trust_forwarded_headers=False, auth_mode="off")
    request = request_with({"X-Forwarded-For": "198.51.100.7"})
    assert request_client_address(request, settings) == "10.0.0.5"
