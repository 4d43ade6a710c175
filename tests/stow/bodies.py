"""Helpers that build STOW-RS request bodies by hand and inspect what the archive kept."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset
from sqlalchemy import select

from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance

BOUNDARY = "noctis-test-boundary"
DICOM_HEADERS = {"Content-Type": "application/dicom"}


def content_type(boundary: str = BOUNDARY, part_type: str | None = "application/dicom") -> str:
    """Return a multipart/related Content-Type with a quoted boundary."""
    value = "multipart/related"
    if part_type is not None:
        value += f'; type="{part_type}"'
    return value + f'; boundary="{boundary}"'


def part10_bytes(dataset: Dataset) -> bytes:
    """Encode ``dataset`` as a Part 10 file."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass
class Part:
    """One body part: its header fields and its data."""

    data: bytes
    headers: dict[str, str] = field(default_factory=lambda: dict(DICOM_HEADERS))


def multipart_body(
    parts: list[Part],
    boundary: str = BOUNDARY,
    *,
    preamble: bytes = b"",
    epilogue: bytes = b"",
    line_break: bytes = b"\r\n",
    padding: bytes = b"",
    close: bool = True,
) -> bytes:
    """Build a multipart body; ``line_break`` replaces CRLF to build broken bodies."""
    dash_boundary = b"--" + boundary.encode("ascii")
    chunks = [preamble + line_break if preamble else b""]
    for index, part in enumerate(parts):
        if index:
            chunks.append(line_break)
        chunks.append(dash_boundary + padding + line_break)
        for name, value in part.headers.items():
            chunks.append(f"{name}: {value}".encode("latin-1") + line_break)
        chunks.append(line_break)
        chunks.append(part.data)
    if close:
        chunks.append(line_break + dash_boundary + b"--" + line_break + epilogue)
    return b"".join(chunks)


def dicom_body(datasets: list[Dataset], boundary: str = BOUNDARY) -> bytes:
    return multipart_body([Part(part10_bytes(dataset)) for dataset in datasets], boundary)


def stored_sop_instance_uids(context: ArchiveContext) -> set[str]:
    with context.database.read_session() as session:
        return set(session.scalars(select(Instance.sop_instance_uid)))


def spool_files(context: ArchiveContext) -> list[Path]:
    """Return every file left in the spool folders (intent markers included)."""
    return [path for path in context.settings.spool_dir.rglob("*") if path.is_file()]


def stored_object_files(context: ArchiveContext) -> list[Path]:
    """Return every object in the filesystem object store."""
    objects_dir = context.settings.objects_dir
    if not objects_dir.is_dir():
        return []
    return [path for path in objects_dir.rglob("*") if path.is_file()]


def sequence_uids(response_json: dict[str, object], sequence_tag: str) -> list[str]:
    """Return the Referenced SOP Instance UIDs of a DICOM JSON sequence, in order."""
    element = response_json.get(sequence_tag)
    if not isinstance(element, dict):
        return []
    uids = []
    for item in element.get("Value", []):
        values = item["00081155"].get("Value", [""])
        uids.append(values[0])
    return uids


def failure_reasons(response_json: dict[str, object]) -> list[int]:
    """Return the Failure Reason (0008,1197) of each Failed SOP Sequence item."""
    element = response_json.get("00081198")
    if not isinstance(element, dict):
        return []
    return [item["00081197"]["Value"][0] for item in element.get("Value", [])]
