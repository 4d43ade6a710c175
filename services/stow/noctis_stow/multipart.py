"""A streaming parser for multipart bodies (RFC 2046 section 5.1.1).

The parser is fed the body chunk by chunk and hands each part's headers and data to a
:class:`PartHandler` as soon as they are known, so neither the body nor a part is ever
held in memory. It buffers at most one chunk plus a boundary delimiter line, or a part's
header block of up to :data:`MAX_HEADER_BYTES`.

Accepted forms, all from RFC 2046: a preamble before the first boundary delimiter and an
epilogue after the closing one (both ignored), transport padding (spaces and tabs) after
a boundary delimiter, and parts without headers. Line breaks around delimiters and in
part headers must be CRLF. A body that ends before its closing delimiter is an error.
"""

from __future__ import annotations

import enum
from typing import Protocol

CRLF = b"\r\n"
MAX_BOUNDARY_LENGTH = 70
MAX_HEADER_BYTES = 16 * 1024
MAX_TRANSPORT_PADDING = 1024
_TRANSPORT_PADDING = b" \t"
_LF = ord("\n")


class MultipartError(ValueError):
    """The body is not a well-formed multipart body."""


class PartHandler(Protocol):
    """Receives the parts of a multipart body in order."""

    def start_part(self, headers: dict[str, str]) -> None:
        """Begin a part. Header names are lowercase and values are decoded as Latin-1."""

    def write_part_data(self, data: bytes) -> None:
        """Append ``data`` to the current part."""

    def end_part(self) -> None:
        """End the current part: its data is complete."""


class _State(enum.Enum):
    PREAMBLE = enum.auto()
    HEADERS = enum.auto()
    DATA = enum.auto()
    END = enum.auto()


class _Delimiter(enum.Enum):
    NEED_MORE = enum.auto()
    NOT_A_DELIMITER = enum.auto()
    NEXT_PART = enum.auto()
    CLOSE = enum.auto()


def validate_boundary(boundary: str) -> str:
    """Return ``boundary`` if RFC 2046 allows it, or raise :class:`MultipartError`.

    The check is lenient about which printable ASCII characters occur, but a boundary
    must be 1 to 70 characters long and must not end in a space.
    """
    if not boundary:
        raise MultipartError("the boundary parameter is empty")
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(
            f"the boundary is {len(boundary)} characters long, over the "
            f"{MAX_BOUNDARY_LENGTH} that RFC 2046 allows"
        )
    if not all(" " <= character <= "~" for character in boundary) or boundary.endswith(" "):
        raise MultipartError(
            f"invalid boundary {boundary!r}: use printable ASCII characters, not ending in a space"
        )
    return boundary


class MultipartParser:
    """Parses one multipart body fed through :meth:`feed` and ended with :meth:`close`."""

    def __init__(self, boundary: str, handler: PartHandler) -> None:
        self.boundary = validate_boundary(boundary)
        self.handler = handler
        self.part_count = 0
        self._delimiter = CRLF + b"--" + boundary.encode("ascii")
        # The delimiter includes the CRLF that ends the line before it. Starting the
        # buffer with a CRLF lets a body that begins with "--boundary" match the same way.
        self._buffer = bytearray(CRLF)
        self._state = _State.PREAMBLE
        self._saw_bare_lf = False

    def feed(self, data: bytes) -> None:
        """Parse the next chunk of the body. Raises :class:`MultipartError` on bad syntax."""
        if self._state is _State.END:
            return  # the epilogue is ignored
        self._buffer += data
        self._parse()

    def close(self) -> None:
        """Finish the body. Raises :class:`MultipartError` if it ended before its close."""
        self._parse()
        if self._state is _State.END:
            return
        if self._state is _State.PREAMBLE:
            hint = ""
            if self._saw_bare_lf:
                hint = "; its lines end in LF alone, but multipart bodies need CRLF line breaks"
            raise MultipartError(
                f"the body contains no boundary delimiter line '--{self.boundary}'{hint}"
            )
        if self._state is _State.HEADERS:
            where = f"in the headers of part {self.part_count + 1}"
        else:
            where = f"inside part {self.part_count}"
        raise MultipartError(
            f"the body ended {where} before the closing boundary "
            f"delimiter '--{self.boundary}--'; the request was truncated"
        )

    def _parse(self) -> None:
        progressed = True
        while progressed:
            if self._state is _State.END:
                self._buffer.clear()
                return
            if self._state is _State.HEADERS:
                progressed = self._parse_headers()
            else:
                progressed = self._scan_for_delimiter()

    def _emit(self, end: int) -> None:
        """Pass the bytes before ``end`` to the current part, or drop them in the preamble."""
        if end <= 0:
            return
        if self._state is _State.DATA:
            self.handler.write_part_data(bytes(self._buffer[:end]))
        del self._buffer[:end]

    def _scan_for_delimiter(self) -> bool:
        buffer = self._buffer
        position = buffer.find(self._delimiter)
        if position < 0:
            # Keep a tail that may be the start of a delimiter completed by the next chunk.
            self._emit(len(buffer) - (len(self._delimiter) - 1))
            return False
        kind, end = self._classify_delimiter(position + len(self._delimiter))
        if kind is _Delimiter.NEED_MORE:
            self._emit(position)
            return False
        if kind is _Delimiter.NOT_A_DELIMITER:
            self._emit(position + 1)
            return True
        self._emit(position)
        if self._state is _State.DATA:
            self.handler.end_part()
        del buffer[: end - position]
        self._state = _State.END if kind is _Delimiter.CLOSE else _State.HEADERS
        return True

    def _classify_delimiter(self, after: int) -> tuple[_Delimiter, int]:
        """Decide whether the delimiter match ending at ``after`` starts a part or closes.

        RFC 2046 forbids the delimiter inside part data, but a match followed by other
        bytes than "--" or padding and CRLF is passed on as data, as python-multipart does.
        """
        buffer = self._buffer
        if len(buffer) - after < 2:
            return _Delimiter.NEED_MORE, after
        if buffer[after : after + 2] == b"--":
            return _Delimiter.CLOSE, after + 2
        index = after
        while index < len(buffer) and buffer[index] in _TRANSPORT_PADDING:
            index += 1
        if index - after > MAX_TRANSPORT_PADDING:
            return _Delimiter.NOT_A_DELIMITER, after
        if len(buffer) - index < 2:
            return _Delimiter.NEED_MORE, after
        if buffer[index : index + 2] == CRLF:
            return _Delimiter.NEXT_PART, index + 2
        if buffer[index] == _LF:
            self._saw_bare_lf = True
        return _Delimiter.NOT_A_DELIMITER, after

    def _parse_headers(self) -> bool:
        buffer = self._buffer
        part_number = self.part_count + 1
        if buffer.startswith(CRLF):
            block = b""
            consumed = len(CRLF)
        else:
            end = buffer.find(CRLF + CRLF, 0, MAX_HEADER_BYTES + 4)
            if end < 0:
                if len(buffer) >= MAX_HEADER_BYTES + 4:
                    raise MultipartError(
                        f"the headers of part {part_number} are longer than "
                        f"{MAX_HEADER_BYTES} bytes or do not end in an empty CRLF line"
                    )
                return False
            block = bytes(buffer[:end])
            consumed = end + 4
        headers = parse_part_headers(block, part_number)
        del buffer[:consumed]
        self.part_count = part_number
        self._state = _State.DATA
        self.handler.start_part(headers)
        return True


def parse_part_headers(block: bytes, part_number: int) -> dict[str, str]:
    """Parse a part's header block (lines without the final empty line).

    Header names are lowercased. Obsolete line folding (a line starting with a space
    or tab continues the previous header) is accepted.
    """
    headers: dict[str, str] = {}
    name = ""
    for line in block.split(CRLF) if block else []:
        text = line.decode("latin-1")
        if text[:1] in (" ", "\t") and name:
            headers[name] = f"{headers[name]} {text.strip()}"
            continue
        field_name, colon, value = text.partition(":")
        if not colon or not field_name.strip():
            raise MultipartError(
                f"part {part_number} has a malformed header line {text[:100]!r}: "
                "expected 'Name: value'"
            )
        name = field_name.strip().lower()
        headers[name] = value.strip()
    return headers
