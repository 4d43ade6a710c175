"""Time Retrieve Frames of a 120-frame JPEG object with and without the frame index.

Run from the repository root: ``.venv/bin/python -m tests.wado.benchmark_frame_index``.
It stores pydicom-data's ``color3d_jpeg_baseline.dcm`` (120 frames, JPEG Baseline)
in-process on SQLite in a temporary folder. Then it times requests for frame 60 and for
all 120 frames through the ASGI test client, first with the ``frame_index`` row written
at store time. It times them again with that row deleted, so that the stored object is
parsed (a parsed request writes the row again, so the row is deleted before each one).
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from sqlalchemy import delete

from noctis_common.context import ArchiveContext
from noctis_common.db.models import FrameIndex
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.routes import router as wado_router

REPEATS = 50
ALL_FRAMES = ",".join(str(number) for number in range(1, 121))


def _median_ms(client: TestClient, url: str, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(REPEATS):
        if before is not None:
            before()
        start = time.perf_counter()
        response = client.get(url)
        times.append(time.perf_counter() - start)
        response.raise_for_status()
    return statistics.median(times) * 1000


def main() -> None:
    source = get_testdata_file("color3d_jpeg_baseline.dcm", download=False)
    if not isinstance(source, str):
        raise SystemExit("color3d_jpeg_baseline.dcm is not installed; install pydicom-data")
    with tempfile.TemporaryDirectory() as folder_name:
        context = ArchiveContext.create(Settings(data_dir=Path(folder_name) / "var"))
        spool = context.archive.new_spool_path()
        shutil.copyfile(source, spool)
        stored = context.archive.store_part10(spool)
        url = (
            f"/dicom-web/studies/{stored.study_instance_uid}/series/"
            f"{stored.series_instance_uid}/instances/{stored.sop_instance_uid}/frames/"
        )
        app = create_app("benchmark", [wado_router], context.settings, context)
        with TestClient(app) as client:
            indexed = (_median_ms(client, url + "60"), _median_ms(client, url + ALL_FRAMES))

            def drop_frame_index() -> None:
                with context.database.write_session() as session:
                    session.execute(delete(FrameIndex))
                    session.commit()

            parsed = (
                _median_ms(client, url + "60", drop_frame_index),
                _median_ms(client, url + ALL_FRAMES, drop_frame_index),
            )
        context.close()
    print(f"frame 60:   {indexed[0]:.1f} ms with the index, {parsed[0]:.1f} ms parsed")
    print(f"120 frames: {indexed[1]:.1f} ms with the index, {parsed[1]:.1f} ms parsed")


if __name__ == "__main__":
    main()
