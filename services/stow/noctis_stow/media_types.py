"""Media type parsing and response negotiation for STOW-RS (PS3.18 section 10.5).

Header values have the HTTP form ``type/subtype`` followed by ``; name=value``
parameters, where a value is a token or a quoted string.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

DICOM = "application/dicom"
DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
MULTIPART_RELATED = "multipart/related"

# Accept media ranges and the response media type each one selects, most preferred first.
_RESPONSE_MEDIA_TYPES = {
    DICOM_JSON: DICOM_JSON,
    "application/json": DICOM_JSON,
    DICOM_XML: DICOM_XML,
    "application/*": DICOM_JSON,
    "*/*": DICOM_JSON,
}
SUPPORTED_RESPONSE_MEDIA_TYPES = (DICOM_JSON, DICOM_XML)


class MediaTypeError(ValueError):
    """A header value that is not a valid media type."""


@dataclass(frozen=True)
class MediaType:
    """A parsed media type: lowercase ``type/subtype`` and parameters with lowercase names."""

    essence: str
    parameters: dict[str, str] = field(default_factory=dict)


def _split_outside_quotes(value: str, separator: str) -> Iterator[str]:
    """Split ``value`` at ``separator`` where it is not inside a quoted string."""
    start = 0
    quoted = False
    escaped = False
    for index, character in enumerate(value):
        if escaped:
            escaped = False
        elif quoted and character == "\\":
            escaped = True
        elif character == '"':
            quoted = not quoted
        elif character == separator and not quoted:
            yield value[start:index]
            start = index + 1
    yield value[start:]


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner = value[1:-1]
        result = []
        escaped = False
        for character in inner:
            if escaped or character != "\\":
                result.append(character)
                escaped = False
            else:
                escaped = True
        return "".join(result)
    return value


def parse_media_type(value: str) -> MediaType:
    """Parse a Content-Type value or one Accept media range.

    Raises :class:`MediaTypeError` when the value has no ``type/subtype`` or a
    parameter without ``=``.
    """
    essence, *segments = (segment.strip() for segment in _split_outside_quotes(value, ";"))
    type_, slash, subtype = essence.partition("/")
    if not slash or not type_.strip() or not subtype.strip() or " " in essence:
        raise MediaTypeError(f"invalid media type {value!r}: expected 'type/subtype'")
    parameters: dict[str, str] = {}
    for segment in segments:
        if not segment:
            continue
        name, equals, parameter_value = segment.partition("=")
        if not equals or not name.strip():
            raise MediaTypeError(
                f"invalid parameter {segment!r} in media type {value!r}: expected 'name=value'"
            )
        parameters[name.strip().lower()] = _unquote(parameter_value.strip())
    return MediaType(essence.lower(), parameters)


def _quality(media_range: MediaType) -> float:
    try:
        return float(media_range.parameters.get("q", "1"))
    except ValueError:
        return 0.0


def select_response_media_type(accept: str | None) -> str | None:
    """Return the media type of the Store Instances Response for an Accept header value.

    A missing or empty Accept selects DICOM JSON. Returns None when no acceptable media
    type is supported, and the caller then rejects the request with 406 Not Acceptable.
    """
    if accept is None or not accept.strip():
        return DICOM_JSON
    candidates: list[tuple[float, int, str]] = []
    for entry in _split_outside_quotes(accept, ","):
        if not entry.strip():
            continue
        try:
            media_range = parse_media_type(entry)
        except MediaTypeError:
            continue
        selected = _RESPONSE_MEDIA_TYPES.get(media_range.essence)
        quality = _quality(media_range)
        if selected is not None and quality > 0:
            preference = list(_RESPONSE_MEDIA_TYPES).index(media_range.essence)
            candidates.append((-quality, preference, selected))
    if not candidates:
        return None
    return min(candidates)[2]
