"""The audit API's query parameters: unknown, repeated and inverted ranges are rejected."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from noctis_common.roles import Role
from tests.auth.support import SigningKey, bearer, make_token

AUDIT_ROUTES = ["/audit/records", "/audit/export"]


@pytest.fixture
def admin_headers(signing_key: SigningKey) -> dict[str, str]:
    return bearer(make_token(signing_key, roles=(Role.ADMINISTRATOR,), subject="admin-1"))


@pytest.mark.parametrize("path", AUDIT_ROUTES)
def test_unknown_parameter_rejected(
    auth_client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    response = auth_client.get(path, params={"patientid": "PID-1"}, headers=admin_headers)

    assert response.status_code == 400
    assert "unknown query parameter 'patientid'" in response.json()["detail"]


@pytest.mark.parametrize("path", AUDIT_ROUTES)
def test_repeated_parameter_rejected(
    auth_client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    response = auth_client.get(
        path, params=[("user", "rad-1"), ("user", "rad-2")], headers=admin_headers
    )

    assert response.status_code == 400
    assert "query parameter 'user' is repeated" in response.json()["detail"]


@pytest.mark.parametrize("path", AUDIT_ROUTES)
def test_since_after_until_rejected(
    auth_client: TestClient, admin_headers: dict[str, str], path: str
) -> None:
    response = auth_client.get(
        path,
        params={"since": "2026-12-05T10:00", "until": "2026-12-05T09:00"},
        headers=admin_headers,
    )

    assert response.status_code == 400
    assert "must be earlier than until" in response.json()["detail"]


def test_known_parameters_accepted(auth_client: TestClient, admin_headers: dict[str, str]) -> None:
    response = auth_client.get(
        "/audit/records",
        params={"user": "rad-1", "since": "2026-12-05T09:00", "until": "2026-12-05T10:00"},
        headers=admin_headers,
    )

    assert response.status_code == 200
