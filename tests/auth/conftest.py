"""Fixtures: an archive app with auth on, its signing key, and a key server on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from tests.auth.support import AUDIENCE, ISSUER, KeyServer, SigningKey, serving_keys
from tests.support import make_dataset


@pytest.fixture
def signing_key() -> SigningKey:
    return SigningKey.generate("ES256")


@pytest.fixture
def key_server(signing_key: SigningKey) -> Iterator[KeyServer]:
    with serving_keys([signing_key]) as server:
        yield server


@pytest.fixture
def auth_settings(tmp_path: Path, key_server: KeyServer) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        auth_mode="internal",
        auth_issuer=ISSUER,
        auth_audience=AUDIENCE,
        auth_jwks_url=key_server.jwks_url,
    )


@pytest.fixture
def auth_context(auth_settings: Settings) -> Iterator[ArchiveContext]:
    context = ArchiveContext.create(auth_settings)
    try:
        yield context
    finally:
        context.close()


def archive_app(context: ArchiveContext) -> FastAPI:
    """Return an app with every DICOMweb router, the change feed, WADO-URI and the audit API."""
    from noctis_events.routes import router as change_feed_router
    from noctis_qido.routes import router as qido_router
    from noctis_stow.delete import router as delete_router
    from noctis_stow.routes import router as stow_router
    from noctis_wado.routes import router as wado_router
    from noctis_wado.wado_uri import router as wado_uri_router

    app = create_app(
        "Noctis auth test",
        [qido_router, wado_router, stow_router, delete_router, change_feed_router],
        context.settings,
        context,
    )
    app.include_router(wado_uri_router)
    return app


@pytest.fixture
def auth_client(auth_context: ArchiveContext) -> Iterator[TestClient]:
    with TestClient(archive_app(auth_context)) as client:
        yield client


@dataclass(frozen=True)
class StoredStudy:
    """The UIDs of one stored single-instance study."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    patient_id: str


def store_study(
    context: ArchiveContext,
    folder: Path,
    *,
    patient_id: str = "PID-0001",
    referring_physician_name: str = "",
) -> StoredStudy:
    """Store one new single-instance study through the archive pipeline."""
    dataset = make_dataset(patient_id=patient_id)
    dataset.ReferringPhysicianName = referring_physician_name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)
    return StoredStudy(
        str(dataset.StudyInstanceUID),
        str(dataset.SeriesInstanceUID),
        str(dataset.SOPInstanceUID),
        patient_id,
    )


@pytest.fixture
def stored_study(auth_context: ArchiveContext, tmp_path: Path) -> StoredStudy:
    return store_study(auth_context, tmp_path / "input")
