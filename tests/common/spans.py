"""Recording the spans of this test process with the SDK's in-memory exporter.

OpenTelemetry lets a process set its global tracer provider once, so the first test
that records spans installs one for the rest of the session. Its processor keeps spans
only while a test holds :func:`recording_spans`, so tests that do not look at spans
leave nothing behind. As in the services, :class:`RedactUrlQuery` comes first; tests
switch its ``log_phi`` through :data:`URL_REDACTION`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from noctis_common.tracing import RedactUrlQuery


class GatedSpanProcessor(SimpleSpanProcessor):
    """Exports ended spans to the in-memory exporter while ``recording`` is set."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        super().__init__(exporter)
        self.recording = threading.Event()

    def on_end(self, span: ReadableSpan) -> None:
        if self.recording.is_set():
            super().on_end(span)


URL_REDACTION = RedactUrlQuery(log_phi=False)
_EXPORTER = InMemorySpanExporter()
_PROCESSOR = GatedSpanProcessor(_EXPORTER)
_INSTALLED = threading.Lock()
_installed = False


def _install_provider() -> None:
    global _installed
    with _INSTALLED:
        if _installed:
            return
        provider = TracerProvider(resource=Resource.create({"service.name": "noctis-tests"}))
        provider.add_span_processor(URL_REDACTION)
        provider.add_span_processor(_PROCESSOR)
        trace.set_tracer_provider(provider)
        _installed = True


class RecordedSpans:
    """The spans ended since recording began, with look-ups by name."""

    def all(self) -> list[ReadableSpan]:
        return list(_EXPORTER.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [span for span in self.all() if span.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, f"expected one span {name!r}, found {len(found)}: {self.names()}"
        return found[0]

    def names(self) -> list[str]:
        return [span.name for span in self.all()]

    def clear(self) -> None:
        _EXPORTER.clear()


@contextmanager
def recording_spans() -> Iterator[RecordedSpans]:
    """Record the spans this process ends until the block exits."""
    _install_provider()
    _EXPORTER.clear()
    _PROCESSOR.recording.set()
    try:
        yield RecordedSpans()
    finally:
        _PROCESSOR.recording.clear()
        _EXPORTER.clear()


def parent_id(span: ReadableSpan) -> int | None:
    """Return the span ID of ``span``'s parent, or None for a root span."""
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.span_id)


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return int(span.context.trace_id)
