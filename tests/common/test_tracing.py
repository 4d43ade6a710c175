"""Traces: set-up from OTEL_* variables, and the spans of STOW-RS, C-STORE and events."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import REGISTRY
from pynetdicom import AE
from sqlalchemy import select

from noctis_common.consumer import ConsumerConfig, EventConsumer
from noctis_common.context import ArchiveContext
from noctis_common.db import Database
from noctis_common.db.models import OutboxEvent
from noctis_common.events import Event
from noctis_common.settings import Settings
from noctis_common.tracing import (
    build_tracer_provider,
    consumer_span,
    current_traceparent,
    producer_span,
    selected_exporters,
    tracer,
)
from noctis_common.web import create_app
from tests.common.spans import RecordedSpans, parent_id, recording_spans, span_id, trace_id
from tests.ingest_scp.helpers import running_scp
from tests.servers.tansu import TansuBroker
from tests.stow.bodies import Part, content_type, dicom_body, multipart_body
from tests.support import CT_IMAGE_STORAGE, ArchiveProcess, free_port, make_dataset

STOW_SPAN = "POST /dicom-web/studies"
KAFKA_TOPIC = "noctis-trace-test"
PIPELINE_SPANS = ("write spool copy", "put object", "commit index rows")


@pytest.fixture
def spans() -> Iterator[RecordedSpans]:
    with recording_spans() as recorded:
        yield recorded


@pytest.fixture
def sqlite_context(sqlite_settings: Settings) -> Iterator[ArchiveContext]:
    """An archive context on SQLite whose outbox relay the test runs by hand."""
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
        "Noctis tracing test", [qido_router, stow_router], sqlite_context.settings, sqlite_context
    )
    with TestClient(app) as test_client:
        yield test_client


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def stow(client: TestClient, body: bytes, **headers: str) -> httpx.Response:
    response: httpx.Response = client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": content_type(), **headers}
    )
    return response


# The attributes of every publish and process span, in process and through Kafka.
MESSAGING_ATTRIBUTES = {
    "messaging.system",
    "messaging.destination.name",
    "messaging.message.id",
    "messaging.operation.type",
    "messaging.operation.name",
    "cloudevents.event_type",
}


def messaging_convention_problems(span: ReadableSpan, operation: str, system: str) -> list[str]:
    """Return how ``span`` departs from the OpenTelemetry messaging span conventions."""
    attributes = dict(span.attributes or {})
    problems = [f"no {name}" for name in sorted(MESSAGING_ATTRIBUTES - attributes.keys())]
    if span.name != f"{operation} {attributes.get('messaging.destination.name')}":
        problems.append(f"name {span.name!r} is not '{operation} <destination>'")
    expected_kind = SpanKind.PRODUCER if operation == "publish" else SpanKind.CONSUMER
    if span.kind != expected_kind:
        problems.append(f"kind {span.kind} is not {expected_kind}")
    expected = {
        "messaging.system": system,
        "messaging.operation.name": operation,
        "messaging.operation.type": "send" if operation == "publish" else "process",
        "cloudevents.event_type": "noctis.instance.stored.v1",
    }
    problems += [
        f"{name} is {attributes.get(name)!r}, not {value!r}"
        for name, value in expected.items()
        if attributes.get(name) != value
    ]
    return problems


# -- STOW-RS to the event consumer ------------------------------------------------------


def test_stow_trace_reaches_event_consumer(
    client: TestClient, sqlite_context: ArchiveContext, spans: RecordedSpans
) -> None:
    handled: list[tuple[Event, str | None]] = []
    sqlite_context.publisher.subscribe(lambda event: handled.append((event, current_traceparent())))
    dataset = make_dataset()

    response = stow(client, dicom_body([dataset]))
    assert sqlite_context.relay.relay_once() == 1

    assert response.status_code == 200
    request = spans.one(STOW_SPAN)
    store = spans.one("store instance")
    publish = spans.one("publish instance.stored")
    process = spans.one("process instance.stored")
    assert request.kind == SpanKind.SERVER
    assert parent_id(store) == span_id(request)
    for name in PIPELINE_SPANS:
        assert parent_id(spans.one(name)) == span_id(store), name
    assert parent_id(publish) == span_id(spans.one("commit index rows"))
    assert parent_id(process) == span_id(publish)
    assert publish.kind == SpanKind.PRODUCER
    assert process.kind == SpanKind.CONSUMER
    assert {trace_id(span) for span in spans.all()} == {trace_id(request)}
    assert store.attributes is not None
    assert store.attributes["dicom.sop_instance_uid"] == dataset.SOPInstanceUID
    assert len(handled) == 1
    event, traceparent = handled[0]
    assert messaging_convention_problems(publish, "publish", "noctis_in_process") == []
    assert messaging_convention_problems(process, "process", "noctis_in_process") == []
    assert publish.attributes is not None
    assert publish.attributes["messaging.message.id"] == str(event.id)
    assert event.traceparent is not None
    assert traceparent is not None
    assert traceparent.startswith(f"00-{trace_id(request):032x}-{span_id(process):016x}-")


def test_outbox_row_records_commit_span(
    client: TestClient, sqlite_context: ArchiveContext, spans: RecordedSpans
) -> None:
    response = stow(client, dicom_body([make_dataset()]))

    assert response.status_code == 200
    commit = spans.one("commit index rows")
    with sqlite_context.database.read_session() as session:
        row = session.scalars(select(OutboxEvent)).one()
    assert row.traceparent is not None
    assert row.traceparent.startswith(f"00-{trace_id(commit):032x}-{span_id(commit):016x}-")


def test_request_traceparent_continues_client_trace(
    client: TestClient, spans: RecordedSpans
) -> None:
    client_trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    client_span_id = "00f067aa0ba902b7"

    response = stow(
        client,
        dicom_body([make_dataset()]),
        traceparent=f"00-{client_trace_id}-{client_span_id}-01",
    )

    assert response.status_code == 200
    request = spans.one(STOW_SPAN)
    assert f"{trace_id(request):032x}" == client_trace_id
    assert f"{parent_id(request):016x}" == client_span_id


def test_failed_store_marks_span_error(client: TestClient, spans: RecordedSpans) -> None:
    body = multipart_body([Part(b"this is not a DICOM file")])

    response = stow(client, body)

    assert response.status_code == 409
    store = spans.one("store instance")
    assert store.status.status_code == StatusCode.ERROR
    assert store.attributes is not None
    assert store.attributes["dicom.failure_reason"] == "0xC000"
    assert "put object" not in spans.names()


def test_probes_and_scrapes_not_traced(client: TestClient, spans: RecordedSpans) -> None:
    client.get("/metrics")
    client.get("/health")

    assert spans.all() == []


@pytest.mark.slow
def test_stow_trace_reaches_kafka_consumer(
    tmp_path: Path, kafka_broker: TansuBroker, spans: RecordedSpans
) -> None:
    from noctis_stow.routes import router as stow_router

    kafka_broker.create_topic(KAFKA_TOPIC, partitions=1)
    settings = Settings(
        data_dir=tmp_path / "var", auth_mode="off", **kafka_broker.noctis_settings(KAFKA_TOPIC)
    )
    database = Database(f"sqlite:///{tmp_path / 'consumer.sqlite'}")
    database.upgrade()
    handled: list[str | None] = []
    consumer = EventConsumer(
        ConsumerConfig(group_id="trace-test", topics=[KAFKA_TOPIC], session_timeout_ms=6000),
        lambda event, session: handled.append(current_traceparent()),
        database,
        {"bootstrap_servers": [kafka_broker.bootstrap_servers]},
    )
    consumer_thread = threading.Thread(target=consumer.run, name="trace-test-consumer")
    context = ArchiveContext.create(settings)
    try:
        consumer_thread.start()
        app = create_app("Noctis tracing test", [stow_router], settings, context)
        with TestClient(app) as client:
            response = stow(client, dicom_body([make_dataset()]))
        assert context.relay.relay_once() == 1
        assert wait_for(lambda: bool(handled), timeout_s=30)
    finally:
        consumer.stop()
        consumer_thread.join(timeout=30)
        context.close()
        database.dispose()

    assert response.status_code == 200
    request = spans.one(STOW_SPAN)
    commit = spans.one("commit index rows")
    publish = spans.one(f"publish {KAFKA_TOPIC}")
    process = spans.one(f"process {KAFKA_TOPIC}")
    assert parent_id(spans.one("store instance")) == span_id(request)
    assert parent_id(publish) == span_id(commit)
    assert parent_id(process) == span_id(publish)
    assert process.kind == SpanKind.CONSUMER
    assert trace_id(process) == trace_id(request)
    assert messaging_convention_problems(publish, "publish", "kafka") == []
    assert messaging_convention_problems(process, "process", "kafka") == []
    assert publish.attributes is not None
    assert process.attributes is not None
    assert process.attributes["messaging.message.id"] == publish.attributes["messaging.message.id"]
    for span in spans.all():
        exported = span.to_json(indent=None)
        assert "Doe^Jane" not in exported, exported
        assert "PID-0001" not in exported, exported
    assert handled[0] is not None
    assert handled[0].startswith(f"00-{trace_id(request):032x}-{span_id(process):016x}-")


# -- C-STORE ----------------------------------------------------------------------------


def test_c_store_span_child_of_association(sqlite_settings: Settings, spans: RecordedSpans) -> None:
    dataset = make_dataset()
    with running_scp(sqlite_settings) as running:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CT_IMAGE_STORAGE, dataset.file_meta.TransferSyntaxUID)
        association = ae.associate("127.0.0.1", running.port, ae_title="NOCTIS")
        assert association.is_established
        status = association.send_c_store(dataset)
        association.release()
        # The SCP ends the association's span when it has processed the release.
        assert wait_for(lambda: bool(spans.named("DIMSE association")))

    assert status.Status == 0x0000
    association_span = spans.one("DIMSE association")
    c_store = spans.one("C-STORE")
    store = spans.one("store instance")
    assert parent_id(c_store) == span_id(association_span)
    assert parent_id(store) == span_id(c_store)
    assert association_span.kind == SpanKind.SERVER
    assert association_span.attributes is not None
    assert association_span.attributes["dicom.calling_ae_title"] == "MODALITY"
    assert association_span.attributes["noctis.association_outcome"] == "released"
    assert c_store.attributes is not None
    assert c_store.attributes["dicom.status"] == "0x0000"
    assert c_store.attributes["dicom.affected_sop_instance_uid"] == dataset.SOPInstanceUID


def test_port_probe_leaves_no_span(sqlite_settings: Settings, spans: RecordedSpans) -> None:
    def closed_connections() -> float:
        return (
            REGISTRY.get_sample_value("noctis_dimse_associations_total", {"outcome": "closed"})
            or 0.0
        )

    with running_scp(sqlite_settings) as running:
        before = closed_connections()
        with socket.create_connection(("127.0.0.1", running.port)):
            pass
        # The SCP counts the closed connection when it has finished its record.
        assert wait_for(lambda: closed_connections() == before + 1)

    assert spans.named("DIMSE association") == []


# -- Event spans ------------------------------------------------------------------------


def test_consumer_span_continues_producer_headers(spans: RecordedSpans) -> None:
    with tracer.start_as_current_span("request") as request:
        traceparent = current_traceparent()
    with (
        producer_span("publish test.event", traceparent) as headers,
        consumer_span("process test.event", headers, {"noctis.event_id": "7"}),
    ):
        pass

    publish = spans.one("publish test.event")
    process = spans.one("process test.event")
    assert parent_id(publish) == request.get_span_context().span_id
    assert parent_id(process) == span_id(publish)
    assert process.attributes is not None
    assert process.attributes["noctis.event_id"] == "7"


def test_consumer_span_without_context_starts_trace(spans: RecordedSpans) -> None:
    with consumer_span("process test.event", {}):
        pass

    assert parent_id(spans.one("process test.event")) is None


def test_consumer_span_records_exception(spans: RecordedSpans) -> None:
    with pytest.raises(RuntimeError), consumer_span("process test.event", {}):
        raise RuntimeError("handler failed")

    assert spans.one("process test.event").status.status_code == StatusCode.ERROR


def test_no_traceparent_outside_span() -> None:
    assert current_traceparent() is None


# -- Set-up from OTEL_* variables -------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console,otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ["console"]),
    ],
)
def test_exporters_from_environment(environ: dict[str, str], expected: list[str]) -> None:
    assert selected_exporters(environ) == expected


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "unsupported exporters zipkin"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTLP protocol 'grpc' is not supported",
        ),
    ],
)
def test_unsupported_configuration_rejected(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        selected_exporters(environ)


def test_service_name_defaults_to_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)

    provider = build_tracer_provider("noctis-stow", {"OTEL_TRACES_EXPORTER": "otlp"})

    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "noctis-stow"
    finally:
        provider.shutdown()


def test_otel_service_name_overrides_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "stow-eu-1")

    provider = build_tracer_provider("noctis-stow", {"OTEL_TRACES_EXPORTER": "otlp"})

    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "stow-eu-1"
    finally:
        provider.shutdown()


def test_no_provider_without_exporter() -> None:
    assert build_tracer_provider("noctis-stow", {}) is None


def test_second_configuration_changes_nothing() -> None:
    script = (
        "from noctis_common.tracing import configure_tracing\n"
        "print(configure_tracing('noctis-first'), configure_tracing('noctis-second'))\n"
    )
    environment = {**os.environ, "OTEL_TRACES_EXPORTER": "console"}
    environment.pop("OTEL_SDK_DISABLED", None)

    completed = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert completed.stdout.strip() == "True True"
    assert "Overriding" not in completed.stderr


# -- A real process exporting to an OTLP collector --------------------------------------


class OTLPCollector:
    """A stand-in OTLP/HTTP collector on loopback that keeps the spans it receives."""

    def __init__(self) -> None:
        self.spans: list[dict[str, str]] = []
        self._lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                collector.receive(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def receive(self, path: str, body: bytes) -> None:
        if path != "/v1/traces":
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        received = []
        for resource_spans in request.resource_spans:
            attributes = {
                attribute.key: attribute.value.string_value
                for attribute in resource_spans.resource.attributes
            }
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    span_attributes = {
                        attribute.key: attribute.value.string_value for attribute in span.attributes
                    }
                    received.append(
                        {
                            "service.name": attributes.get("service.name", ""),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "url.query": span_attributes.get("url.query", ""),
                        }
                    )
        with self._lock:
            self.spans.extend(received)

    def named(self, name: str) -> list[dict[str, str]]:
        with self._lock:
            return [span for span in self.spans if span["name"] == name]


@pytest.fixture
def collector() -> Iterator[OTLPCollector]:
    running = OTLPCollector()
    running.thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()


@pytest.mark.slow
def test_archive_exports_spans_and_json_logs(collector: OTLPCollector, tmp_path: Path) -> None:
    archive = ArchiveProcess(
        data_dir=tmp_path / "var",
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "NOCTIS_LOG_FORMAT": "json",
        },
    )
    archive.start()
    try:
        response = httpx.post(
            f"{archive.dicomweb_url}/studies",
            content=dicom_body([make_dataset(patient_name="Tracer^Tom", patient_id="PID-TRACE")]),
            headers={"Content-Type": content_type()},
        )
        assert response.status_code == 200, response.text
        search = httpx.get(f"{archive.dicomweb_url}/studies", params={"PatientName": "Tracer*"})
        assert search.status_code == 200, search.text
        assert wait_for(lambda: bool(collector.named("publish instance.stored")))
        assert wait_for(lambda: bool(collector.named("GET /dicom-web/studies")))
    finally:
        archive.stop()

    request = collector.named(STOW_SPAN)[0]
    store = collector.named("store instance")[0]
    commit = collector.named("commit index rows")[0]
    publish = collector.named("publish instance.stored")[0]
    assert request["service.name"] == "noctis-archive"
    assert store["parent_span_id"] == request["span_id"]
    assert commit["parent_span_id"] == store["span_id"]
    assert publish["parent_span_id"] == commit["span_id"]
    assert publish["trace_id"] == request["trace_id"]
    assert collector.named("GET /dicom-web/studies")[0]["url.query"] == "PatientName=REDACTED"

    assert archive.log_path is not None
    log_text = archive.log_path.read_text()
    lines = [line for line in log_text.splitlines() if line.startswith("{")]
    assert lines, log_text[-2000:]
    records = [json_record(line) for line in lines]
    stow_lines = [record for record in records if record["message"].startswith("STOW-RS")]
    assert len(stow_lines) == 1
    assert stow_lines[0]["trace_id"] == request["trace_id"]
    assert stow_lines[0]["logger"] == "noctis_stow.routes"
    assert stow_lines[0]["level"] == "INFO"
    assert "Tracer" not in log_text
    assert "PID-TRACE" not in log_text


def json_record(line: str) -> dict[str, str]:
    import json

    record: dict[str, str] = json.loads(line)
    return record
