"""Parsing of a QIDO-RS request into a query (PS3.18 8.3.4 and 10.6.1).

Query parameters are read as PS3.18 8.3.4 defines them: ``{attributeID}={value}``
match keys, ``includefield``, ``fuzzymatching``, ``limit``, ``offset``,
``emptyvaluematching`` and ``multiplevaluematching``. An attribute ID is a keyword of
PS3.6 (``PatientID``) or a tag of eight hex digits (``00100020``). Every problem is
raised as :class:`SearchRequestError` with the HTTP status to send.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from pydicom.datadict import keyword_dict, tag_for_keyword

from noctis_common.query import Query, describe_tag
from noctis_common.uids import InvalidUIDError, validate_uid
from noctis_qido.defaults import (
    RETRIEVE_URL_TAG,
    RETURNED_IF_KNOWN,
    SERIES_INSTANCE_UID_TAG,
    SPECIFIC_CHARACTER_SET_TAG,
    STUDY_INSTANCE_UID_TAG,
    TargetResource,
)

DICOM_JSON = "application/dicom+json"
PLAIN_JSON = "application/json"
MAX_UINT_PARAMETER = 2**31 - 1
INCLUDE_ALL = "all"

EMPTY_VALUE_MATCHING_UNSUPPORTED = (
    "The emptyvaluematching parameter is not supported. "
    "Empty Value Matching has not been performed."
)

_TAG_PATTERN = re.compile(r"[0-9A-Fa-f]{8}")
_UINT_PATTERN = re.compile(r"[0-9]+")
# Item, Item Delimitation Item and Sequence Delimitation Item (PS3.5 section 7.5) are
# tags of the encoding, not attributes that a query can match or return.
ITEM_TAG_GROUP = 0xFFFE


class SearchRequestError(Exception):
    """A rejected request; ``status_code`` is the HTTP status to send."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class SearchRequest:
    """A parsed QIDO-RS request: the index query and how to present its results."""

    target: TargetResource
    query: Query
    media_type: str
    # Whether the server maximum, not the request's limit, set the page size; only
    # then does a cut page carry the Warning of PS3.18 8.3.4.4.1.
    server_limit_applies: bool
    # Warning texts for request parameters that were accepted but not applied.
    warnings: tuple[str, ...]
    specific_character_set_requested: bool
    # Attributes to leave out of a result when they have no value.
    returned_if_known: frozenset[int]
    match_keywords: tuple[str, ...]


def negotiate_media_type(accept: str | None) -> str:
    """Return the response media type for an Accept header (PS3.18 8.7.4).

    Raises :class:`SearchRequestError` with 406 when the header accepts neither
    DICOM JSON nor plain JSON.
    """
    if not accept or not accept.strip():
        return DICOM_JSON
    ranges = []
    for position, media_range in enumerate(accept.split(",")):
        name, *parameters = (part.strip() for part in media_range.split(";"))
        quality = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            ranges.append((-quality, position, name.lower()))
    for _, _, name in sorted(ranges):
        if name in (DICOM_JSON, "application/*", "*/*"):
            return DICOM_JSON
        if name == PLAIN_JSON:
            return PLAIN_JSON
    raise SearchRequestError(
        406,
        f"QIDO-RS results are offered as {DICOM_JSON} or {PLAIN_JSON}, and the Accept "
        f"header {accept!r} allows neither; send Accept: {DICOM_JSON}. "
        'multipart/related; type="application/dicom+xml" is not supported.',
    )


@cache
def _keywords_by_lowercase() -> dict[str, str]:
    return {keyword.lower(): keyword for keyword in keyword_dict}


def parse_attribute_id(text: str, parameter: str) -> int:
    """Return the tag named by a keyword or an eight-digit hex tag (PS3.18 8.3.4.1)."""
    hint = "use a keyword of PS3.6 such as PatientID or a tag such as 00100020"
    tag: int | None = None
    if _TAG_PATTERN.fullmatch(text):
        tag = int(text, 16)
    elif text:
        # pydicom's dictionary has an entry with an empty keyword, so "" is not looked up.
        tag = tag_for_keyword(text)
    if tag is not None and tag >> 16 == ITEM_TAG_GROUP:
        raise SearchRequestError(
            400,
            f"{describe_tag(tag)} ({text}) in {parameter} is an item or delimitation tag, "
            f"not an attribute; {hint}",
        )
    if tag is not None:
        return tag
    suggestion = _keywords_by_lowercase().get(text.lower())
    if suggestion:
        hint = f"keywords are case-sensitive: did you mean {suggestion}?"
    raise SearchRequestError(400, f"unknown attribute {text!r} in {parameter}: {hint}")


def _parse_boolean(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise SearchRequestError(400, f"invalid {name} value {value!r}: use true or false")


def _parse_uint(name: str, value: str, maximum: int) -> int:
    digits = value.lstrip("0") or "0"
    # The length check comes first: int() refuses strings of over 4300 digits.
    if (
        not _UINT_PATTERN.fullmatch(value)
        or len(digits) > len(str(maximum))
        or int(digits) > maximum
    ):
        raise SearchRequestError(
            400, f"invalid {name} value {value!r}: use an integer from 0 to {maximum}"
        )
    return int(digits)


def _validate_path_uid(value: str, keyword: str) -> str:
    try:
        return validate_uid(value, keyword)
    except InvalidUIDError as error:
        raise SearchRequestError(
            400, f"{error}; the request path must name a valid {keyword}"
        ) from error


@dataclass
class _Parameters:
    """The query parameters of one request, sorted by kind."""

    match_keys: list[tuple[int, str]]
    include_tags: set[int]
    include_all: bool = False
    fuzzy_matching: bool = False
    multiple_value_matching: bool = False
    empty_value_matching: bool = False
    limit: int | None = None
    offset: int = 0


_SINGLE_PARAMETERS = frozenset(
    {"fuzzymatching", "limit", "offset", "emptyvaluematching", "multiplevaluematching"}
)


def _read_parameters(items: Iterable[tuple[str, str]]) -> _Parameters:
    parameters = _Parameters(match_keys=[], include_tags=set())
    seen: set[str] = set()
    matched_tags: set[int] = set()
    for name, value in items:
        if name in _SINGLE_PARAMETERS:
            if name in seen:
                raise SearchRequestError(
                    400, f"the query parameter {name} is given more than once; give it once"
                )
            seen.add(name)
        if name == "includefield":
            for item in value.split(","):
                text = item.strip()
                if text == INCLUDE_ALL:
                    parameters.include_all = True
                elif text:
                    # An attribute inside a sequence is returned with its whole sequence.
                    first = text.split(".")[0]
                    parameters.include_tags.add(parse_attribute_id(first, "includefield"))
        elif name == "fuzzymatching":
            parameters.fuzzy_matching = _parse_boolean(name, value)
        elif name == "multiplevaluematching":
            parameters.multiple_value_matching = _parse_boolean(name, value)
        elif name == "emptyvaluematching":
            parameters.empty_value_matching = _parse_boolean(name, value)
        elif name == "limit":
            parameters.limit = _parse_uint(name, value, MAX_UINT_PARAMETER)
        elif name == "offset":
            parameters.offset = _parse_uint(name, value, MAX_UINT_PARAMETER)
        elif "." in name:
            raise SearchRequestError(
                400,
                f"cannot match {name}: Sequence Matching (PS3.4 C.2.2.2.6) is not supported; "
                "match attributes at the top level of the dataset",
            )
        else:
            tag = parse_attribute_id(name, "a match parameter")
            if "\x00" in value:
                raise SearchRequestError(
                    400,
                    f"invalid {describe_tag(tag)} value {value!r}: it contains a NUL "
                    "character, which no DICOM value can match; remove it",
                )
            if tag in matched_tags:
                raise SearchRequestError(
                    400,
                    f"{describe_tag(tag)} is given more than once, the last time as {name}; "
                    "give it once, with a list of UIDs separated by commas where needed",
                )
            matched_tags.add(tag)
            parameters.match_keys.append((tag, value))
    return parameters


def parse_search_request(
    target: TargetResource,
    query_items: Iterable[tuple[str, str]],
    accept: str | None,
    max_limit: int,
    *,
    study_instance_uid: str | None = None,
    series_instance_uid: str | None = None,
) -> SearchRequest:
    """Turn a Search transaction request (PS3.18 10.6.1) into a :class:`SearchRequest`.

    The path's Study and Series Instance UIDs become match keys, so the query is scoped
    to them. Without ``limit``, or with one over ``max_limit``, a page contains at
    most ``max_limit`` matches.
    """
    media_type = negotiate_media_type(accept)
    parameters = _read_parameters(query_items)

    match_keys = list(parameters.match_keys)
    if study_instance_uid is not None:
        uid = _validate_path_uid(study_instance_uid, "StudyInstanceUID")
        match_keys.append((STUDY_INSTANCE_UID_TAG, uid))
    if series_instance_uid is not None:
        uid = _validate_path_uid(series_instance_uid, "SeriesInstanceUID")
        match_keys.append((SERIES_INSTANCE_UID_TAG, uid))

    requested_tags = parameters.include_tags | {tag for tag, _ in parameters.match_keys}
    return_tags = (target.default_tags | parameters.include_tags) - {RETRIEVE_URL_TAG}

    if parameters.limit is None or parameters.limit > max_limit:
        page_size = max_limit
        server_limit_applies = True
    else:
        page_size = parameters.limit
        server_limit_applies = False

    warnings = []
    if parameters.empty_value_matching:
        warnings.append(EMPTY_VALUE_MATCHING_UNSUPPORTED)

    query = Query(
        level=target.level,
        match_keys=tuple(match_keys),
        return_tags=frozenset(return_tags),
        include_all_of_level=parameters.include_all,
        fuzzy_matching=parameters.fuzzy_matching,
        multiple_value_matching=parameters.multiple_value_matching,
        offset=parameters.offset,
        limit=page_size,
    )
    return SearchRequest(
        target=target,
        query=query,
        media_type=media_type,
        server_limit_applies=server_limit_applies,
        warnings=tuple(warnings),
        specific_character_set_requested=SPECIFIC_CHARACTER_SET_TAG in requested_tags,
        returned_if_known=RETURNED_IF_KNOWN - requested_tags,
        match_keywords=tuple(describe_tag(tag) for tag, _ in parameters.match_keys),
    )
