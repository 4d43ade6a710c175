"""Time Retrieve Study Metadata for a 2,000-instance study (see docs/benchmarks.md).

Run from the repository root: ``.venv/bin/python -m tests.wado.benchmark_metadata``.
It stores the study in-process on SQLite in a temporary folder, then times requests
through the ASGI test client: the first (cache rebuilt), the following ones (cache
valid), with gzip, and a conditional request that returns 304. For comparison it times
building the same body instance by instance, without the cache and without HTTP.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.lookup import find_study_instances
from noctis_wado.metadata import stream_metadata
from noctis_wado.routes import router as wado_router
from tests.support import make_dataset

NUMBER_OF_SERIES = 4
INSTANCES_PER_SERIES = 500
REPEATS = 10


def _time(request: Callable[[], object]) -> float:
    start = time.perf_counter()
    request()
    return time.perf_counter() - start


def _instance_by_instance(context: ArchiveContext, study_instance_uid: str) -> bytes:
    """Build the body as before the cache: the stored JSON of each instance in turn."""
    instances = find_study_instances(context.database, study_instance_uid)
    return b"".join(stream_metadata(context.database, instances, "http://host/dicom-web"))


def main() -> None:
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        context = ArchiveContext.create(Settings(data_dir=folder / "var"))
        study = generate_uid()
        series = [generate_uid() for _ in range(NUMBER_OF_SERIES)]
        for number in range(1, INSTANCES_PER_SERIES + 1):
            for series_instance_uid in series:
                dataset = make_dataset(
                    study_instance_uid=study,
                    series_instance_uid=series_instance_uid,
                    instance_number=number,
                )
                path = folder / f"{dataset.SOPInstanceUID}.dcm"
                dataset.save_as(path, enforce_file_format=True)
                context.archive.store_part10(path)
        app = create_app("benchmark", [wado_router], context.settings, context)
        url = f"/dicom-web/studies/{study}/metadata"
        identity = {"Accept-Encoding": "identity"}
        with TestClient(app) as client:
            first = _time(lambda: client.get(url, headers=identity))
            response = client.get(url, headers=identity)
            cached = [_time(lambda: client.get(url, headers=identity)) for _ in range(REPEATS)]
            gzipped = [
                _time(lambda: client.get(url, headers={"Accept-Encoding": "gzip"}))
                for _ in range(REPEATS)
            ]
            etag = {"If-None-Match": response.headers["etag"]}
            conditional = [_time(lambda: client.get(url, headers=etag)) for _ in range(REPEATS)]
        uncached = [_time(lambda: _instance_by_instance(context, study)) for _ in range(REPEATS)]
        context.close()
    print(
        f"instances: {NUMBER_OF_SERIES * INSTANCES_PER_SERIES}, body {len(response.content)} bytes"
    )
    print(f"first request (cache rebuilt): {first * 1000:.0f} ms")
    print(f"cached, identity: median {statistics.median(cached) * 1000:.0f} ms")
    print(f"cached, gzip: median {statistics.median(gzipped) * 1000:.0f} ms")
    print(f"instance by instance, no cache: median {statistics.median(uncached) * 1000:.0f} ms")
    print(f"If-None-Match, 304: median {statistics.median(conditional) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
