"""The streaming multipart parser on its own, fed in chunks of every size."""

from __future__ import annotations

import pytest

from noctis_stow.multipart import (
    MAX_HEADER_BYTES,
    MultipartError,
    MultipartParser,
    validate_boundary,
)
from tests.stow.bodies import BOUNDARY, Part, multipart_body


class RecordingHandler:
    """Collects the parts that the parser hands over."""

    def __init__(self) -> None:
        self.parts: list[tuple[dict[str, str], bytearray]] = []
        self.open = False

    def start_part(self, headers: dict[str, str]) -> None:
        assert not self.open, "a part started before the previous one ended"
        self.parts.append((headers, bytearray()))
        self.open = True

    def write_part_data(self, data: bytes) -> None:
        assert self.open, "data arrived outside a part"
        self.parts[-1][1].extend(data)

    def end_part(self) -> None:
        self.open = False


def parse(body: bytes, chunk_size: int | None = None, boundary: str = BOUNDARY) -> RecordingHandler:
    handler = RecordingHandler()
    parser = MultipartParser(boundary, handler)
    size = chunk_size or max(len(body), 1)
    for start in range(0, len(body), size):
        parser.feed(body[start : start + size])
    parser.close()
    return handler


_DASH_BOUNDARY = b"--" + BOUNDARY.encode()
# Bytes that resemble a boundary delimiter but are part data by RFC 2046's rules.
TRICKY_DATA = (
    b"\r\n" + _DASH_BOUNDARY + b"X followed by other text"
    b"\n" + _DASH_BOUNDARY + b"\r\n"  # after a bare LF
    b"\r\n" + _DASH_BOUNDARY + b" \tpadding then text"
    b"\r\n" + _DASH_BOUNDARY + b"-one hyphen"
    b"\r\n\r\n\r\r\n--\r\n\r"
)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 7, 23, 64, None])
def test_parts_survive_any_chunking(chunk_size: int | None) -> None:
    body = multipart_body(
        [Part(b"first"), Part(TRICKY_DATA, {}), Part(b"", {"Content-Type": "text/plain"})],
        preamble=b"preamble text\r\n--" + BOUNDARY.encode() + b"-not-yet",
        epilogue=b"epilogue\r\n--" + BOUNDARY.encode() + b"\r\nignored",
        padding=b" \t ",
    )

    handler = parse(body, chunk_size)

    assert [bytes(data) for _, data in handler.parts] == [b"first", TRICKY_DATA, b""]
    assert [headers for headers, _ in handler.parts] == [
        {"content-type": "application/dicom"},
        {},
        {"content-type": "text/plain"},
    ]
    assert not handler.open


def test_body_may_start_without_preamble() -> None:
    handler = parse(multipart_body([Part(b"data")]))

    assert [bytes(data) for _, data in handler.parts] == [b"data"]


def test_header_names_are_case_insensitive() -> None:
    body = multipart_body([Part(b"x", {"CONTENT-type": "Application/DICOM", "X-Other": "a"})])

    headers, _ = parse(body).parts[0]

    assert headers == {"content-type": "Application/DICOM", "x-other": "a"}


def test_folded_header_lines_are_joined() -> None:
    body = multipart_body(
        [Part(b"x", {"Content-Type": "application/dicom;\r\n transfer-syntax=1.2"})]
    )

    headers, _ = parse(body).parts[0]

    assert headers["content-type"] == "application/dicom; transfer-syntax=1.2"


def test_body_with_only_close_delimiter_has_no_parts() -> None:
    handler = parse(b"--" + BOUNDARY.encode() + b"--\r\n")

    assert handler.parts == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            multipart_body([Part(b"data")], close=False),
            "ended inside part 1 before the closing boundary",
            id="no-close-delimiter",
        ),
        pytest.param(
            multipart_body([Part(b"data")])[:-8],
            "ended inside part 1",
            id="cut-inside-close-delimiter",
        ),
        pytest.param(
            multipart_body([Part(b"data")])[:30],
            "ended in the headers of part 1",
            id="cut-inside-headers",
        ),
        pytest.param(
            multipart_body([Part(b"data")], line_break=b"\n"),
            "LF alone",
            id="bare-lf-line-breaks",
        ),
        pytest.param(
            b"no delimiter anywhere",
            "contains no boundary delimiter line",
            id="no-delimiter",
        ),
        pytest.param(
            multipart_body([Part(b"data", {"Bad Header Line": ""})]).replace(b"Line: ", b"Line"),
            "malformed header line",
            id="header-without-colon",
        ),
        pytest.param(
            multipart_body([Part(b"data", {"X-Long": "a" * (MAX_HEADER_BYTES + 1)})]),
            f"longer than {MAX_HEADER_BYTES} bytes",
            id="headers-too-long",
        ),
    ],
)
def test_malformed_body_raises(body: bytes, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        parse(body, chunk_size=5)


def test_truncated_body_keeps_earlier_parts_complete() -> None:
    body = multipart_body([Part(b"complete"), Part(b"cut short")], close=False)
    handler = RecordingHandler()
    parser = MultipartParser(BOUNDARY, handler)

    parser.feed(body)

    assert bytes(handler.parts[0][1]) == b"complete"
    with pytest.raises(MultipartError, match="part 2"):
        parser.close()


@pytest.mark.parametrize(
    ("boundary", "message"),
    [
        ("", "empty"),
        ("x" * 71, "71 characters long"),
        ("ends with space ", "not ending in a space"),
        ("line\nbreak", "printable ASCII"),
    ],
)
def test_invalid_boundary_is_rejected(boundary: str, message: str) -> None:
    with pytest.raises(MultipartError, match=message):
        validate_boundary(boundary)


def test_boundary_with_rfc_special_characters() -> None:
    boundary = "=_a'()+,-./:? 9"

    handler = parse(multipart_body([Part(b"data")], boundary), chunk_size=3, boundary=boundary)

    assert [bytes(data) for _, data in handler.parts] == [b"data"]


def test_part_data_streams_before_part_ends() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    body = multipart_body([Part(data)])
    handler = RecordingHandler()
    parser = MultipartParser(BOUNDARY, handler)

    half = len(body) // 2
    for start in range(0, half, 65536):
        parser.feed(body[start : min(start + 65536, half)])

    received = len(handler.parts[0][1])
    assert received >= half - 200
    assert handler.open
