"""Framing of ``multipart/related`` response bodies (RFC 2387, PS3.18 8.6.1.2)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from noctis_wado.media_types import MULTIPART_RELATED


@dataclass(frozen=True)
class MultipartResponse:
    """A multipart response: its Content-Type, the Content-Type of its parts, its body chunks.

    ``part_type`` is None when the parts differ in transfer syntax.
    """

    content_type: str
    part_type: str | None
    body: Iterator[bytes]


def new_boundary() -> str:
    """Return a random boundary; 128 random bits make a clash with part content negligible."""
    return f"noctis-{secrets.token_hex(16)}"


def multipart_content_type(
    media_type: str, boundary: str, transfer_syntax_uid: str | None = None
) -> str:
    """Return the Content-Type of a multipart body whose parts are of ``media_type``."""
    value = f'{MULTIPART_RELATED}; type="{media_type}"; boundary={boundary}'
    if transfer_syntax_uid:
        value += f"; transfer-syntax={transfer_syntax_uid}"
    return value


def part_content_type(media_type: str, transfer_syntax_uid: str | None) -> str:
    """Return the Content-Type of one part, naming its transfer syntax when it has one."""
    if transfer_syntax_uid:
        return f"{media_type}; transfer-syntax={transfer_syntax_uid}"
    return media_type


def frame_multipart(boundary: str, parts: Iterable[tuple[str, Iterable[bytes]]]) -> Iterator[bytes]:
    """Yield a multipart body: each ``(content_type, chunks)`` part, then the close delimiter.

    The chunks of a part are consumed only when the body reaches that part, so a
    caller can pass generators that read the content as it is sent.
    """
    delimiter = f"--{boundary}".encode("ascii")
    first = True
    for content_type, chunks in parts:
        prefix = b"" if first else b"\r\n"
        first = False
        yield prefix + delimiter + f"\r\nContent-Type: {content_type}\r\n\r\n".encode("ascii")
        yield from chunks
    if first:
        # A body without parts still needs one delimiter before the close delimiter
        # (RFC 2046 section 5.1.1), so an empty list is sent as one empty part.
        yield delimiter + b"\r\n\r\n"
    yield b"\r\n" + delimiter + b"--\r\n"
