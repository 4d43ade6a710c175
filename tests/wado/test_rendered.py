"""Rendered resources and thumbnails: the pixel pipeline checked on decoded PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import convert_color_space

from noctis_common.archive import StoredInstance
from noctis_common.context import ArchiveContext
from tests.support import make_dataset
from tests.wado.helpers import (
    instance_url,
    parse_multipart,
    pydicom_file,
    series_url,
    store_dataset,
    store_file,
    study_url,
)

PNG = {"Accept": "image/png"}


def _grayscale(pixels: NDArray[np.uint16], **attributes: object) -> Dataset:
    """Return a MONOCHROME2 dataset holding ``pixels`` (frames, rows, columns)."""
    frames, rows, columns = pixels.shape
    dataset = make_dataset(rows=rows, columns=columns)
    dataset.BitsStored = 16
    dataset.HighBit = 15
    if frames > 1:
        dataset.NumberOfFrames = frames
    dataset.PixelData = pixels.astype("<u2").tobytes()
    for keyword, value in attributes.items():
        setattr(dataset, keyword, value)
    return dataset


def _color(pixels: NDArray[np.uint8], photometric: str) -> Dataset:
    rows, columns, _ = pixels.shape
    dataset = make_dataset(rows=rows, columns=columns)
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
    dataset.PhotometricInterpretation = photometric
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelData = pixels.tobytes()
    return dataset


def _ramp(rows: int = 16, columns: int = 16, step: int = 16) -> NDArray[np.uint16]:
    return (np.arange(rows * columns, dtype=np.uint16) * step).reshape(1, rows, columns)


def _linear(values: NDArray[np.float64], center: float, width: float) -> NDArray[np.uint8]:
    """PS3.3 C.11.2.1.2.1 LINEAR window to 0..255."""
    scaled = np.clip((values - (center - 0.5)) / (width - 1) + 0.5, 0.0, 1.0) * 255.0
    return np.rint(scaled).astype(np.uint8)


def _store(context: ArchiveContext, dataset: Dataset, tmp_path: Path) -> StoredInstance:
    return store_dataset(context, dataset, tmp_path)


def _png(client: TestClient, url: str, **parameters: str) -> NDArray[np.uint8]:
    response = client.get(url, headers=PNG, params=parameters)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_requested_linear_window_applied(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered", window="2000,1000,LINEAR")

    expected = _linear(pixels[0].astype(np.float64), 2000, 1000)
    assert np.array_equal(image, expected)


def test_sigmoid_window_applied(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered", window="2000,1000,SIGMOID")

    values = pixels[0].astype(np.float64)
    expected = np.rint(255.0 / (1 + np.exp(-4 * (values - 2000) / 1000))).astype(np.uint8)
    assert np.array_equal(image, expected)


def test_linear_exact_window_applied(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered", window="1000,500,LINEAR_EXACT")

    values = pixels[0].astype(np.float64)
    expected = np.rint(np.clip((values - 1000) / 500 + 0.5, 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(image, expected)


def test_own_window_used_when_none_requested(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    dataset = _grayscale(pixels, WindowCenter=[1500, 3000], WindowWidth=[800, 100])
    stored = _store(sqlite_context, dataset, tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    assert np.array_equal(image, _linear(pixels[0].astype(np.float64), 1500, 800))


def test_voi_lut_used_without_window(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    dataset = _grayscale(pixels)
    lut = Dataset()
    lut.LUTDescriptor = [4096, 0, 16]
    table = (4095 - np.arange(4096, dtype="<u2")) * 16
    lut.add_new(0x00283006, "OW", table.tobytes())  # LUT Data
    dataset.VOILUTSequence = [lut]
    stored = _store(sqlite_context, dataset, tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    expected = np.rint(table[pixels[0]] / 65535 * 255).astype(np.uint8)
    assert np.array_equal(image, expected)


def test_min_max_used_without_any_window(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp() + 100
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    values = pixels[0].astype(np.float64)
    low, high = values.min(), values.max()
    expected = np.rint((values - low) / (high - low) * 255).astype(np.uint8)
    assert np.array_equal(image, expected)


def test_rescale_applied_before_window(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    dataset = _grayscale(pixels, RescaleSlope=2, RescaleIntercept=-1024)
    stored = _store(sqlite_context, dataset, tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered", window="40,400")

    hounsfield = pixels[0].astype(np.float64) * 2 - 1024
    assert np.array_equal(image, _linear(hounsfield, 40, 400))


def test_monochrome1_rendered_inverted(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = _ramp()
    dataset = _grayscale(pixels, PhotometricInterpretation="MONOCHROME1")
    stored = _store(sqlite_context, dataset, tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered", window="2000,1000")

    expected = 255 - _linear(pixels[0].astype(np.float64), 2000, 1000)
    assert np.array_equal(image, expected)


def test_rgb_rendered_unchanged(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    stored = _store(sqlite_context, _color(pixels, "RGB"), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    assert np.array_equal(image, pixels)


def test_ybr_full_rendered_as_rgb(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    rng = np.random.default_rng(8)
    rgb = rng.integers(0, 256, size=(8, 12, 3), dtype=np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    stored = _store(sqlite_context, _color(ybr, "YBR_FULL"), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    difference = np.abs(image.astype(np.int16) - rgb.astype(np.int16))
    assert difference.max() <= 2


def test_palette_color_rendered_through_lut(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    indexes = (np.arange(64, dtype=np.uint8) * 4).reshape(8, 8)
    dataset = make_dataset(rows=8, columns=8)
    dataset.PhotometricInterpretation = "PALETTE COLOR"
    dataset.BitsAllocated = 8
    dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.PixelData = indexes.tobytes()
    red = np.arange(256, dtype=np.uint8)
    green = 255 - red
    blue = np.full(256, 77, dtype=np.uint8)
    for name, table in (("Red", red), ("Green", green), ("Blue", blue)):
        setattr(dataset, f"{name}PaletteColorLookupTableDescriptor", [256, 0, 8])
        # 8-bit entries are stored in 16-bit words (PS3.3 C.7.6.3.1.6).
        setattr(dataset, f"{name}PaletteColorLookupTableData", table.astype("<u2").tobytes())
    stored = _store(sqlite_context, dataset, tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    expected = np.stack([red[indexes], green[indexes], blue[indexes]], axis=-1)
    assert np.array_equal(image, expected)


def test_frame_level_renders_that_frame(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = np.stack([_ramp()[0], _ramp()[0][::-1], _ramp()[0].T])
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/frames/2/rendered", window="2000,1000")

    assert np.array_equal(image, _linear(pixels[1].astype(np.float64), 2000, 1000))


def test_gif_holds_every_frame(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    pixels = np.stack([_ramp()[0], _ramp()[0][::-1], _ramp()[0].T])
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/rendered", headers={"Accept": "image/gif"}
    )

    assert response.status_code == 200
    assert getattr(Image.open(io.BytesIO(response.content)), "n_frames", 1) == 3


def test_frame_out_of_range_not_found(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = _store(sqlite_context, _grayscale(_ramp()), tmp_path)

    response = sqlite_client.get(f"{instance_url(stored)}/frames/2/rendered")

    assert response.status_code == 404
    assert "has 1 frame" in response.json()["detail"]


def test_jpeg_default_and_quality_shrinks_it(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    rng = np.random.default_rng(9)
    pixels = rng.integers(0, 4096, size=(1, 64, 64), dtype=np.uint16)
    stored = _store(sqlite_context, _grayscale(pixels), tmp_path)
    url = f"{instance_url(stored)}/rendered"

    best = sqlite_client.get(url, params={"quality": "100"})
    worst = sqlite_client.get(url, params={"quality": "5"})

    assert best.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(best.content)).size == (64, 64)
    assert len(worst.content) < len(best.content)


def test_viewport_crops_then_scales(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = _store(sqlite_context, _grayscale(_ramp()), tmp_path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered", viewport="16,16,4,4,4,8")

    assert image.shape == (16, 8)


def test_thumbnail_fits_default_size(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = _store(sqlite_context, _grayscale(_ramp(rows=64, columns=256)), tmp_path)

    for url in (instance_url(stored), series_url(stored), study_url(stored)):
        image = _png(sqlite_client, f"{url}/thumbnail")
        assert image.shape == (32, 128), url


def test_accept_query_parameter_overrides_header(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    # OHIF's default thumbnail request: the accept query parameter (PS3.18 8.3.3.1) is used.
    stored = _store(sqlite_context, _grayscale(_ramp()), tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/thumbnail?accept=image/jpeg",
        headers={"Accept": 'multipart/related; type="application/octet-stream"'},
    )

    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"


def test_study_rendered_part_per_image(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    first = _store(sqlite_context, _grayscale(_ramp()), tmp_path / "a")
    second = _grayscale(_ramp())
    second.StudyInstanceUID = first.study_instance_uid
    _store(sqlite_context, second, tmp_path / "b")

    response = sqlite_client.get(f"{study_url(first)}/rendered", headers=PNG)

    assert response.status_code == 200
    assert [part.content_type for part in parse_multipart(response)] == ["image/png"] * 2


def test_unsupported_accept_not_acceptable(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, tmp_path: Path
) -> None:
    stored = _store(sqlite_context, _grayscale(_ramp()), tmp_path)

    response = sqlite_client.get(
        f"{instance_url(stored)}/rendered", headers={"Accept": "image/webp"}
    )

    assert response.status_code == 406
    assert "image/jpeg, image/png, image/gif" in response.json()["detail"]


@pytest.mark.parametrize(
    ("parameter", "value", "message"),
    [
        ("window", "40", "center,width,function"),
        ("window", "40,0.5,LINEAR", "at least 1"),
        ("window", "40,400,CUBIC", "LINEAR, LINEAR_EXACT or SIGMOID"),
        ("viewport", "0,10", "from 1 to"),
        ("viewport", "10,10,0,0,-4,4", "flipping is not supported"),
        ("quality", "101", "from 1 to 100"),
    ],
)
def test_invalid_parameter_rejected(
    *,
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    parameter: str,
    value: str,
    message: str,
) -> None:
    stored = _store(sqlite_context, _grayscale(_ramp()), tmp_path)

    response = sqlite_client.get(f"{instance_url(stored)}/rendered", params={parameter: value})

    assert response.status_code == 400
    assert message in response.json()["detail"]


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_implicit.dcm",
        "MR_small_bigendian.dcm",
        "image_dfl.dcm",
        "JPEG2000.dcm",
        "MR_small_jp2klossless.dcm",
        "MR_small_RLE.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "JPEG-LL.dcm",
        "SC_rgb_jpeg_gdcm.dcm",
        "SC_rgb_rle_2frame.dcm",
        "SC_ybr_full_uncompressed.dcm",
        "US1_J2KR.dcm",
        "OBXXXX1A.dcm",
        "liver_1frame.dcm",
    ],
)
def test_stored_syntax_rendered(
    sqlite_client: TestClient, sqlite_context: ArchiveContext, name: str
) -> None:
    path = pydicom_file(name)
    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    stored = store_file(sqlite_context, path)

    image = _png(sqlite_client, f"{instance_url(stored)}/rendered")

    assert image.shape[:2] == (dataset.Rows, dataset.Columns)
