"""Transcoding of instances and frames into a requested transfer syntax (PS3.18 8.7.3).

The stored object never changes: a transcoded instance is decoded and re-encoded in
memory, one instance at a time, with pydicom's pixel data handlers and encoders.
Encoders exist for RLE Lossless (pydicom), JPEG-LS (pyjpegls), JPEG 2000
(pylibjpeg-openjpeg), and JPEG and HTJ2K (imagecodecs, in imagecodecs_encoders);
Deflated Explicit VR Little Endian is written by pydicom.
Lossy targets are offered only to a client that names their transfer syntax.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.utils import pixel_array
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from noctis_common.storage import ObjectStore
from noctis_wado.accept import Offer
from noctis_wado.errors import NotAcceptableError, StoredObjectError
from noctis_wado.imagecodecs_encoders import can_encode, encode_pixel_data
from noctis_wado.lookup import StoredInstance
from noctis_wado.media_types import (
    DICOM,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    OCTET_STREAM,
    compressed_media_type,
)
from noctis_wado.stored_values import open_object

logger = logging.getLogger(__name__)

# PS3.18 8.7.3 rules these out for web services: a client gets them only by naming them.
WEB_EXCLUDED_SYNTAXES = frozenset({IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN})
DEFLATED = str(DeflatedExplicitVRLittleEndian)


@dataclass(frozen=True)
class Target:
    """A transfer syntax that Noctis can encode, and whether it is lossy."""

    transfer_syntax_uid: str
    lossy: bool


# Targets for compressed pixel data, in order of preference for a wildcard request.
COMPRESSED_TARGETS = (
    Target(str(JPEG2000Lossless), lossy=False),
    Target(str(JPEGLSLossless), lossy=False),
    Target(str(RLELossless), lossy=False),
    Target(str(HTJ2KLossless), lossy=False),
    Target(str(HTJ2KLosslessRPCL), lossy=False),
    Target(str(JPEGLosslessSV1), lossy=False),
    Target(str(JPEGLossless), lossy=False),
    Target(str(JPEG2000), lossy=True),
    Target(str(JPEGLSNearLossless), lossy=True),
    Target(str(HTJ2K), lossy=True),
    Target(str(JPEGBaseline8Bit), lossy=True),
    Target(str(JPEGExtended12Bit), lossy=True),
)
# Encoder settings of the lossy targets: a compression ratio of 10 for JPEG 2000 and a
# maximum error of 2 for near-lossless JPEG-LS.
JPEG_2000_RATIOS = [10.0]
# Lossy Image Compression Method (0028,2114) of each lossy target (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHODS = {str(JPEG2000): "ISO_15444_1", str(JPEGLSNearLossless): "ISO_14495_1"}
NEAR_LOSSLESS_ERROR = 2
NATIVE_TARGETS = (EXPLICIT_VR_LITTLE_ENDIAN, DEFLATED)
# Default transfer syntax of each compressed media type (PS3.18 table 8.7.3-5).
MEDIA_TYPE_DEFAULTS = frozenset(
    {
        str(JPEG2000Lossless),
        str(JPEGLSLossless),
        str(RLELossless),
        str(JPEGLosslessSV1),
        str(HTJ2KLossless),
    }
)


def instance_offers(stored_transfer_syntax_uid: str, has_pixel_data: bool = True) -> list[Offer]:
    """Return the forms of an instance: the stored syntax first, then its transcodings.

    A bare ``application/dicom`` selects the stored syntax, or Explicit VR Little
    Endian when PS3.18 8.7.3 rules the stored syntax out. The other syntaxes are
    selected only by naming them.
    """
    excluded = stored_transfer_syntax_uid in WEB_EXCLUDED_SYNTAXES
    offers = [Offer(DICOM, EXPLICIT_VR_LITTLE_ENDIAN)] if excluded else []
    offers.append(Offer(DICOM, stored_transfer_syntax_uid, default_transfer_syntax=not excluded))
    targets = list(NATIVE_TARGETS)
    if has_pixel_data:
        targets += [target.transfer_syntax_uid for target in COMPRESSED_TARGETS]
    offers += [
        Offer(DICOM, uid, default_transfer_syntax=False, explicit_only=True)
        for uid in targets
        if uid != stored_transfer_syntax_uid and not (excluded and uid == EXPLICIT_VR_LITTLE_ENDIAN)
    ]
    return offers


def frame_transcode_offers(stored_transfer_syntax_uid: str, encapsulated: bool) -> list[Offer]:
    """Return the transcoded forms of frames, after the forms that need no transcoding."""
    offers = []
    if encapsulated:
        # Decoded frames: application/octet-stream without a transfer-syntax parameter.
        offers.append(Offer(OCTET_STREAM, EXPLICIT_VR_LITTLE_ENDIAN))
    for target in COMPRESSED_TARGETS:
        if target.transfer_syntax_uid == stored_transfer_syntax_uid:
            continue
        media_type = compressed_media_type(target.transfer_syntax_uid)
        assert media_type is not None  # every target is in PS3.18 table 8.7.3-5
        offers.append(
            Offer(
                media_type,
                target.transfer_syntax_uid,
                default_transfer_syntax=target.transfer_syntax_uid in MEDIA_TYPE_DEFAULTS,
                explicit_only=target.lossy,
            )
        )
    return offers


def load_dataset(store: ObjectStore, instance: StoredInstance) -> Dataset:
    """Read the whole stored object of ``instance`` into memory."""
    with open_object(store, instance) as handle:
        try:
            return dcmread(handle, force=True)
        except Exception as error:  # pydicom raises many types on corrupt input
            raise StoredObjectError(
                f"the stored object of instance {instance.sop_instance_uid} "
                f"({instance.object_key}) cannot be parsed: {error}"
            ) from error


def _is_compressed(transfer_syntax_uid: str) -> bool:
    return UID(transfer_syntax_uid).is_compressed


def transcode_dataset(dataset: Dataset, transfer_syntax_uid: str, resource: str) -> Dataset:
    """Convert ``dataset`` in place to ``transfer_syntax_uid`` and return it.

    Raises :class:`NotAcceptableError` naming the reason when the pixel data cannot be
    decoded or encoded in that syntax.
    """
    target = UID(transfer_syntax_uid)
    if "PixelData" not in dataset:
        if not dataset.file_meta.TransferSyntaxUID.is_little_endian:
            dataset.set_original_encoding(False, True)
        # Without pixel data every syntax encodes the dataset alike (PS3.5 A.4).
        dataset.file_meta.TransferSyntaxUID = target
        return dataset
    try:
        if not dataset.file_meta.TransferSyntaxUID.is_little_endian:
            _to_little_endian(dataset)
        if dataset.file_meta.TransferSyntaxUID.is_compressed:
            dataset.decompress()
        if can_encode(str(target)):
            encode_pixel_data(dataset, target)
        elif str(target) in LOSSY_METHODS:
            # NOTE: a lossy transcoding keeps the SOP Instance UID, so that the client
            # gets the instance it requested. Lossy Image Compression (0028,2110) marks it.
            dataset.compress(
                target,
                generate_instance_uid=False,
                jls_error=NEAR_LOSSLESS_ERROR if target == JPEGLSNearLossless else None,
                j2k_cr=JPEG_2000_RATIOS if target == JPEG2000 else None,
            )
            dataset.LossyImageCompression = "01"
            dataset.LossyImageCompressionMethod = LOSSY_METHODS[str(target)]
        elif target.is_compressed:
            dataset.compress(target, generate_instance_uid=False)
        else:
            dataset.file_meta.TransferSyntaxUID = target
    except Exception as error:  # decoders and encoders raise many types
        raise NotAcceptableError(
            f"{resource} cannot be transcoded to transfer syntax {transfer_syntax_uid}: "
            f"{error}; request its stored transfer syntax or transfer-syntax=*"
        ) from error
    return dataset


def _to_little_endian(dataset: Dataset) -> None:
    """Swap native big endian Pixel Data to little endian and mark the dataset so.

    NOTE: other OB/OW values of a big endian dataset, rare in practice, keep their bytes.
    """
    if "PixelData" in dataset:
        pixels = pixel_array(dataset, raw=True)
        dataset.PixelData = pixels.astype(pixels.dtype.newbyteorder("<")).tobytes()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.set_original_encoding(False, True)


def encode_part10(dataset: Dataset) -> bytes:
    """Return ``dataset`` as a Part 10 file in the transfer syntax of its File Meta."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def transcoded_instance(store: ObjectStore, instance: StoredInstance, target: str) -> bytes:
    """Return the Part 10 bytes of ``instance`` transcoded to ``target``."""
    dataset = load_dataset(store, instance)
    transcode_dataset(dataset, target, f"instance {instance.sop_instance_uid}")
    return encode_part10(dataset)


def transcoded_frames(
    store: ObjectStore, instance: StoredInstance, frame_numbers: Sequence[int], target: str
) -> list[bytes]:
    """Return the requested frames of ``instance``, decoded or encoded in ``target``.

    Frames in Explicit VR Little Endian are the decoded pixel values, little endian.
    """
    dataset = load_dataset(store, instance)
    transcode_dataset(dataset, target, f"frames of instance {instance.sop_instance_uid}")
    frame_count = int(dataset.get("NumberOfFrames") or 1)
    if _is_compressed(target):
        frames = list(generate_frames(dataset.PixelData, number_of_frames=frame_count))
    else:
        pixel_data: bytes = dataset.PixelData
        frame_length = len(pixel_data) // frame_count
        frames = [
            pixel_data[index * frame_length : (index + 1) * frame_length]
            for index in range(frame_count)
        ]
    return [frames[number - 1] for number in frame_numbers]
