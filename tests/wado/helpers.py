"""Helpers for the WADO-RS tests: storing inputs, URLs and a strict multipart parser."""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from noctis_common.archive import StoredInstance
from noctis_common.context import ArchiveContext
from noctis_common.dicom.part10 import read_part10_header

DICOMWEB = "/dicom-web"


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    content_type: str
    content: bytes


def pydicom_file(name: str) -> Path:
    """Return a pydicom or pydicom-data test file, skipping the test when it is not installed."""
    found = get_testdata_file(name, download=False)
    if not isinstance(found, str):
        pytest.skip(f"pydicom test file {name} is not installed; install pydicom-data")
    return Path(found)


def store_file(context: ArchiveContext, path: Path) -> StoredInstance:
    """Store a copy of the Part 10 file at ``path`` through the archive pipeline."""
    spool = context.archive.new_spool_path()
    shutil.copyfile(path, spool)
    return context.archive.store_part10(spool)


def store_dataset(context: ArchiveContext, dataset: Dataset, folder: Path) -> StoredInstance:
    """Write ``dataset`` as a Part 10 file into ``folder`` and store that file."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return store_file(context, path)


def study_url(stored: StoredInstance) -> str:
    return f"{DICOMWEB}/studies/{stored.study_instance_uid}"


def series_url(stored: StoredInstance) -> str:
    return f"{study_url(stored)}/series/{stored.series_instance_uid}"


def instance_url(stored: StoredInstance) -> str:
    return f"{series_url(stored)}/instances/{stored.sop_instance_uid}"


def part10_dataset_bytes(part10: bytes) -> bytes:
    """Return the bytes of a Part 10 file after its File Meta Information."""
    handle = io.BytesIO(part10)
    header = read_part10_header(handle)
    return part10[header.dataset_offset :]


def content_type_parameters(content_type: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into its media type and parameters (quotes removed)."""
    media_type, *parameters = (item.strip() for item in content_type.split(";"))
    values = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        values[name.strip().lower()] = value.strip().strip('"')
    return media_type.lower(), values


def parse_multipart(response: httpx.Response) -> list[Part]:
    """Parse a multipart/related body, failing the test on any framing error."""
    media_type, parameters = content_type_parameters(response.headers["content-type"])
    assert media_type == "multipart/related"
    delimiter = b"--" + parameters["boundary"].encode("ascii")
    body = response.content
    close = b"\r\n" + delimiter + b"--\r\n"
    assert body.startswith(delimiter + b"\r\n"), body[:80]
    assert body.endswith(close), body[-80:]
    parts = []
    for segment in body[len(delimiter) + 2 : -len(close)].split(b"\r\n" + delimiter + b"\r\n"):
        head, separator, content = segment.partition(b"\r\n\r\n")
        assert separator, f"part without a blank line after its headers: {segment[:80]!r}"
        headers = {}
        for line in head.decode("ascii").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts.append(Part(headers["content-type"], content))
    return parts
