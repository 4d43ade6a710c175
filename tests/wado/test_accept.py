"""Accept header parsing and negotiation, alone and through Retrieve Instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noctis_common.context import ArchiveContext
from noctis_wado.accept import MediaRange, Offer, parse_accept, select_offer
from tests.support import write_series
from tests.wado.helpers import instance_url, parse_multipart, store_file

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
# A transfer syntax that Noctis never encodes, so a request naming it alone gets 406.
MPEG2_MAIN_PROFILE = "1.2.840.10008.1.2.4.100"
DICOM_TYPE = 'multipart/related; type="application/dicom"'


def test_parse_accept_reads_quoted_and_unquoted() -> None:
    ranges = parse_accept(
        'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.5, '
        "multipart/related;type=image/jpeg;transfer-syntax=1.2.840.10008.1.2.4.50"
    )

    assert ranges == [
        MediaRange("multipart/related", "application/dicom", ("*",), 0.5),
        MediaRange("multipart/related", "image/jpeg", (JPEG_BASELINE,), 1.0),
    ]


def test_parse_accept_collects_transfer_syntax_lists() -> None:
    repeated = parse_accept(
        f"{DICOM_TYPE}; transfer-syntax={JPEG_BASELINE}; transfer-syntax={EXPLICIT}"
    )
    quoted = parse_accept(f'{DICOM_TYPE}; transfer-syntax="{JPEG_BASELINE},{EXPLICIT}"')
    unquoted = parse_accept(f"{DICOM_TYPE}; transfer-syntax={JPEG_BASELINE}, {EXPLICIT}")
    inside_type = parse_accept(
        f'multipart/related; type="application/dicom; transfer-syntax={EXPLICIT}"'
    )

    assert repeated[0].transfer_syntaxes == (JPEG_BASELINE, EXPLICIT)
    assert quoted[0].transfer_syntaxes == (JPEG_BASELINE, EXPLICIT)
    assert unquoted == repeated
    assert inside_type[0].transfer_syntaxes == (EXPLICIT,)


def test_parse_accept_skips_malformed_elements() -> None:
    ranges = parse_accept("garbage, application/dicom+json; q=abc, , */*")

    assert ranges == [MediaRange("*/*", None, (), 1.0)]


def test_parse_accept_replaces_former_names() -> None:
    ranges = parse_accept('multipart/related; type="image/x-jls", image/x-dicom-rle')

    assert ranges[0].related_type == "image/jls"
    assert ranges[1].media_type == "image/dicom-rle"


def test_select_offer_prefers_higher_quality() -> None:
    jpeg = Offer("image/jpeg", JPEG_BASELINE)
    octets = Offer("application/octet-stream", JPEG_BASELINE, default_transfer_syntax=False)
    ranges = parse_accept(
        'multipart/related; type="image/jpeg"; q=0.2, '
        'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    )

    assert select_offer(ranges, [jpeg, octets]) == octets


def test_select_offer_most_specific_range_wins() -> None:
    jpeg = Offer("image/jpeg", JPEG_BASELINE)

    assert (
        select_offer(parse_accept('*/*, multipart/related; type="image/jpeg"; q=0'), [jpeg]) is None
    )


# Accept header of a Retrieve Instance request for an Explicit VR Little Endian
# instance, and the expected status.
RETRIEVE_ACCEPT_CASES = [
    (None, 200),
    ("", 200),
    ("*/*", 200),
    ("multipart/related", 200),
    ("multipart/*", 200),
    (DICOM_TYPE, 200),
    ("multipart/related; type=application/dicom", 200),
    ('MULTIPART/RELATED; TYPE="APPLICATION/DICOM"', 200),
    (f"{DICOM_TYPE}; transfer-syntax=*", 200),
    (f"{DICOM_TYPE}; transfer-syntax={EXPLICIT}", 200),
    (f'{DICOM_TYPE}; transfer-syntax="{EXPLICIT}"', 200),
    (f"{DICOM_TYPE}; transfer-syntax={MPEG2_MAIN_PROFILE}", 406),
    (f"{DICOM_TYPE}; transfer-syntax={MPEG2_MAIN_PROFILE}; transfer-syntax={EXPLICIT}", 200),
    (f"{DICOM_TYPE}; transfer-syntax={MPEG2_MAIN_PROFILE}, {EXPLICIT}", 200),
    (f'multipart/related; type="application/dicom; transfer-syntax={MPEG2_MAIN_PROFILE}"', 406),
    ("application/dicom", 200),
    (f"{DICOM_TYPE}; q=0", 406),
    (f"{DICOM_TYPE}; q=0, */*", 406),
    (f"{DICOM_TYPE}; transfer-syntax={MPEG2_MAIN_PROFILE}, {DICOM_TYPE}; q=0.1", 200),
    ("text/html, application/xhtml+xml, */*;q=0.8", 200),
    ("application/dicom+json", 406),
    ('multipart/related; type="application/octet-stream"', 406),
    ('multipart/related; type="application/dicom+xml"', 406),
]


@pytest.mark.parametrize(("accept", "expected_status"), RETRIEVE_ACCEPT_CASES)
def test_retrieve_instance_accept_variants(
    sqlite_client: TestClient,
    sqlite_context: ArchiveContext,
    tmp_path: Path,
    accept: str | None,
    expected_status: int,
) -> None:
    (path,) = write_series(tmp_path, 1)
    stored = store_file(sqlite_context, path)
    headers = {} if accept is None else {"Accept": accept}

    response = sqlite_client.get(instance_url(stored), headers=headers)

    assert response.status_code == expected_status, response.text
    if expected_status == 200:
        (part,) = parse_multipart(response)
        assert part.content_type == f"application/dicom; transfer-syntax={EXPLICIT}"
