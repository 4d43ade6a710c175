"""Distributed tracing with OpenTelemetry: set-up from ``OTEL_*`` variables, and spans.

The spans of one stored object run from the C-STORE or STOW-RS request through storage,
index and event publication to the consumer that handles the event. The W3C trace
context (``traceparent``) travels in the outbox row and in the event's headers, so the
consumer's span joins the trace of the request even in another process.

:func:`configure_tracing` installs the SDK once per process, from the standard
environment variables of the OpenTelemetry specification:

- ``OTEL_SDK_DISABLED=true`` turns tracing off.
- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over HTTP/protobuf), ``console`` (JSON on
  stdout, for debugging) or ``none``; several may be comma-separated. When it is unset,
  tracing is on only if an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), so a process without a collector does not
  try to reach ``localhost:4318`` and log failed exports.
- ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` override the service name
  that the entry point passes.
- ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*`` and the exporter's ``OTEL_EXPORTER_OTLP_*``
  headers, timeout and certificates are read by the SDK itself.

Without the SDK every function here is a no-op of the OpenTelemetry API: spans are
not recorded and :func:`current_traceparent` returns ``None``.

No patient data in spans. QIDO-RS queries carry matching keys such as
``PatientName=DOE*`` and a browser may send ``access_token`` in the query, so
:class:`RedactUrlQuery`, the first processor of the provider, replaces the values of the
``url.query`` and ``url.full`` attributes unless ``NOCTIS_LOG_PHI`` is on. Credentials
(:data:`SECRET_QUERY_PARAMETERS`) are replaced even then. The other spans carry UIDs, AE
titles, network addresses, statuses and counts, and no patient names or IDs.

Event spans follow the OpenTelemetry messaging conventions on both paths, in process and
through Kafka: ``publish <destination>`` (kind producer) and ``process <destination>``
(kind consumer), with the attributes that :func:`messaging_attributes` returns.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from pydantic import TypeAdapter, ValidationError

logger = logging.getLogger(__name__)

TRACER_NAME = "noctis"
TRACEPARENT_HEADER = "traceparent"
SUPPORTED_EXPORTERS = ("otlp", "console", "none")
OTLP_PROTOCOL = "http/protobuf"

# Span attributes that hold a URL or its query, which RedactUrlQuery rewrites.
URL_QUERY_ATTRIBUTE = "url.query"
URL_FULL_ATTRIBUTE = "url.full"
# Query parameters whose values are credentials, replaced even with NOCTIS_LOG_PHI on.
SECRET_QUERY_PARAMETERS = frozenset(
    {"access_token", "client_secret", "code", "id_token_hint", "password", "refresh_token"}
)
REDACTED = "REDACTED"
# messaging.system of the in-process publisher, which has no broker of its own.
IN_PROCESS_MESSAGING_SYSTEM = "noctis_in_process"
KAFKA_MESSAGING_SYSTEM = "kafka"

tracer = trace.get_tracer(TRACER_NAME)
# The result of configure_tracing under the key "exporting", once it has run.
_configured: dict[str, bool] = {}
_configure_lock = threading.Lock()


def _true(name: str, environ: Mapping[str, str]) -> bool:
    return environ.get(name, "").strip().lower() == "true"


def _otlp_endpoint_set(environ: Mapping[str, str]) -> bool:
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def selected_exporters(environ: Mapping[str, str]) -> list[str]:
    """Return the trace exporters that ``environ`` selects; empty means tracing is off.

    Raises :class:`ValueError` on an exporter or OTLP protocol this build cannot use.
    """
    if _true("OTEL_SDK_DISABLED", environ):
        return []
    configured = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not configured:
        return ["otlp"] if _otlp_endpoint_set(environ) else []
    names = [name.strip() for name in configured.split(",") if name.strip()]
    unknown = [name for name in names if name not in SUPPORTED_EXPORTERS]
    if unknown:
        raise ValueError(
            f"OTEL_TRACES_EXPORTER={configured!r} names unsupported exporters "
            f"{', '.join(unknown)}; use otlp, console or none"
        )
    if "otlp" in names:
        protocol = (
            environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "").strip()
            or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "").strip()
            or OTLP_PROTOCOL
        )
        if protocol != OTLP_PROTOCOL:
            raise ValueError(
                f"OTLP protocol {protocol!r} is not supported: only the HTTP exporter is "
                f"installed; set OTEL_EXPORTER_OTLP_PROTOCOL={OTLP_PROTOCOL} and point "
                "the endpoint at the collector's HTTP port (4318 by default)"
            )
    return [name for name in names if name != "none"]


def redact_query(query: str, *, keep_values: bool = False) -> str:
    """Return ``query`` with each parameter's value replaced by :data:`REDACTED`.

    With ``keep_values`` only the values of :data:`SECRET_QUERY_PARAMETERS` are replaced.
    Parameter names and their order stay, so a trace still shows which keys a request used.
    """
    redacted = []
    for name, value in parse_qsl(query, keep_blank_values=True):
        secret = name.lower() in SECRET_QUERY_PARAMETERS
        redacted.append((name, value if keep_values and not secret else REDACTED))
    return urlencode(redacted)


def redact_url(url: str, *, keep_values: bool = False) -> str:
    """Return ``url`` with the values of its query replaced as :func:`redact_query` does."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    return urlunsplit(parts._replace(query=redact_query(parts.query, keep_values=keep_values)))


class RedactUrlQuery(SpanProcessor):
    """Replaces the query values in the ``url.query`` and ``url.full`` span attributes.

    Query values can be PHI (``PatientName=DOE*``) or credentials (``access_token``).
    The values are replaced when a span starts, which is where HTTP instrumentations,
    FastAPI's among them, set these attributes, so no exporter receives them. With
    ``log_phi`` only :data:`SECRET_QUERY_PARAMETERS` are replaced.
    """

    def __init__(self, log_phi: bool = False) -> None:
        self.log_phi = log_phi

    def on_start(self, span: SdkSpan, parent_context: Context | None = None) -> None:
        attributes = span.attributes or {}
        query = attributes.get(URL_QUERY_ATTRIBUTE)
        if isinstance(query, str) and query:
            span.set_attribute(URL_QUERY_ATTRIBUTE, redact_query(query, keep_values=self.log_phi))
        url = attributes.get(URL_FULL_ATTRIBUTE)
        if isinstance(url, str) and url:
            span.set_attribute(URL_FULL_ATTRIBUTE, redact_url(url, keep_values=self.log_phi))


def phi_logging_enabled(environ: Mapping[str, str]) -> bool:
    """Return whether ``NOCTIS_LOG_PHI`` in ``environ`` turns PHI logging on.

    The value is read as the settings read it; an invalid one counts as off.
    """
    try:
        return TypeAdapter(bool).validate_python(environ.get("NOCTIS_LOG_PHI", "false").strip())
    except ValidationError:
        return False


def build_tracer_provider(service_name: str, environ: Mapping[str, str]) -> TracerProvider | None:
    """Build an SDK tracer provider as ``environ`` configures it, or ``None`` when off.

    ``service_name`` becomes the ``service.name`` resource attribute unless
    ``OTEL_SERVICE_NAME`` or ``OTEL_RESOURCE_ATTRIBUTES`` sets one. The SDK reads the
    variables from ``os.environ``, so ``environ`` should be that mapping outside tests.
    The first processor is :class:`RedactUrlQuery`, as ``NOCTIS_LOG_PHI`` configures it.
    """
    exporters = selected_exporters(environ)
    if not exporters:
        return None
    named_in_environment = SERVICE_NAME in OTELResourceDetector().detect().attributes
    resource = Resource.create({} if named_in_environment else {SERVICE_NAME: service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(RedactUrlQuery(log_phi=phi_logging_enabled(environ)))
    for name in exporters:
        if name == "otlp":
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    return provider


def default_service_name() -> str:
    """Return the service name of this process: its ``python -m`` package, dash-separated.

    ``python -m noctis_stow`` gives ``noctis-stow``; a process not started with ``-m``
    gives ``noctis``.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = str(getattr(spec, "name", "") or "").removesuffix(".__main__")
    return module.replace("_", "-") if module.startswith("noctis") else "noctis"


def configure_tracing(service_name: str | None = None) -> bool:
    """Install the OpenTelemetry SDK for this process from the ``OTEL_*`` variables.

    Call it early in an entry point; ``service_name`` defaults to
    :func:`default_service_name`. Returns whether spans are exported. Later calls
    return the first call's result and change nothing, because OpenTelemetry lets a
    process set its tracer provider once. An invalid configuration is logged and leaves
    tracing off, because a service must run without its traces rather than not at all.
    The SDK flushes the spans still buffered when the process exits normally.
    """
    with _configure_lock:
        if "exporting" not in _configured:
            name = service_name or default_service_name()
            _configured["exporting"] = _install_tracer_provider(name)
        return _configured["exporting"]


def _install_tracer_provider(service_name: str) -> bool:
    try:
        provider = build_tracer_provider(service_name, os.environ)
    except ValueError as error:
        logger.error("tracing is off: %s", error)
        return False
    if provider is None:
        logger.info("tracing is off: no OTEL_TRACES_EXPORTER or OTLP endpoint is set")
        return False
    trace.set_tracer_provider(provider)
    logger.info("tracing on as service %s", provider.resource.attributes.get("service.name", "?"))
    return True


def current_traceparent() -> str | None:
    """Return the W3C ``traceparent`` of the active span, or ``None`` when none is active."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get(TRACEPARENT_HEADER)


def current_trace_ids() -> tuple[str, str] | None:
    """Return the trace and span IDs of the active span in hex, or ``None`` without one."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return (
        trace.format_trace_id(span_context.trace_id),
        trace.format_span_id(span_context.span_id),
    )


def mark_failed(span: Span, description: str) -> None:
    """Set ``span``'s status to error with ``description``."""
    span.set_status(Status(StatusCode.ERROR, description))


def mark_current_span_failed(description: str) -> None:
    """Set the active span's status to error with ``description``; no-op without a span."""
    mark_failed(trace.get_current_span(), description)


def messaging_attributes(
    operation: Literal["publish", "process"],
    *,
    system: str,
    destination: str,
    message_id: str,
    event_type: str,
) -> dict[str, str]:
    """Return the attributes of a ``publish`` or ``process`` span of one event.

    They follow the OpenTelemetry messaging conventions. ``messaging.system`` is
    ``kafka`` or :data:`IN_PROCESS_MESSAGING_SYSTEM`, and ``messaging.destination.name``
    the Kafka topic or, in process, the event type. ``messaging.message.id`` is the
    outbox row id, which is also the CloudEvent id. ``messaging.operation.type`` is
    ``send`` or ``process``, and ``cloudevents.event_type`` the CloudEvents ``type``,
    such as ``noctis.instance.stored.v1``. Name the span ``f"{operation} {destination}"``.
    """
    return {
        "messaging.system": system,
        "messaging.destination.name": destination,
        "messaging.message.id": message_id,
        "messaging.operation.type": "send" if operation == "publish" else "process",
        "messaging.operation.name": operation,
        "cloudevents.event_type": event_type,
    }


@contextmanager
def consumer_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Run the handling of one event in a span whose parent is in ``headers``.

    ``headers`` are the event's headers (a Kafka record's, or the in-process event's
    ``traceparent``); without a trace context in them the span starts a new trace. An
    exception is recorded on the span and raised again.
    """
    parent = propagate.extract(dict(headers))
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.CONSUMER, attributes=dict(attributes or {})
    ):
        yield


@contextmanager
def producer_span(
    name: str, traceparent: str | None, attributes: Mapping[str, str] | None = None
) -> Iterator[dict[str, str]]:
    """Run the publication of one event in a span, and yield the headers to send with it.

    The span's parent is ``traceparent``, the context recorded with the outbox row, so
    the publication joins the trace of the request that wrote the event. The yielded
    headers carry this span's context to the consumer. With tracing off in this
    process, the API's no-op span keeps the parent's context, so the headers still
    carry ``traceparent``. They are empty only when the row had none.
    """
    parent = propagate.extract({TRACEPARENT_HEADER: traceparent} if traceparent else {})
    with tracer.start_as_current_span(
        name, context=parent, kind=SpanKind.PRODUCER, attributes=dict(attributes or {})
    ):
        headers: dict[str, str] = {}
        propagate.inject(headers)
        yield headers
