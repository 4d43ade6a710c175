"""Media types of DICOMweb resources and of pixel data per transfer syntax (PS3.18 8.7.3).

Compressed frames are sent in the media type that PS3.18 table 8.7.3-5 gives for their
transfer syntax. Native (uncompressed) frames and other bulk data are sent as
``application/octet-stream`` in little endian byte order, labelled Explicit VR Little
Endian, because PS3.18 8.7.3 rules out Implicit VR Little Endian and Explicit VR Big
Endian for web services.
"""

from __future__ import annotations

from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
JSON = "application/json"
OCTET_STREAM = "application/octet-stream"
MULTIPART_RELATED = "multipart/related"

EXPLICIT_VR_LITTLE_ENDIAN = str(ExplicitVRLittleEndian)
IMPLICIT_VR_LITTLE_ENDIAN = str(ImplicitVRLittleEndian)
EXPLICIT_VR_BIG_ENDIAN = str(ExplicitVRBigEndian)
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = str(DeflatedExplicitVRLittleEndian)

# PS3.18 table 8.7.3-5 (DICOM 2024d) for the image syntaxes up to JPEG 2000 Part 2. The
# rest pair each syntax family with its media type name from PS3.18 8.7.3.5.
COMPRESSED_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.4.110": "image/jxl",
    "1.2.840.10008.1.2.4.111": "image/jxl",
    "1.2.840.10008.1.2.4.112": "image/jxl",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
    "1.2.840.10008.1.2.4.104": "video/mp4",
    "1.2.840.10008.1.2.4.105": "video/mp4",
    "1.2.840.10008.1.2.4.106": "video/mp4",
    "1.2.840.10008.1.2.4.107": "video/H265",
    "1.2.840.10008.1.2.4.108": "video/H265",
}

# Former names of media types, which older clients still send, the case-folded form of
# video/H265, and application/json, which clients send for DICOM JSON.
MEDIA_TYPE_ALIASES: dict[str, str] = {
    "image/x-dicom-rle": "image/dicom-rle",
    "image/x-jls": "image/jls",
    "video/mpeg2": "video/mpeg",
    "video/h265": "video/H265",
    JSON: DICOM_JSON,
}

# Native transfer syntaxes whose pixel data bytes are already little endian.
LITTLE_ENDIAN_NATIVE_SYNTAXES = frozenset(
    {EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
)


def canonical_media_type(media_type: str) -> str:
    """Return ``media_type`` case-folded, then replaced by its current name if it has one."""
    lowered = media_type.strip().lower()
    return MEDIA_TYPE_ALIASES.get(lowered, lowered)


def compressed_media_type(transfer_syntax_uid: str) -> str | None:
    """Return the PS3.18 media type of frames in ``transfer_syntax_uid``, if the table has one."""
    return COMPRESSED_MEDIA_TYPES.get(transfer_syntax_uid)
