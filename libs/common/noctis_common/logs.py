"""Logging set-up shared by the services: text lines, or JSON lines for log collectors.

``NOCTIS_LOG_FORMAT=text`` (the default) writes ``time level logger: message`` lines to
stderr. ``NOCTIS_LOG_FORMAT=json``, meant for production, writes one JSON object per
line to stdout. Its fields are ``timestamp`` (UTC, ISO 8601), ``level``, ``logger``,
``message`` and ``exception`` when a traceback is logged. Inside a span, ``trace_id``
and ``span_id`` lead from the log line to its trace.

Neither format adds patient data to what the code logs: patient names and IDs appear
only through :func:`phi`, which redacts them unless ``NOCTIS_LOG_PHI`` is on. uvicorn's
access log would show the query of each request, and QIDO-RS queries carry matching
keys such as ``PatientName=DOE*``, so :class:`RedactQueryValues` keeps the query's
parameter names and replaces its values unless ``NOCTIS_LOG_PHI`` is on.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import parse_qsl

from noctis_common.settings import Settings
from noctis_common.tracing import current_trace_ids

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
REDACTED = "<redacted>"
# uvicorn 0.55 logs each request on this logger with the arguments
# (client address, method, path with query, HTTP version, status code).
ACCESS_LOGGER = "uvicorn.access"
ACCESS_PATH_ARGUMENT = 2


def redact_query_values(path: str) -> str:
    """Return ``path`` with the value of each query parameter replaced by a placeholder."""
    route, separator, query = path.partition("?")
    if not separator:
        return path
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return route + "?" + "&".join(f"{name}={REDACTED}" for name in names)


class RedactQueryValues(logging.Filter):
    """Replaces the query values in uvicorn's access log lines, which can be PHI."""

    def filter(self, record: logging.LogRecord) -> bool:
        arguments = record.args
        if isinstance(arguments, tuple) and len(arguments) > ACCESS_PATH_ARGUMENT:
            path = arguments[ACCESS_PATH_ARGUMENT]
            if isinstance(path, str):
                redacted = list(arguments)
                redacted[ACCESS_PATH_ARGUMENT] = redact_query_values(path)
                record.args = tuple(redacted)
        return True


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        trace_ids = current_trace_ids()
        if trace_ids is not None:
            entry["trace_id"], entry["span_id"] = trace_ids
        # default=str keeps a line from being lost to a value json cannot encode.
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, stream: TextIO | None = None) -> None:
    """Send the root logger's records to the console in ``settings.log_format``.

    ``stream`` replaces the format's own stream (stdout for JSON, stderr for text), for
    command-line tools whose stdout carries their output.

    Every library that logs through the standard logging module (uvicorn, pynetdicom,
    SQLAlchemy) gets the same format. Like :func:`logging.basicConfig`, this does
    nothing to a root logger that already has handlers.
    """
    if settings.log_format == "json":
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(JsonLineFormatter())
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler])
    # pynetdicom logs dataset contents at DEBUG; keep it at INFO unless asked.
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        # kafka-python logs an ERROR for every failed connection attempt, several a
        # second while a broker is down. The relay and readiness report the outage.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    if not settings.log_phi:
        logging.getLogger(ACCESS_LOGGER).addFilter(RedactQueryValues())


def phi(settings: Settings, value: object) -> str:
    """Return ``value`` for a log line when PHI logging is on, else a placeholder."""
    return str(value) if settings.log_phi else REDACTED
