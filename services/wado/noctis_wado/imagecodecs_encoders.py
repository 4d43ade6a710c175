"""Encoders for JPEG and HTJ2K transfer syntaxes, which pydicom cannot encode (PS3.5 8.2).

imagecodecs encodes JPEG with libjpeg-turbo 3 (baseline, 12-bit extended and lossless)
and HTJ2K with OpenJPH. Each frame becomes one fragment of encapsulated Pixel Data with
a Basic Offset Table (PS3.5 A.4).
"""

from __future__ import annotations

from collections.abc import Callable

import imagecodecs
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels.processing import convert_color_space
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    HTJ2K,
    UID,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
)

# Quality of lossy JPEG (libjpeg-turbo scale 1-100).
JPEG_QUALITY = 90
# Lossy Image Compression Method (0028,2114) of each lossy syntax (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHODS = {str(JPEGBaseline8Bit): "ISO_10918_1", str(JPEGExtended12Bit): "ISO_10918_1"}
LOSSY_METHODS[str(HTJ2K)] = "ISO_15444_15"


class EncodingError(ValueError):
    """The pixel data of a dataset cannot be encoded in the requested transfer syntax."""


def _jpeg_lossy(bits: int) -> Callable[[NDArray[np.generic]], bytes]:
    def encode(frame: NDArray[np.generic]) -> bytes:
        if frame.ndim == 3:
            # PS3.5 8.2.1: colour is converted to YCbCr with 4:2:2 chroma subsampling,
            # so the Photometric Interpretation becomes YBR_FULL_422.
            return bytes(
                imagecodecs.jpeg8_encode(
                    frame,
                    JPEG_QUALITY,
                    colorspace="rgb",
                    outcolorspace="ycbcr",
                    subsampling="422",
                    bitspersample=bits,
                )
            )
        return bytes(imagecodecs.jpeg8_encode(frame, JPEG_QUALITY, bitspersample=bits))

    return encode


def _jpeg_lossless(predictor: int, bits: int) -> Callable[[NDArray[np.generic]], bytes]:
    def encode(frame: NDArray[np.generic]) -> bytes:
        # Lossless JPEG applies no colour transform: libjpeg-turbo writes an Adobe marker
        # with transform 0, so colour frames stay RGB.
        return bytes(
            imagecodecs.jpeg8_encode(frame, lossless=True, predictor=predictor, bitspersample=bits)
        )

    return encode


def _htj2k(reversible: bool, tlm: bool) -> Callable[[NDArray[np.generic]], bytes]:
    def encode(frame: NDArray[np.generic]) -> bytes:
        # rgb=False: no multiple component transform, so colour frames stay RGB
        # (PS3.5 8.2.4). OpenJPH writes the RPCL progression order by default.
        return bytes(imagecodecs.htj2k_encode(frame, reversible=reversible, tlm=tlm, rgb=False))

    return encode


def can_encode(transfer_syntax_uid: str) -> bool:
    """Return whether this module encodes ``transfer_syntax_uid``."""
    return transfer_syntax_uid in ENCODED_SYNTAXES


ENCODED_SYNTAXES = frozenset(
    str(uid)
    for uid in (
        JPEGBaseline8Bit,
        JPEGExtended12Bit,
        JPEGLossless,
        JPEGLosslessSV1,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        HTJ2K,
    )
)


def _frames(dataset: Dataset) -> list[NDArray[np.generic]]:
    """Return the frames of native ``dataset``, colour frames as RGB, sample-interleaved."""
    pixels = pixel_array(dataset, raw=True)
    frame_count = int(dataset.get("NumberOfFrames") or 1)
    if frame_count == 1:
        pixels = pixels[np.newaxis]
    photometric_interpretation = str(dataset.get("PhotometricInterpretation", ""))
    if int(dataset.SamplesPerPixel) == 3 and photometric_interpretation != "RGB":
        if photometric_interpretation != "YBR_FULL":
            raise EncodingError(
                f"native colour pixel data in Photometric Interpretation "
                f"{photometric_interpretation} is not supported"
            )
        pixels = convert_color_space(pixels, "YBR_FULL", "RGB")
    return [np.ascontiguousarray(frame) for frame in pixels]


def _choose_encoder(dataset: Dataset, target: UID) -> Callable[[NDArray[np.generic]], bytes]:
    """Check the Image Pixel attributes against ``target`` and return its frame encoder."""
    bits_allocated = int(dataset.BitsAllocated)
    bits_stored = int(dataset.BitsStored)
    signed = int(dataset.PixelRepresentation) == 1
    if bits_allocated not in (8, 16):
        raise EncodingError(f"Bits Allocated {bits_allocated} is not supported")
    if target in (JPEGBaseline8Bit, JPEGExtended12Bit):
        if signed:
            raise EncodingError("lossy JPEG encodes unsigned samples only")
        if target == JPEGBaseline8Bit and bits_stored > 8:
            raise EncodingError(
                f"JPEG Baseline accepts 8-bit samples only (PS3.5 8.2.1), not Bits Stored "
                f"{bits_stored}; request JPEG Extended (1.2.840.10008.1.2.4.51)"
            )
        if bits_stored > 12:
            raise EncodingError(f"JPEG Extended accepts up to 12-bit samples, not {bits_stored}")
        return _jpeg_lossy(8 if bits_stored <= 8 else 12)
    if target in (JPEGLossless, JPEGLosslessSV1):
        if int(dataset.SamplesPerPixel) == 3 and bits_allocated != 8:
            raise EncodingError("lossless JPEG of colour pixel data needs Bits Allocated 8")
        return _jpeg_lossless(1, max(bits_stored, 2))
    return _htj2k(reversible=target != HTJ2K, tlm=target == HTJ2KLosslessRPCL)


def _unsigned_samples(frame: NDArray[np.generic], bits_stored: int) -> NDArray[np.generic]:
    """Return the stored bit patterns of ``frame`` as unsigned values of ``bits_stored`` bits.

    Lossless JPEG codes samples as unsigned, so signed values are sent as their two's
    complement bits and the decoder restores the sign from Pixel Representation.
    """
    unsigned = frame.view(np.dtype(f"u{frame.dtype.itemsize}"))
    mask = (1 << bits_stored) - 1
    samples: NDArray[np.generic] = np.bitwise_and(unsigned, unsigned.dtype.type(mask))
    return samples


def encode_pixel_data(dataset: Dataset, target: UID) -> None:
    """Encode the native little endian Pixel Data of ``dataset`` in ``target``, in place.

    Sets the Transfer Syntax UID, Photometric Interpretation and, for a lossy target,
    Lossy Image Compression (0028,2110), its Ratio and Method (PS3.3 C.7.6.1.1.5).
    Raises :class:`EncodingError` when the pixel data does not fit ``target``.
    """
    encode = _choose_encoder(dataset, target)
    bits_stored = int(dataset.BitsStored)
    frames = _frames(dataset)
    if target in (JPEGLossless, JPEGLosslessSV1, JPEGBaseline8Bit, JPEGExtended12Bit):
        # libjpeg-turbo takes 8-bit samples as uint8 and wider ones as uint16.
        sample_type = np.uint8 if bits_stored <= 8 else np.uint16
        frames = [_unsigned_samples(frame, bits_stored).astype(sample_type) for frame in frames]

    native_length = sum(frame.nbytes for frame in frames)
    fragments = [encode(frame) for frame in frames]
    colour = int(dataset.SamplesPerPixel) == 3

    dataset.PixelData = encapsulate(fragments, has_bot=True)
    dataset["PixelData"].VR = "OB"
    dataset["PixelData"].is_undefined_length = True
    dataset.file_meta.TransferSyntaxUID = target
    if colour:
        lossy_jpeg = target in (JPEGBaseline8Bit, JPEGExtended12Bit)
        dataset.PhotometricInterpretation = "YBR_FULL_422" if lossy_jpeg else "RGB"
        dataset.PlanarConfiguration = 0
    if str(target) in LOSSY_METHODS:
        _mark_lossy(dataset, native_length / sum(len(fragment) for fragment in fragments), target)


def _mark_lossy(dataset: Dataset, ratio: float, target: UID) -> None:
    """Record a lossy compression step, after any earlier ones (PS3.3 C.7.6.1.1.5)."""
    already_lossy = dataset.get("LossyImageCompression") == "01"
    ratios = _values(dataset, "LossyImageCompressionRatio") if already_lossy else []
    methods = _values(dataset, "LossyImageCompressionMethod") if already_lossy else []
    dataset.LossyImageCompression = "01"
    dataset.LossyImageCompressionRatio = [*ratios, f"{ratio:.2f}"]
    dataset.LossyImageCompressionMethod = [*methods, LOSSY_METHODS[str(target)]]


def _values(dataset: Dataset, keyword: str) -> list[str]:
    """Return the values of element ``keyword`` as strings, none when it is absent or empty."""
    if keyword not in dataset or dataset[keyword].VM == 0:
        return []
    value = dataset[keyword].value
    return [str(item) for item in value] if dataset[keyword].VM > 1 else [str(value)]
