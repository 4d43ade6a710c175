"""Parsing of Content-Type values and the choice of the response media type."""

from __future__ import annotations

import pytest

from noctis_stow.media_types import (
    DICOM_JSON,
    DICOM_XML,
    MediaTypeError,
    parse_media_type,
    select_response_media_type,
)


def test_quoted_parameters_keep_separators() -> None:
    media_type = parse_media_type(
        'Multipart/Related; TYPE="application/dicom"; boundary="a;b,c\\"d"; start=x'
    )

    assert media_type.essence == "multipart/related"
    assert media_type.parameters == {
        "type": "application/dicom",
        "boundary": 'a;b,c"d',
        "start": "x",
    }


@pytest.mark.parametrize("value", ["multipart", "/related", "multipart/related; boundary"])
def test_invalid_media_type_raises(value: str) -> None:
    with pytest.raises(MediaTypeError, match="invalid"):
        parse_media_type(value)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, DICOM_JSON),
        ("", DICOM_JSON),
        ("*/*", DICOM_JSON),
        ("application/json", DICOM_JSON),
        ("application/dicom+xml", DICOM_XML),
        ("application/dicom+json;q=0.5, application/dicom+xml", DICOM_XML),
        ("application/dicom+xml;q=0.5, application/dicom+json", DICOM_JSON),
        ("text/html, application/*;q=0.1", DICOM_JSON),
        ("text/html", None),
        ("application/dicom+json;q=0", None),
    ],
)
def test_response_media_type_from_accept(accept: str | None, expected: str | None) -> None:
    assert select_response_media_type(accept) == expected
