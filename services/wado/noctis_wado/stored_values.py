"""Locating and reading element values in stored Part 10 objects.

The stored object is parsed with pydicom's ``defer_size``, so values larger than the
bulk data threshold are skipped instead of read. pydicom records where each value
starts (``value_tell``). A top-level value is then read from the object at that
position when the response is sent, a chunk at a time. Values inside sequence items
are small in practice and pydicom reads them with their item, so they are served from
memory. Values are sent in little endian byte order, because PS3.18 8.7.3 rules out
Explicit VR Big Endian for web services, so values of a big endian object are
byte-swapped while they are read.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from noctis_common.dicom.json_model import BULK_DATA_THRESHOLD_BYTES, PIXEL_DATA_TAGS
from noctis_common.metrics import STORAGE_ERRORS
from noctis_common.storage import ObjectNotFoundError, ObjectStore, StorageError
from noctis_wado.errors import ResourceNotFoundError, StoredObjectError
from noctis_wado.lookup import StoredInstance
from noctis_wado.media_types import DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN

READ_CHUNK_BYTES = 1024 * 1024
UNDEFINED_LENGTH = 0xFFFFFFFF

# Bytes per value that Explicit VR Big Endian swaps, by VR (PS3.5 section 7.3).
_SWAP_UNITS = {
    "AT": 2,
    "OW": 2,
    "SS": 2,
    "US": 2,
    "FL": 4,
    "OF": 4,
    "OL": 4,
    "SL": 4,
    "UL": 4,
    "FD": 8,
    "OD": 8,
    "OV": 8,
    "SV": 8,
    "UV": 8,
}


@dataclass(frozen=True)
class ElementPath:
    """An element inside an instance: the (sequence tag, item index) steps, then its tag."""

    items: tuple[tuple[int, int], ...]
    tag: int

    def describe(self) -> str:
        steps = [f"{tag:08X}/{index}" for tag, index in self.items]
        return "/".join([*steps, f"{self.tag:08X}"])


@dataclass(frozen=True)
class StoredDataset:
    """A stored object opened and parsed with its large values deferred.

    ``handle`` stays open while the :func:`open_stored_dataset` block runs.
    ``values_in_object`` is false for deflated objects, whose top-level values pydicom
    reads from the inflated copy in memory instead.
    """

    instance: StoredInstance
    dataset: Dataset
    handle: BinaryIO
    values_in_object: bool


@dataclass(frozen=True, eq=False)
class ElementValue:
    """The location and encoding of one element value.

    ``data`` is None when the value is read from the stored object, starting at byte
    ``start``. Otherwise ``data`` is the value and ``start`` is 0. ``length`` is None
    for an undefined length (encapsulated pixel data). ``container`` is the dataset or
    sequence item that contains the element, whose image attributes describe its frames.
    """

    tag: BaseTag
    vr: str
    start: int
    length: int | None
    is_little_endian: bool
    data: bytes | None
    container: Dataset

    @property
    def is_pixel_data(self) -> bool:
        return self.tag in PIXEL_DATA_TAGS

    @property
    def is_encapsulated(self) -> bool:
        return self.is_pixel_data and self.length is None

    def swap_unit(self, bits_allocated: int | None = None) -> int:
        """Return the size of the words to byte-swap on reading, 1 for none."""
        if self.is_little_endian:
            return 1
        if self.is_pixel_data and self.vr == "OW" and bits_allocated in (32, 64):
            return bits_allocated // 8
        return _SWAP_UNITS.get(self.vr, 1)


def _stored_object_message(instance: StoredInstance) -> str:
    return f"the stored object of instance {instance.sop_instance_uid} ({instance.object_key})"


def open_object(store: ObjectStore, instance: StoredInstance) -> BinaryIO:
    """Open the stored object of ``instance``, or raise :class:`StoredObjectError`."""
    try:
        return store.open(instance.object_key)
    except ObjectNotFoundError as error:
        raise StoredObjectError(
            f"{_stored_object_message(instance)} is missing from the object store, although "
            "the index lists it; restore the object or delete the instance"
        ) from error
    except StorageError as error:
        STORAGE_ERRORS.labels(operation="read").inc()
        raise StoredObjectError(
            f"reading {_stored_object_message(instance)} failed: {error}; retry later",
            unavailable=True,
        ) from error


@contextmanager
def open_stored_dataset(store: ObjectStore, instance: StoredInstance) -> Iterator[StoredDataset]:
    """Open and parse the stored object of ``instance`` for the duration of the block."""
    with open_object(store, instance) as handle:
        deflated = instance.transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
        try:
            # A deflated dataset is inflated into memory by pydicom, so nothing can be
            # read from the object by position: read every value at once instead.
            dataset = dcmread(
                handle, defer_size=None if deflated else BULK_DATA_THRESHOLD_BYTES, force=True
            )
        except Exception as error:  # pydicom raises many types on corrupt input
            raise StoredObjectError(
                f"{_stored_object_message(instance)} cannot be parsed: {error}"
            ) from error
        yield StoredDataset(instance, dataset, handle, values_in_object=not deflated)


@contextmanager
def open_value(
    store: ObjectStore, instance: StoredInstance, value: ElementValue
) -> Iterator[BinaryIO]:
    """Open the source of ``value``: the stored object, or its bytes in memory."""
    if value.data is not None:
        yield io.BytesIO(value.data)
        return
    with open_object(store, instance) as handle:
        yield handle


def _element_vr(raw: RawDataElement) -> str:
    if raw.VR:
        return str(raw.VR)
    try:
        vr = str(dictionary_VR(raw.tag))
    except KeyError:
        return "UN"
    # Implicit VR objects leave ambiguous VRs to the reader; binary ones are OW there.
    return "OW" if " or " in vr and "OW" in vr else vr.split(" or ", maxsplit=1)[0]


def _container(stored: StoredDataset, path: ElementPath) -> Dataset:
    container = stored.dataset
    walked: list[str] = []
    for sequence_tag, index in path.items:
        walked.append(f"{sequence_tag:08X}/{index}")
        element = container.get(sequence_tag)
        if element is None or element.VR != "SQ" or index >= len(element.value):
            raise ResourceNotFoundError(
                f"instance {stored.instance.sop_instance_uid} has no sequence item "
                f"{'/'.join(walked)}; take bulk data paths from the instance's metadata"
            )
        container = element.value[index]
    return container


def locate_element(stored: StoredDataset, path: ElementPath) -> ElementValue:
    """Return where the value of the element at ``path`` is.

    Raises :class:`ResourceNotFoundError` when the element is absent or has no binary
    value, and :class:`StoredObjectError` when the stored object is corrupt.
    """
    little_endian = stored.instance.transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    try:
        container = _container(stored, path)
        element: RawDataElement | DataElement | None = container.get_item(
            path.tag, keep_deferred=True
        )
        if isinstance(element, RawDataElement) and element.value is None and path.items:
            # Values inside items are read with the item; fetch one that was not.
            element = container[path.tag]
    except (ResourceNotFoundError, StoredObjectError):
        raise
    except Exception as error:  # pydicom raises many types on corrupt input
        raise StoredObjectError(
            f"{_stored_object_message(stored.instance)} cannot be read at {path.describe()}: "
            f"{error}"
        ) from error
    if element is None:
        raise ResourceNotFoundError(
            f"instance {stored.instance.sop_instance_uid} has no element {path.describe()}; "
            "take bulk data paths from the instance's metadata"
        )

    if isinstance(element, RawDataElement):
        length = None if element.length == UNDEFINED_LENGTH else element.length
        in_object = stored.values_in_object and not path.items
        return ElementValue(
            tag=BaseTag(element.tag),
            vr=_element_vr(element),
            start=element.value_tell if in_object else 0,
            length=length,
            is_little_endian=element.is_little_endian,
            data=None if in_object else bytes(element.value or b""),
            container=container,
        )

    value = element.value
    if not isinstance(value, bytes | bytearray):
        raise ResourceNotFoundError(
            f"element {path.describe()} of instance {stored.instance.sop_instance_uid} has "
            f"VR {element.VR}, which is not bulk data; its value is in the metadata"
        )
    return ElementValue(
        tag=Tag(element.tag),
        vr=str(element.VR),
        start=0,
        length=None if element.is_undefined_length else len(value),
        is_little_endian=little_endian,
        data=bytes(value),
        container=container,
    )


def read_chunks(handle: BinaryIO, position: int, length: int) -> Iterator[bytes]:
    """Yield ``length`` bytes from ``position`` of ``handle`` in chunks."""
    handle.seek(position)
    remaining = length
    while remaining > 0:
        chunk = handle.read(min(READ_CHUNK_BYTES, remaining))
        if not chunk:
            raise EOFError(
                f"the value ends {remaining} bytes early at byte {position + length - remaining}"
            )
        remaining -= len(chunk)
        yield chunk


def swap_bytes(data: bytes, unit: int) -> bytes:
    """Reverse the byte order of each ``unit``-byte word of ``data``."""
    if unit <= 1:
        return data
    swapped = bytearray(len(data))
    for index in range(unit):
        swapped[index::unit] = data[unit - 1 - index :: unit]
    return bytes(swapped)


def read_little_endian(
    handle: BinaryIO, value_start: int, offset: int, length: int, unit: int
) -> bytes:
    """Read ``length`` bytes from ``offset`` of a big endian value, as little endian.

    The read is widened to whole ``unit``-byte words, counted from ``value_start``,
    so that words cut by ``offset`` or by the end are swapped correctly.
    """
    aligned_offset = offset - offset % unit
    aligned_end = -(-(offset + length) // unit) * unit
    data = b"".join(read_chunks(handle, value_start + aligned_offset, aligned_end - aligned_offset))
    skip = offset - aligned_offset
    return swap_bytes(data, unit)[skip : skip + length]
