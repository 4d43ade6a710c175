"""Time Retrieve Rendered Frames, one frame a request (see docs/benchmarks.md).

Run from the repository root: ``.venv/bin/python -m tests.wado.benchmark_rendered``.
It stores two multi-frame objects in-process on SQLite in a temporary folder: pydicom-data's
color3d_jpeg_baseline.dcm (120 frames, 640 x 480, YBR_FULL_422 JPEG Baseline) and a
synthetic 512 x 512 16-bit CT of 30 frames, uncompressed. Then, through the ASGI test
client, it requests ``/frames/{n}/rendered`` for every frame in turn, as JPEG and as PNG,
and reports frames per second, the median over a few passes.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from noctis_common.archive import StoredInstance
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from noctis_common.web import create_app
from noctis_wado.routes import router as wado_router
from tests.support import make_dataset
from tests.wado.helpers import instance_url, store_dataset, store_file

PASSES = 3
CT_FRAMES = 30
MEDIA_TYPES = ["image/jpeg", "image/png"]


def _store_color_jpeg(context: ArchiveContext) -> tuple[StoredInstance, int]:
    path = get_testdata_file("color3d_jpeg_baseline.dcm")
    if path is None:
        raise SystemExit(
            "pydicom-data's color3d_jpeg_baseline.dcm was not found; install pydicom-data "
            "into .venv and run the benchmark again"
        )
    return store_file(context, Path(str(path))), 120


def _store_ct(context: ArchiveContext, folder: Path) -> tuple[StoredInstance, int]:
    """Store a 512 x 512 16-bit CT whose gradient shifts from frame to frame."""
    dataset = make_dataset(rows=512, columns=512)
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.NumberOfFrames = CT_FRAMES
    dataset.WindowCenter = 40
    dataset.WindowWidth = 400
    dataset.RescaleIntercept = -1024
    dataset.RescaleSlope = 1
    rows = np.arange(512, dtype=np.uint32)[:, None]
    columns = np.arange(512, dtype=np.uint32)[None, :]
    frames = [
        ((rows * 4 + columns + frame * 50) % 4096).astype("<u2") for frame in range(CT_FRAMES)
    ]
    dataset.PixelData = np.stack(frames).tobytes()
    return store_dataset(context, dataset, folder / "ct"), CT_FRAMES


def frames_per_second(client: TestClient, url: str, number_of_frames: int, accept: str) -> float:
    """Return frames per second over one request for each frame, rendered as ``accept``."""
    start = time.perf_counter()
    for frame_number in range(1, number_of_frames + 1):
        response = client.get(f"{url}/frames/{frame_number}/rendered", headers={"Accept": accept})
        if response.status_code != 200:
            raise SystemExit(
                f"rendered frame {frame_number} as {accept} returned {response.status_code}: "
                f"{response.text[:200]}"
            )
    return number_of_frames / (time.perf_counter() - start)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder_name:
        folder = Path(folder_name)
        context = ArchiveContext.create(Settings(data_dir=folder / "var"))
        objects = {
            "color3d_jpeg_baseline, 120 x 640 x 480 JPEG": _store_color_jpeg(context),
            f"synthetic CT, {CT_FRAMES} x 512 x 512 16-bit": _store_ct(context, folder),
        }
        app = create_app("benchmark", [wado_router], context.settings, context)
        with TestClient(app) as client:
            for label, (stored, number_of_frames) in objects.items():
                url = instance_url(stored)
                for accept in MEDIA_TYPES:
                    frames_per_second(client, url, 1, accept)
                    passes = [
                        frames_per_second(client, url, number_of_frames, accept)
                        for _ in range(PASSES)
                    ]
                    print(
                        f"{label}, {accept}: median {statistics.median(passes):.1f} frames/s "
                        f"(passes: {', '.join(f'{value:.1f}' for value in passes)})"
                    )
        context.close()


if __name__ == "__main__":
    main()
