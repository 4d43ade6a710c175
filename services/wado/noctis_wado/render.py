"""The pixel pipeline of rendered resources: stored pixel data to 8-bit display values.

It follows the grayscale and color pipelines of PS3.4 N.2, which PS3.18 8.3.5
requires for rendered media types. Grayscale pixels pass through the Modality LUT
(Rescale Slope and Intercept, or a Modality LUT Sequence), then a VOI window. The
window is the one the request gives, else the object's first Window Center and Width,
else its VOI LUT, else the range of the frame's values. MONOCHROME1 is inverted last.
Color pixels are decoded to RGB (YBR by pydicom's conversion, PALETTE COLOR through its
lookup tables) and scaled to 8 bits. A window does not apply to them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array

Image8 = NDArray[np.uint8]
_OUTPUT_MAX = 255.0


class VOIFunction(StrEnum):
    """The VOI LUT Function values of PS3.3 C.11.2.1.3 that a window may name."""

    LINEAR = "LINEAR"
    LINEAR_EXACT = "LINEAR_EXACT"
    SIGMOID = "SIGMOID"


@dataclass(frozen=True)
class Window:
    """A VOI window: center, width and function (PS3.3 C.11.2.1.2)."""

    center: float
    width: float
    function: VOIFunction = VOIFunction.LINEAR


class RenderError(ValueError):
    """The pixel data cannot be rendered; the message gives the reason."""


def apply_window(values: NDArray[np.float64], window: Window) -> NDArray[np.float64]:
    """Map values through ``window`` to 0..255 by the formulas of PS3.3 C.11.2.1.2-3."""
    center, width = window.center, window.width
    if window.function is VOIFunction.SIGMOID:
        return _OUTPUT_MAX / (1.0 + np.exp(-4.0 * (values - center) / width))
    if window.function is VOIFunction.LINEAR_EXACT:
        scaled = (values - center) / width + 0.5
    else:
        if width < 1:
            raise RenderError(f"window width {width} is below 1, the minimum for LINEAR")
        scaled = (values - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(scaled, 0.0, 1.0) * _OUTPUT_MAX


def _first_number(value: object) -> float:
    """Return the first value of a possibly multi-valued DS element."""
    if isinstance(value, MultiValue | list | tuple):
        value = value[0]
    return float(value)  # type: ignore[arg-type]


def dataset_window(dataset: Dataset) -> Window | None:
    """Return the object's first VOI window, or None when it has none."""
    if "WindowCenter" not in dataset or "WindowWidth" not in dataset:
        return None
    try:
        center = _first_number(dataset.WindowCenter)
        width = _first_number(dataset.WindowWidth)
    except (TypeError, ValueError, IndexError):
        return None
    function_text = str(dataset.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    function = (
        VOIFunction(function_text)
        if function_text in VOIFunction.__members__
        else VOIFunction.LINEAR
    )
    if width <= 0 or (function is VOIFunction.LINEAR and width < 1):
        return None
    return Window(center, width, function)


def _scale_range(values: NDArray[np.float64], low: float, high: float) -> NDArray[np.float64]:
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0) * _OUTPUT_MAX


def _render_grayscale(
    dataset: Dataset, frame: NDArray[np.generic], window: Window | None
) -> NDArray[np.float64]:
    values = np.asarray(apply_modality_lut(frame, dataset), dtype=np.float64)
    if window is not None:
        return apply_window(values, window)
    own_window = dataset_window(dataset)
    if own_window is not None:
        return apply_window(values, own_window)
    voi_sequence = dataset.get("VOILUTSequence")
    if voi_sequence:
        item = voi_sequence[0]
        output_bits = int(item.LUTDescriptor[2])
        # The LUT is indexed by integer values, so modality values are rounded first.
        indexes = np.rint(values).astype(np.int64)
        looked_up = np.asarray(apply_voi_lut(indexes, dataset, index=0), dtype=np.float64)
        return _scale_range(looked_up, 0.0, float(2**output_bits - 1))
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.zeros_like(values)
    return _scale_range(values, float(finite.min()), float(finite.max()))


def _scale_color(values: NDArray[np.generic], bits: int) -> NDArray[np.float64]:
    maximum = float(2**bits - 1)
    return np.asarray(values, dtype=np.float64) * (_OUTPUT_MAX / maximum)


def _palette_bits(dataset: Dataset) -> int:
    descriptor = dataset.get("RedPaletteColorLookupTableDescriptor")
    if descriptor is None:
        return 16  # segmented or enhanced palettes, which pydicom returns as 16-bit
    return 8 if int(descriptor[2]) == 8 else 16


def render_frame_values(
    dataset: Dataset, frame: NDArray[np.generic], window: Window | None = None
) -> Image8:
    """Return one decoded frame as 8-bit grayscale (rows, columns) or RGB (rows, columns, 3)."""
    photometric = str(dataset.get("PhotometricInterpretation", "")).strip().upper()
    if photometric == "PALETTE COLOR":
        rendered = _scale_color(apply_color_lut(frame, dataset), _palette_bits(dataset))
    elif frame.ndim == 3:
        bits = int(dataset.get("BitsStored") or dataset.get("BitsAllocated") or 8)
        rendered = _scale_color(frame, min(bits, 16))
    elif photometric in ("MONOCHROME1", "MONOCHROME2", ""):
        rendered = _render_grayscale(dataset, frame, window)
        if photometric == "MONOCHROME1":
            rendered = _OUTPUT_MAX - rendered
    else:
        raise RenderError(f"Photometric Interpretation {photometric} cannot be rendered")
    rendered = np.nan_to_num(rendered, nan=0.0, posinf=_OUTPUT_MAX, neginf=0.0)
    return np.asarray(np.rint(np.clip(rendered, 0.0, _OUTPUT_MAX)), dtype=np.uint8)


def frame_count(dataset: Dataset) -> int:
    """Return Number of Frames (0028,0008), 1 when absent or invalid."""
    try:
        return max(int(dataset.get("NumberOfFrames") or 1), 1)
    except (TypeError, ValueError):
        return 1


def decode_frame(dataset: Dataset, index: int) -> NDArray[np.generic]:
    """Decode frame ``index`` (0-based) to pixel values; YBR becomes RGB.

    Raises :class:`RenderError` when no installed handler can decode the pixel data.
    """
    if "PixelData" not in dataset:
        raise RenderError("the instance has no Pixel Data (7FE0,0010)")
    try:
        values: NDArray[np.generic] = pixel_array(dataset, index=index)
    except Exception as error:  # pixel data handlers raise many types
        raise RenderError(f"decoding the pixel data failed: {error}") from error
    if not math.isfinite(float(values.size)) or values.size == 0:
        raise RenderError("the decoded frame has no pixels")
    return values


def render_frame(dataset: Dataset, index: int, window: Window | None = None) -> Image8:
    """Decode and render frame ``index`` (0-based) of ``dataset`` to 8-bit values."""
    return render_frame_values(dataset, decode_frame(dataset, index), window)
