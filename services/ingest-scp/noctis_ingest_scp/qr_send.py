"""C-STORE sub-operations: sending one stored instance to a Storage SCP (PS3.4 C.4.2, C.4.3).

An instance is sent in the transfer syntax it is stored in, byte for byte: pynetdicom
streams the dataset from the stored Part 10 file after its File Meta Information. When
the peer accepted no presentation context with that syntax, an instance stored in an
uncompressed little-endian syntax is decoded and re-encoded into an uncompressed
little-endian syntax the peer accepted. Otherwise the sub-operation fails.

NOTE: transcoding between compressed syntaxes is not supported, and an instance stored
in Explicit VR Big Endian is only sent where the peer accepts that syntax.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pydicom
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import _config
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import code_to_category

from noctis_common.storage import FileSystemObjectStore, ObjectNotFoundError, ObjectStore

logger = logging.getLogger(__name__)

# Stored syntaxes that pydicom can re-encode without touching pixel data, and the
# syntaxes they can be re-encoded into.
CONVERTIBLE_TRANSFER_SYNTAXES = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
CONVERSION_TARGET_SYNTAXES = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
STATUS_SUCCESS = "Success"
STATUS_WARNING = "Warning"


@dataclass(frozen=True)
class StoredInstance:
    """A stored instance to send, as the index locates it."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    object_key: str


class SubOperationOutcome(Enum):
    """The outcome of one C-STORE sub-operation, by the category of its status."""

    COMPLETED = "completed"
    WARNING = "warning"
    FAILED = "failed"


@dataclass(frozen=True)
class SubOperationResult:
    """The outcome of one sub-operation and, when it did not complete, why."""

    outcome: SubOperationOutcome
    reason: str = ""


@dataclass(frozen=True)
class MoveOriginator:
    """The C-MOVE that a sub-operation serves: its requestor's AE title and Message ID."""

    ae_title: str
    message_id: int


def stream_stored_datasets() -> None:
    """Make pynetdicom stream a dataset from its file when ``send_c_store`` gets a path.

    NOTE: this pynetdicom setting is process-wide. With it, ``send_c_store(path)``
    anywhere in the process sends the file's dataset bytes unchanged and needs an
    accepted presentation context with exactly the file's transfer syntax.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True


def _accepted_contexts(association: Association, sop_class_uid: str) -> list[PresentationContext]:
    """Return the accepted contexts in which this side may send C-STOREs of the SOP class."""
    return [
        context
        for context in association.accepted_contexts
        if context.abstract_syntax == sop_class_uid and context.as_scu
    ]


def choose_transfer_syntax(association: Association, instance: StoredInstance) -> UID | None:
    """Return the syntax to send ``instance`` in, or None when no accepted context fits.

    The stored syntax comes first. Otherwise an instance stored uncompressed in little
    endian goes in an accepted uncompressed little-endian syntax, Explicit VR first.
    """
    accepted = {
        context.transfer_syntax[0]
        for context in _accepted_contexts(association, instance.sop_class_uid)
    }
    stored = UID(instance.transfer_syntax_uid)
    if stored in accepted:
        return stored
    if stored not in CONVERTIBLE_TRANSFER_SYNTAXES:
        return None
    for target in CONVERSION_TARGET_SYNTAXES:
        if target in accepted:
            return target
    return None


@contextlib.contextmanager
def local_copy(store: ObjectStore, object_key: str, spool_dir: Path) -> Iterator[Path]:
    """Yield a local path of the stored object: the file itself, or a spool copy.

    A filesystem store's file is used in place. Objects of other stores are copied
    chunk by chunk into the spool and deleted afterwards, so at most one instance is
    on local disk per sub-operation and none is held in memory.
    """
    if isinstance(store, FileSystemObjectStore):
        path = (store.root / object_key).resolve()
        if not path.is_relative_to(store.root) or not path.is_file():
            raise ObjectNotFoundError(object_key)
        yield path
        return
    handle, name = tempfile.mkstemp(prefix="retrieve-", suffix=".dcm", dir=spool_dir)
    try:
        with os.fdopen(handle, "wb") as output:
            for chunk in store.iter_range(object_key, 0, None):
                output.write(chunk)
        yield Path(name)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)


def send_stored_instance(
    association: Association,
    instance: StoredInstance,
    store: ObjectStore,
    spool_dir: Path,
    *,
    message_id: int,
    move_originator: MoveOriginator | None = None,
) -> SubOperationResult:
    """Send ``instance`` in a C-STORE request on ``association`` and classify the response.

    Failures on this side count as a failed sub-operation: no fitting presentation
    context, the object missing from the store, a dataset that cannot be re-encoded.
    So do a failed response and no response. Nothing is raised.
    """
    transfer_syntax = choose_transfer_syntax(association, instance)
    if transfer_syntax is None:
        return SubOperationResult(
            SubOperationOutcome.FAILED,
            f"the peer accepted no presentation context for SOP class "
            f"{instance.sop_class_uid} in the stored transfer syntax "
            f"{instance.transfer_syntax_uid} or one it can be converted to",
        )
    originator_ae_title = move_originator.ae_title if move_originator else None
    originator_message_id = move_originator.message_id if move_originator else None
    try:
        with local_copy(store, instance.object_key, spool_dir) as path:
            if transfer_syntax == instance.transfer_syntax_uid:
                stream_stored_datasets()
                status = association.send_c_store(
                    path,
                    msg_id=message_id,
                    originator_aet=originator_ae_title,
                    originator_id=originator_message_id,
                )
            else:
                # NOTE: a converted instance is decoded into memory as a whole.
                dataset = pydicom.dcmread(path)
                status = association.send_c_store(
                    dataset,
                    msg_id=message_id,
                    originator_aet=originator_ae_title,
                    originator_id=originator_message_id,
                )
    except ObjectNotFoundError:
        return SubOperationResult(
            SubOperationOutcome.FAILED,
            f"the object {instance.object_key} is missing from the store",
        )
    except Exception as error:  # pynetdicom and pydicom raise many types here
        return SubOperationResult(
            SubOperationOutcome.FAILED, f"the C-STORE request failed: {error}"
        )

    code = status.get("Status")
    if code is None:
        return SubOperationResult(
            SubOperationOutcome.FAILED, "no valid C-STORE response (timeout or abort)"
        )
    category = code_to_category(int(code))
    if category == STATUS_SUCCESS:
        return SubOperationResult(SubOperationOutcome.COMPLETED)
    if category == STATUS_WARNING:
        return SubOperationResult(SubOperationOutcome.WARNING, f"status 0x{int(code):04X}")
    return SubOperationResult(SubOperationOutcome.FAILED, f"status 0x{int(code):04X}")
