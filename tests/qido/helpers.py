"""Storing test datasets and reading QIDO-RS results."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from noctis_common.context import ArchiveContext

QueryParameters = list[tuple[str, str]] | dict[str, str] | None


def store(context: ArchiveContext, dataset: Dataset) -> Dataset:
    """Store ``dataset`` through the archive pipeline, as C-STORE and STOW-RS do."""
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)
    return dataset


def search(client: TestClient, path: str, params: QueryParameters = None) -> list[dict[str, Any]]:
    """Return the results of a QIDO-RS search that must succeed."""
    response = client.get(f"/dicom-web{path}", params=params)
    assert response.status_code == 200, response.text
    results: list[dict[str, Any]] = response.json()
    return results


def element(result: dict[str, Any], keyword: str) -> dict[str, Any] | None:
    tag = tag_for_keyword(keyword)
    assert tag is not None, keyword
    found: dict[str, Any] | None = result.get(f"{tag:08X}")
    return found


def values(result: dict[str, Any], keyword: str) -> list[Any]:
    """Return the Value array of an attribute of a result, [] when absent or empty."""
    found = element(result, keyword)
    if found is None:
        return []
    return list(found.get("Value", []))


def value(result: dict[str, Any], keyword: str) -> Any:
    """Return the first value of an attribute of a result, or None."""
    found = values(result, keyword)
    return found[0] if found else None


def values_of_all(results: list[dict[str, Any]], keyword: str) -> set[Any]:
    """Return the first values of ``keyword`` across ``results``."""
    return {value(result, keyword) for result in results}
