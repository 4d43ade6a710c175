"""No patient data and no credentials in exported spans.

The HTTP span's ``url.query`` and ``url.full`` attributes have their values replaced
(tracing.RedactUrlQuery) unless NOCTIS_LOG_PHI is on, and credentials always. The
DIMSE, store and event spans carry UIDs and AE titles only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import ReadableSpan
from pynetdicom import AE

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.tracing import build_tracer_provider, tracer
from noctis_common.web import create_app
from tests.common.spans import URL_REDACTION, RecordedSpans, recording_spans
from tests.ingest_scp.helpers import running_scp
from tests.stow.bodies import content_type, dicom_body
from tests.support import CT_IMAGE_STORAGE, make_dataset

PATIENT_NAME = "Privacy^Paula"
PATIENT_ID = "PID-PRIVATE-7"
QIDO_SPAN = "GET /dicom-web/studies"
# A QIDO-RS search as a browser viewer may send it, with its token in the query. With
# access control off, QIDO-RS rejects the unknown key access_token with status 400, and
# the request's span is the same either way.
SEARCH = {"PatientName": "Privacy*", "PatientID": PATIENT_ID, "access_token": "eyJ.secret.sig"}


@pytest.fixture
def spans() -> Iterator[RecordedSpans]:
    with recording_spans() as recorded:
        yield recorded


@pytest.fixture
def phi_in_traces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trace as a process with NOCTIS_LOG_PHI=true does."""
    monkeypatch.setattr(URL_REDACTION, "log_phi", True)


@pytest.fixture
def sqlite_context(sqlite_settings: Settings) -> Iterator[ArchiveContext]:
    archive_context = ArchiveContext.create(sqlite_settings)
    try:
        yield archive_context
    finally:
        archive_context.close()


@pytest.fixture
def client(sqlite_context: ArchiveContext) -> Iterator[TestClient]:
    from noctis_qido.routes import router as qido_router
    from noctis_stow.routes import router as stow_router

    app = create_app(
        "Noctis trace privacy test",
        [qido_router, stow_router],
        sqlite_context.settings,
        sqlite_context,
    )
    with TestClient(app) as test_client:
        yield test_client


def exported_text(span: ReadableSpan) -> str:
    """Return everything an exporter would send of ``span``: name, attributes, events, status."""
    text: str = span.to_json(indent=None)
    return text


def patient_data_in(span: ReadableSpan) -> list[str]:
    text = exported_text(span)
    return [value for value in ("Privacy", "Paula", PATIENT_ID) if value in text]


# -- HTTP spans -------------------------------------------------------------------------


def test_query_values_redacted_by_default(client: TestClient, spans: RecordedSpans) -> None:
    client.get("/dicom-web/studies", params=SEARCH)

    attributes = spans.one(QIDO_SPAN).attributes
    assert attributes is not None
    assert attributes["url.query"] == (
        "PatientName=REDACTED&PatientID=REDACTED&access_token=REDACTED"
    )


@pytest.mark.usefixtures("phi_in_traces")
def test_log_phi_keeps_values_but_not_token(client: TestClient, spans: RecordedSpans) -> None:
    client.get("/dicom-web/studies", params=SEARCH)

    attributes = spans.one(QIDO_SPAN).attributes
    assert attributes is not None
    assert attributes["url.query"] == (
        f"PatientName=Privacy%2A&PatientID={PATIENT_ID}&access_token=REDACTED"
    )


@pytest.mark.usefixtures("phi_in_traces")
@pytest.mark.parametrize("parameter", ["access_token", "id_token_hint", "code"])
def test_credentials_in_full_url_always_redacted(spans: RecordedSpans, parameter: str) -> None:
    url = f"https://pacs.example.org/auth/callback?{parameter}=s3cr3t&state=abc"

    with tracer.start_as_current_span("GET", attributes={"url.full": url}):
        pass

    attributes = spans.one("GET").attributes
    assert attributes is not None
    assert attributes["url.full"] == (
        f"https://pacs.example.org/auth/callback?{parameter}=REDACTED&state=abc"
    )


def test_url_without_query_unchanged(spans: RecordedSpans) -> None:
    url = "https://pacs.example.org/dicom-web/studies/1.2.3/series"

    with tracer.start_as_current_span("GET", attributes={"url.full": url}):
        pass

    attributes = spans.one("GET").attributes
    assert attributes is not None
    assert attributes["url.full"] == url


@pytest.mark.parametrize(
    ("log_phi", "expected"),
    [
        ("false", "PatientName=REDACTED&access_token=REDACTED"),
        ("true", "PatientName=DOE%2A&access_token=REDACTED"),
    ],
)
def test_service_provider_redacts_first(log_phi: str, expected: str) -> None:
    provider = build_tracer_provider(
        "noctis-qido", {"OTEL_TRACES_EXPORTER": "console", "NOCTIS_LOG_PHI": log_phi}
    )
    assert provider is not None
    try:
        # The span is read while it runs and never ended, so the console exporter is idle.
        span = provider.get_tracer("test").start_span(
            "GET", attributes={"url.query": "PatientName=DOE*&access_token=abc"}
        )
        attributes = getattr(span, "attributes", None)
    finally:
        provider.shutdown()

    assert attributes is not None
    assert attributes["url.query"] == expected


# -- DIMSE, store and event spans -------------------------------------------------------


def test_dimse_and_event_spans_carry_no_patient_data(
    sqlite_settings: Settings, spans: RecordedSpans
) -> None:
    dataset = make_dataset(patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    with running_scp(sqlite_settings) as running:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CT_IMAGE_STORAGE, dataset.file_meta.TransferSyntaxUID)
        association = ae.associate("127.0.0.1", running.port, ae_title="NOCTIS")
        assert association.is_established
        status = association.send_c_store(dataset)
        association.release()
        running.context.relay.relay_once()

    assert status.Status == 0x0000
    assert {"C-STORE", "store instance", "commit index rows"} <= set(spans.names())
    for span in spans.all():
        assert patient_data_in(span) == [], exported_text(span)


def test_stow_and_event_spans_carry_no_patient_data(
    client: TestClient, sqlite_context: ArchiveContext, spans: RecordedSpans
) -> None:
    sqlite_context.publisher.subscribe(lambda event: None)
    body = dicom_body([make_dataset(patient_name=PATIENT_NAME, patient_id=PATIENT_ID)])

    response = client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": content_type()}
    )
    assert sqlite_context.relay.relay_once() == 1

    assert response.status_code == 200
    assert {"publish instance.stored", "process instance.stored"} <= set(spans.names())
    for span in spans.all():
        assert patient_data_in(span) == [], exported_text(span)


def test_exported_json_has_no_query_values(client: TestClient, spans: RecordedSpans) -> None:
    client.get("/dicom-web/studies", params=SEARCH)

    exported = json.loads(exported_text(spans.one(QIDO_SPAN)))

    assert "Privacy" not in json.dumps(exported)
    assert "eyJ.secret.sig" not in json.dumps(exported)
