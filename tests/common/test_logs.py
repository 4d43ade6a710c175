"""Log output: JSON lines with trace IDs, text lines, and query values kept out of logs."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any

from noctis_common.logs import JsonLineFormatter, RedactQueryValues, redact_query_values
from noctis_common.tracing import tracer
from tests.common.spans import recording_spans

LOG_SCRIPT = """
import logging
from noctis_common.logs import configure_logging
from noctis_common.settings import Settings

configure_logging(Settings())
logging.getLogger("noctis_test").info("stored %d instances", 3)
logging.getLogger("uvicorn.access").info(
    '%s - "%s %s HTTP/%s" %d',
    "127.0.0.1:5000",
    "GET",
    "/dicom-web/studies?PatientID=P1",
    "1.1",
    200,
)
"""


def record(message: str, *args: object, name: str = "noctis_test") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)


def format_json(log_record: logging.LogRecord) -> dict[str, Any]:
    line = JsonLineFormatter().format(log_record)
    assert "\n" not in line
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def run_logging_script(**environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LOG_SCRIPT],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_json_line_has_standard_fields() -> None:
    entry = format_json(record("stored %d instances in %s", 3, "Säule"))

    assert entry["level"] == "INFO"
    assert entry["logger"] == "noctis_test"
    assert entry["message"] == "stored 3 instances in Säule"
    assert entry["timestamp"].endswith("+00:00")
    assert "trace_id" not in entry
    assert "span_id" not in entry


def test_json_line_carries_active_span_ids() -> None:
    with recording_spans(), tracer.start_as_current_span("request") as span:
        entry = format_json(record("inside a span"))
        span_context = span.get_span_context()

    assert entry["trace_id"] == f"{span_context.trace_id:032x}"
    assert entry["span_id"] == f"{span_context.span_id:016x}"


def test_json_line_includes_traceback() -> None:
    try:
        raise ValueError("bad value 7")
    except ValueError:
        log_record = logging.LogRecord(
            "noctis_test", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )

    entry = format_json(log_record)

    assert entry["level"] == "ERROR"
    assert "ValueError: bad value 7" in entry["exception"]


def test_json_format_writes_stdout() -> None:
    completed = run_logging_script(NOCTIS_LOG_FORMAT="json", NOCTIS_LOG_PHI="false")

    lines = completed.stdout.splitlines()
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    assert entries[0]["message"] == "stored 3 instances"
    assert entries[0]["logger"] == "noctis_test"
    assert completed.stderr == ""


def test_text_format_writes_stderr() -> None:
    completed = run_logging_script(NOCTIS_LOG_FORMAT="text", NOCTIS_LOG_PHI="false")

    assert completed.stdout == ""
    assert " INFO noctis_test: stored 3 instances" in completed.stderr


def test_access_log_hides_query_values() -> None:
    completed = run_logging_script(NOCTIS_LOG_FORMAT="json", NOCTIS_LOG_PHI="false")

    access = json.loads(completed.stdout.splitlines()[1])
    assert access["message"] == (
        '127.0.0.1:5000 - "GET /dicom-web/studies?PatientID=<redacted> HTTP/1.1" 200'
    )


def test_access_log_keeps_query_with_phi_on() -> None:
    completed = run_logging_script(NOCTIS_LOG_FORMAT="json", NOCTIS_LOG_PHI="true")

    access = json.loads(completed.stdout.splitlines()[1])
    assert "PatientID=P1" in access["message"]


def test_redact_query_values_keeps_names() -> None:
    redacted = redact_query_values("/dicom-web/studies?PatientName=DOE%5EJ*&limit=10&fuzzy")

    assert redacted == "/dicom-web/studies?PatientName=<redacted>&limit=<redacted>&fuzzy=<redacted>"


def test_redact_query_values_leaves_plain_path() -> None:
    assert redact_query_values("/dicom-web/studies/1.2.3") == "/dicom-web/studies/1.2.3"


def test_redaction_filter_ignores_other_records() -> None:
    log_record = record("plain message without arguments")

    assert RedactQueryValues().filter(log_record)
    assert log_record.getMessage() == "plain message without arguments"
