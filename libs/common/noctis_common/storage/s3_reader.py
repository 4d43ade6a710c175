"""A seekable, read-only file object over one S3 object, read by ranged GET requests.

WADO-RS parses the stored object's header, then reads frames and bulk data by
position. Over S3 each read that misses the buffer becomes one ranged GET, so only
the bytes asked for (plus a read-ahead window) leave the server, never the whole object.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from noctis_common.storage.base import StorageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

MIN_READ_AHEAD_BYTES = 32 * 1024
MAX_READ_AHEAD_BYTES = 8 * 1024 * 1024

ReadRange = Callable[[int, int], bytes]


class S3ObjectReader(io.BufferedIOBase):
    """Read an object of known size through ``read_range(start, length)``.

    A read that continues where the previous request ended doubles the read-ahead
    window, up to 8 MiB, so sequential reading needs few requests. A read after a seek
    elsewhere starts again from 32 KiB, so scattered small reads stay small.
    """

    def __init__(self, read_range: ReadRange, size: int, name: str) -> None:
        super().__init__()
        self._read_range = read_range
        self._size = size
        self.name = name
        self._position = 0
        self._buffer = b""
        self._buffer_start = 0
        self._fetched_end = -1
        self._read_ahead = MIN_READ_AHEAD_BYTES

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._check_open()
        if whence == os.SEEK_SET:
            position = offset
        elif whence == os.SEEK_CUR:
            position = self._position + offset
        elif whence == os.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence {whence}; use os.SEEK_SET, SEEK_CUR or SEEK_END")
        if position < 0:
            raise ValueError(f"negative seek position {position}")
        self._position = position
        return position

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        available = max(0, self._size - self._position)
        requested = available if size is None or size < 0 else min(size, available)
        if requested == 0:
            return b""

        pieces: list[bytes] = []
        buffer_offset = self._position - self._buffer_start
        if 0 <= buffer_offset < len(self._buffer):
            piece = self._buffer[buffer_offset : buffer_offset + requested]
            pieces.append(piece)
            self._position += len(piece)
            requested -= len(piece)
        if requested > 0:
            pieces.append(self._fetch(requested))
        return b"".join(pieces)

    def read1(self, size: int = -1) -> bytes:
        return self.read(size)

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def readinto1(self, buffer: WriteableBuffer) -> int:
        return self.readinto(buffer)

    def close(self) -> None:
        self._buffer = b""
        super().close()

    def _fetch(self, requested: int) -> bytes:
        """Fetch ``requested`` bytes from the current position, plus the read-ahead window."""
        start = self._position
        if start == self._fetched_end:
            self._read_ahead = min(self._read_ahead * 2, MAX_READ_AHEAD_BYTES)
        else:
            self._read_ahead = MIN_READ_AHEAD_BYTES
        length = min(max(requested, self._read_ahead), self._size - start)
        data = self._read_range(start, length)
        if len(data) != length:
            raise StorageError(
                f"{self.name}: expected {length} bytes at byte {start}, received "
                f"{len(data)}; the object changed or is shorter than its listed size"
            )
        self._fetched_end = start + length
        if length > requested:
            self._buffer = data
            self._buffer_start = start
        else:
            self._buffer = b""
        self._position += requested
        return data[:requested] if length > requested else data

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(f"I/O operation on closed S3 object reader {self.name}")
