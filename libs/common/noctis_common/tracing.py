"""Distributed tracing with OpenTelemetry: the calls the rest of Noctis makes.

The spans of one stored object run from the C-STORE or STOW-RS request through storage,
index and event publication to the consumer that handles the event. The W3C trace
context (``traceparent``) travels in the outbox row and in the Kafka record headers.

Until the OpenTelemetry set-up lands, these functions do nothing and return ``None``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager


def current_traceparent() -> str | None:
    """Return the W3C ``traceparent`` of the active span, or ``None`` when none is active."""
    return None


@contextmanager
def consumer_span(
    name: str, headers: Mapping[str, str], attributes: Mapping[str, str] | None = None
) -> Iterator[None]:
    """Run the handling of one event in a span whose parent is in ``headers``."""
    yield
