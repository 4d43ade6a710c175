"""Accept header parsing and content negotiation for WADO-RS (PS3.18 8.7.3).

Parsing is lenient, because DICOMweb clients differ in how they write Accept. It
reads quoted and unquoted parameter values, ``transfer-syntax`` repeated or given as
a list, and a ``type`` parameter that carries its own ``transfer-syntax``. A bare
media type such as ``application/dicom`` is read as its multipart form
``multipart/related; type="application/dicom"``. Elements that cannot be parsed are
skipped with a warning.

Negotiation picks one :class:`Offer`, a form in which the server can send the
resource without transcoding, by the rules of HTTP's Accept field (RFC 2616 section
14.1). The most specific media range that matches an offer sets its quality, and
``q=0`` rules an offer out. Among offers of equal quality the first one wins.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from noctis_wado.media_types import MULTIPART_RELATED, canonical_media_type

logger = logging.getLogger(__name__)

ANY_TRANSFER_SYNTAX = "*"
_UID_PATTERN = re.compile(r"[0-9]+(\.[0-9]+)+")


@dataclass(frozen=True)
class MediaRange:
    """One element of an Accept header.

    ``related_type`` is the ``type`` parameter of ``multipart/related`` (None when
    absent), and ``transfer_syntaxes`` lists every ``transfer-syntax`` value given.
    """

    media_type: str
    related_type: str | None
    transfer_syntaxes: tuple[str, ...]
    quality: float

    @property
    def is_multipart(self) -> bool:
        return self.media_type in (MULTIPART_RELATED, "multipart/*")


@dataclass(frozen=True)
class Offer:
    """A form in which the server can send a resource.

    ``multipart`` is true for resources sent as ``multipart/related`` parts of
    ``media_type``. ``default_transfer_syntax`` is whether a media range that names
    ``media_type`` without a ``transfer-syntax`` parameter accepts this offer. PS3.18
    8.7.3 selects the media type's default transfer syntax then, which can need
    transcoding. Noctis reads such a range as "the stored transfer syntax" instead,
    except where the media type itself implies decoding (``application/octet-stream``
    for compressed frames): those offers set ``default_transfer_syntax=False``.
    ``explicit_only`` offers, such as transcodings, are selected only by a media range
    that names their transfer syntax, never by a wildcard.
    """

    media_type: str
    transfer_syntax_uid: str | None = None
    multipart: bool = True
    default_transfer_syntax: bool = True
    explicit_only: bool = False

    def describe(self) -> str:
        """Return the Accept value that selects this offer."""
        if not self.multipart:
            return self.media_type
        text = f'{MULTIPART_RELATED}; type="{self.media_type}"'
        if self.transfer_syntax_uid:
            text += f"; transfer-syntax={self.transfer_syntax_uid}"
        return text


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    """Split ``text`` at ``separator`` characters that are not inside a quoted string."""
    pieces: list[str] = []
    current: list[str] = []
    in_quotes = False
    escaped = False
    for character in text:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\" and in_quotes:
            current.append(character)
            escaped = True
        elif character == '"':
            current.append(character)
            in_quotes = not in_quotes
        elif character == separator and not in_quotes:
            pieces.append("".join(current))
            current = []
        else:
            current.append(character)
    pieces.append("".join(current))
    return pieces


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def _transfer_syntax_values(value: str) -> list[str]:
    """Return the UIDs of one ``transfer-syntax`` value, which some clients write as a list."""
    return [item.strip() for item in _unquote(value).split(",") if item.strip()]


def _parse_element(element: str) -> MediaRange | None:
    media_type, *parameters = _split_outside_quotes(element, ";")
    media_type = canonical_media_type(media_type)
    if media_type.count("/") != 1 or " " in media_type:
        logger.warning("ignored Accept element %r: it is not a media range", element.strip())
        return None

    related_type: str | None = None
    transfer_syntaxes: list[str] = []
    quality = 1.0
    for parameter in parameters:
        name, separator, raw_value = parameter.partition("=")
        name = name.strip().lower()
        if not separator or not name:
            continue
        if name == "q":
            try:
                quality = float(_unquote(raw_value))
            except ValueError:
                quality = math.nan
            # float() also reads "nan", which compares as neither higher nor lower.
            if math.isnan(quality):
                logger.warning("ignored Accept element %r: invalid q value", element.strip())
                return None
            quality = min(max(quality, 0.0), 1.0)
        elif name == "type":
            # A type value may carry its own parameters: type="application/dicom;
            # transfer-syntax=...". Those parameters are read as if given outside.
            inner_type, *inner_parameters = _unquote(raw_value).split(";")
            related_type = canonical_media_type(inner_type)
            for inner in inner_parameters:
                inner_name, _, inner_value = inner.partition("=")
                if inner_name.strip().lower() == "transfer-syntax":
                    transfer_syntaxes.extend(_transfer_syntax_values(inner_value))
        elif name == "transfer-syntax":
            transfer_syntaxes.extend(_transfer_syntax_values(raw_value))
    return MediaRange(media_type, related_type, tuple(transfer_syntaxes), quality)


def parse_accept(header: str | None) -> list[MediaRange]:
    """Parse an Accept header into media ranges, in header order.

    An element that is a bare UID continues the unquoted ``transfer-syntax`` list of the
    element before it, because a comma in such a list splits the header there.
    """
    ranges: list[MediaRange] = []
    for element in _split_outside_quotes(header or "", ","):
        text = element.strip()
        if not text:
            continue
        if _UID_PATTERN.fullmatch(text) and ranges and ranges[-1].transfer_syntaxes:
            previous = ranges[-1]
            ranges[-1] = MediaRange(
                previous.media_type,
                previous.related_type,
                (*previous.transfer_syntaxes, text),
                previous.quality,
            )
            continue
        parsed = _parse_element(text)
        if parsed is not None:
            ranges.append(parsed)
    return ranges


def _type_specificity(media_range: str, media_type: str) -> int | None:
    """Return 3 for an exact match, 2 for ``type/*``, 1 for ``*/*``, None for no match."""
    if media_range == media_type:
        return 3
    if media_range == "*/*":
        return 1
    range_type, _, range_subtype = media_range.partition("/")
    if range_subtype == "*" and media_type.partition("/")[0] == range_type:
        return 2
    return None


def match_specificity(media_range: MediaRange, offer: Offer) -> int | None:
    """Return how specifically ``media_range`` selects ``offer``, or None if it does not.

    A bare media range matches a multipart offer of the same media type, which reads
    ``application/dicom`` as ``multipart/related; type="application/dicom"``.
    """
    if media_range.is_multipart:
        if not offer.multipart:
            return None
        inner_type = media_range.related_type or "*/*"
    else:
        inner_type = media_range.media_type
    type_score = _type_specificity(inner_type, offer.media_type)
    if type_score is None:
        return None

    if offer.explicit_only and offer.transfer_syntax_uid not in media_range.transfer_syntaxes:
        return None
    if not media_range.transfer_syntaxes:
        if type_score == 3 and not offer.default_transfer_syntax:
            return None
        return 2 * type_score
    if ANY_TRANSFER_SYNTAX in media_range.transfer_syntaxes:
        return 2 * type_score
    if offer.transfer_syntax_uid in media_range.transfer_syntaxes:
        return 2 * type_score + 1
    return None


def offer_quality(ranges: Sequence[MediaRange], offer: Offer) -> float:
    """Return the quality that ``ranges`` give ``offer``: 0 when no range accepts it."""
    best: tuple[int, float] | None = None
    for media_range in ranges:
        specificity = match_specificity(media_range, offer)
        if specificity is None:
            continue
        if best is None or specificity > best[0]:
            best = (specificity, media_range.quality)
    return 0.0 if best is None else best[1]


def select_offer(ranges: Sequence[MediaRange], offers: Sequence[Offer]) -> Offer | None:
    """Return the acceptable offer of highest quality, or None if none is acceptable.

    Without media ranges (no Accept header) the first offer is selected.
    """
    if not offers:
        return None
    if not ranges:
        return offers[0]
    selected: Offer | None = None
    selected_quality = 0.0
    for offer in offers:
        quality = offer_quality(ranges, offer)
        if quality > selected_quality:
            selected, selected_quality = offer, quality
    return selected


def describe_offers(offers: Sequence[Offer]) -> str:
    """Return the offers as a list of Accept values for an error message."""
    return ", ".join(dict.fromkeys(f"'{offer.describe()}'" for offer in offers))
