"""The store pipeline shared by C-STORE and STOW-RS, and its durability rule.

An instance is acknowledged only after :meth:`Archive.store_part10` returns, and it
returns only after

1. the Part 10 file is durable in the object store under a key that no other object
   can have (UIDs plus a digest of the dataset bytes), and
2. the index rows and the ``instance.stored`` outbox event are committed in one
   transaction.

If either step fails, the caller gets :class:`StoreFailedError` and the object is removed
again, so nothing half-written is visible. Readers find objects only through committed
index rows. A crash between steps 1 and 2 leaves an unreferenced object. So before step
1 the archive writes an intent marker naming the key into its spool folder, and
:meth:`Archive.recover` deletes such objects when the process that wrote them is gone.

Duplicate policy: the first stored copy of a SOP Instance UID is kept. A later object
with the same SOP Instance UID gets a success status without storing anything when
its dataset is the same (identical bytes, or equal elements in another transfer
syntax); otherwise it is rejected with :attr:`FailureReason.DUPLICATE_SOP_INSTANCE`.
"""

from __future__ import annotations

import array
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError

from noctis_common.db import Database
from noctis_common.db.models import Instance, Series, Study
from noctis_common.dicom.attributes import (
    IndexRecord,
    extract_index_record,
)
from noctis_common.dicom.frame_index import FrameLayout, frame_layout_of
from noctis_common.dicom.json_model import BULK_DATA_THRESHOLD_BYTES, dataset_to_json
from noctis_common.dicom.part10 import (
    Part10Error,
    WrittenPart10,
    finish_received_part10,
    read_part10_header,
    write_part10,
)
from noctis_common.events import OutboxRelay
from noctis_common.index_rows import (
    SeriesInOtherStudyError,
    StudyDeletedDuringStoreError,
    insert_instance_rows,
)
from noctis_common.metrics import STORAGE_ERRORS, STORE_DURATION, STORE_INSTANCES, STORED_BYTES
from noctis_common.storage import ObjectStore, StorageError
from noctis_common.tracing import mark_failed, tracer
from noctis_common.uids import InvalidUIDError, instance_object_key, validate_uid

logger = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 3
# Serialization failure and deadlock: the transaction can succeed when run again.
RETRYABLE_SQLSTATES = ("40001", "40P01")
DATA_SET_TRAILING_PADDING = 0xFFFCFFFC
UNDEFINED_LENGTH = 0xFFFFFFFF
# Bytes per word of the binary VRs whose byte order follows the transfer syntax.
WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
ARRAY_TYPECODES = {2: "H", 4: "I", 8: "Q"}

_SELECT_INDEXED = (
    select(Instance.id).where(Instance.sop_instance_uid == bindparam("b_sop_instance_uid")).limit(1)
)


class FailureReason(IntEnum):
    """Failure statuses of the Storage Service (PS3.4 B.2.3, PS3.7 C.4), shared with STOW-RS."""

    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000


class StoreFailedError(Exception):
    """An instance was not stored; ``reason`` is the status to send back."""

    def __init__(self, reason: FailureReason, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


@dataclass(frozen=True)
class StoredInstance:
    """An instance that is durable and indexed."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    duplicate: bool


def _check_not_truncated(dataset: Dataset, file_size: int) -> None:
    """Raise when an element's declared length runs past the end of the file.

    pydicom reads a value cut short by the end of the file without an error, so a
    truncated upload would otherwise be stored as a complete object.
    """
    for tag in dataset.keys():  # noqa: SIM118 (iterating a Dataset yields elements)
        raw = dataset.get_item(tag, keep_deferred=True)
        value_tell = getattr(raw, "value_tell", None)
        length = getattr(raw, "length", None)
        if value_tell is None or length is None or length == UNDEFINED_LENGTH:
            continue
        if value_tell + length > file_size:
            raise StoreFailedError(
                FailureReason.CANNOT_UNDERSTAND,
                f"the file is truncated: element ({tag >> 16:04X},{tag & 0xFFFF:04X}) "
                f"declares {length} bytes but the file ends {file_size - value_tell} bytes "
                "into its value; send the complete file",
            )


def _comparable(dataset: Dataset) -> dict[int, Any]:
    """Return the element values that identify a dataset's content for the duplicate check.

    Group Length elements and trailing padding are left out, because encoders drop or
    add them when they re-encode a dataset without changing its content. Binary values
    of a big endian dataset are turned little endian, so that the same pixels sent in
    two byte orders compare equal.
    """
    _implicit, little_endian = dataset.original_encoding
    swap = little_endian is False
    result: dict[int, Any] = {}
    for tag in dataset.keys():  # noqa: SIM118 (iterating a Dataset yields elements)
        if tag & 0xFFFF == 0 or tag == DATA_SET_TRAILING_PADDING:
            continue
        element = dataset[tag]
        value = element.value
        if element.VR == "SQ":
            result[tag] = [_comparable(item) for item in value]
        elif swap and isinstance(value, bytes) and element.VR in WORD_SIZES:
            result[tag] = _swap_bytes(value, WORD_SIZES[str(element.VR)])
        else:
            result[tag] = value
    return result


def _swap_bytes(value: bytes, word_size: int) -> bytes:
    if len(value) % word_size:
        return value
    words = array.array(ARRAY_TYPECODES[word_size], value)
    words.byteswap()
    return words.tobytes()


def _process_is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class _PreparedInstance:
    """A received instance, parsed, checked and written behind Noctis's File Meta Information."""

    dataset: Dataset
    record: IndexRecord
    transfer_syntax_uid: str
    metadata_json: str
    frame_layout: FrameLayout | None
    written: WrittenPart10


class Archive:
    """Stores instances into the object store and the index, following the rules above."""

    def __init__(
        self,
        database: Database,
        store: ObjectStore,
        spool_root: Path,
        relay: OutboxRelay | None = None,
    ) -> None:
        self.database = database
        self.store = store
        self.relay = relay
        self.spool_root = spool_root
        # Only one thread of the process runs Python code at a time anyway, so the
        # CPU-bound part of concurrent stores queues on this lock instead of taking
        # turns on the interpreter lock. With 4 associations this gave 0.97 to 1.22
        # times the instances/s in three pairs of benchmark runs. The syncs to disk
        # and the database work stay outside it.
        self._prepare_gate = threading.Lock()
        owner = f"{socket.gethostname()}-{os.getpid()}"
        self.spool_dir = spool_root / owner
        self.intents_dir = self.spool_dir / "intents"
        self.intents_dir.mkdir(parents=True, exist_ok=True)

    # -- spool -------------------------------------------------------------------------

    def new_spool_path(self, suffix: str = ".dcm") -> Path:
        """Return a fresh path in this process's spool folder for an incoming object."""
        return self.spool_dir / f"{uuid.uuid4().hex}{suffix}"

    def recover(self) -> None:
        """Remove what processes that died on this host left in the spool.

        Objects named by their intent markers are deleted unless an index row refers
        to them, because such objects were written but never acknowledged. Call it
        once, before the first store: it also clears this process's own spool folder.
        """
        hostname = socket.gethostname()
        if not self.spool_root.is_dir():
            return
        for folder in self.spool_root.iterdir():
            host, _, pid_text = folder.name.rpartition("-")
            if host != hostname or not pid_text.isdigit():
                continue
            # This process's own folder can hold leftovers when a dead process had the
            # same PID; recover() runs before the first store, so they are stale too.
            if folder != self.spool_dir and _process_is_alive(int(pid_text)):
                continue
            intents = folder / "intents"
            for marker in intents.glob("*") if intents.is_dir() else []:
                self._resolve_intent(marker.read_text(encoding="utf-8").strip())
                marker.unlink()
            if folder == self.spool_dir:
                for leftover in folder.glob("*"):
                    if leftover.is_file():
                        leftover.unlink()
                continue
            shutil.rmtree(folder, ignore_errors=True)
            logger.info("removed the spool of ended process %s", folder.name)

    def _resolve_intent(self, key: str) -> None:
        if not key:
            return
        if self._key_is_indexed(key):
            return
        logger.warning("deleting object %s: it was written but never indexed", key)
        self.store.delete(key)

    def _key_is_indexed(self, key: str) -> bool:
        with self.database.read_session() as session:
            return (
                session.scalar(select(Instance.id).where(Instance.object_key == key).limit(1))
                is not None
            )

    # -- store ---------------------------------------------------------------------------

    def store_part10(
        self,
        path: Path,
        *,
        source_ae_title: str | None = None,
        expected_sop_class_uid: str | None = None,
        expected_sop_instance_uid: str | None = None,
        inspect: Callable[[Dataset], None] | None = None,
    ) -> StoredInstance:
        """Store the Part 10 file at ``path`` (consumed) and index it.

        ``inspect``, when given, is called with the parsed dataset before the archive
        checks it, so that a caller can read values or reject the instance by raising
        without parsing the file a second time.

        Raises :class:`StoreFailedError` with the status to return when the object is not
        stored. Each call is one ``store instance`` span, with the spool copy, the object
        store write and the index commit as its children, and is counted and timed in
        the ``noctis_store_*`` metrics.
        """
        started = time.perf_counter()
        with tracer.start_as_current_span("store instance") as span:
            span.set_attribute("dicom.source_ae_title", source_ae_title or "")
            try:
                stored = self._store_part10(
                    path,
                    source_ae_title=source_ae_title,
                    expected_sop_class_uid=expected_sop_class_uid,
                    expected_sop_instance_uid=expected_sop_instance_uid,
                    inspect=inspect,
                )
            except StoreFailedError as error:
                span.set_attribute("dicom.failure_reason", f"0x{int(error.reason):04X}")
                mark_failed(span, error.message)
                self._count_store("failed", started)
                raise
            except BaseException:
                self._count_store("failed", started)
                raise
            span.set_attributes(
                {
                    "dicom.study_instance_uid": stored.study_instance_uid,
                    "dicom.series_instance_uid": stored.series_instance_uid,
                    "dicom.sop_instance_uid": stored.sop_instance_uid,
                    "dicom.sop_class_uid": stored.sop_class_uid,
                    "dicom.transfer_syntax_uid": stored.transfer_syntax_uid,
                    "noctis.duplicate": stored.duplicate,
                }
            )
        self._count_store("duplicate" if stored.duplicate else "stored", started)
        return stored

    @staticmethod
    def _count_store(outcome: str, started: float) -> None:
        STORE_INSTANCES.labels(outcome=outcome).inc()
        STORE_DURATION.labels(outcome=outcome).observe(time.perf_counter() - started)

    def _store_part10(
        self,
        path: Path,
        *,
        source_ae_title: str | None,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
        inspect: Callable[[Dataset], None] | None,
    ) -> StoredInstance:
        spool_copy: Path | None = None
        try:
            with self._prepare_gate:
                prepared = self._prepare(
                    path,
                    source_ae_title,
                    expected_sop_class_uid,
                    expected_sop_instance_uid,
                    inspect,
                )
            record = prepared.record
            written = prepared.written
            frame_layout = prepared.frame_layout
            transfer_syntax_uid = prepared.transfer_syntax_uid
            metadata_json = prepared.metadata_json
            if written.path != path:
                spool_copy = written.path
            already_indexed = self._is_indexed(record.sop_instance_uid)

            if already_indexed:
                existing = self._check_duplicate(record, written.dataset_sha256, prepared.dataset)
                if existing is not None:
                    return existing

            key = instance_object_key(
                record.study_instance_uid,
                record.series_instance_uid,
                record.sop_instance_uid,
                written.dataset_sha256,
            )
            marker = self.intents_dir / uuid.uuid4().hex
            marker.write_text(key, encoding="utf-8")
            try:
                with tracer.start_as_current_span("put object") as put_span:
                    put_span.set_attribute("noctis.object_size", written.size)
                    self.store.put_file(key, written.path)
                spool_copy = None
                with tracer.start_as_current_span("commit index rows"):
                    duplicate = self._commit(
                        record,
                        frame_layout,
                        object_key=key,
                        object_size=written.size,
                        dataset_offset=written.dataset_offset,
                        dataset_sha256=written.dataset_sha256,
                        transfer_syntax_uid=transfer_syntax_uid,
                        metadata_json=metadata_json,
                        source_ae_title=source_ae_title or "",
                    )
            except BaseException:
                self._discard_unindexed(key)
                raise
            finally:
                marker.unlink(missing_ok=True)
        except StorageError as error:
            STORAGE_ERRORS.labels(operation="write").inc()
            # The cause goes first: a C-STORE Error Comment keeps only 64 characters, and
            # the storage message starts with the object key.
            raise StoreFailedError(
                FailureReason.OUT_OF_RESOURCES, f"the object store failed, retry later: {error}"
            ) from error
        except SQLAlchemyError as error:
            # The database's own message can quote patient data (a duplicated key, say),
            # so only the error class and SQLSTATE are sent back. The caller logs the
            # failure with the instance's UID, so it is not logged here as well.
            sqlstate = getattr(getattr(error, "orig", None), "sqlstate", None)
            detail = f"{type(error).__name__}" + (f", SQLSTATE {sqlstate}" if sqlstate else "")
            raise StoreFailedError(
                FailureReason.OUT_OF_RESOURCES,
                f"the index database failed ({detail}); retry later",
            ) from error
        except OSError as error:
            raise StoreFailedError(
                FailureReason.OUT_OF_RESOURCES, f"writing the spool failed: {error}"
            ) from error
        finally:
            path.unlink(missing_ok=True)
            if spool_copy is not None:
                spool_copy.unlink(missing_ok=True)

        if duplicate is not None:
            return duplicate
        STORED_BYTES.inc(written.size)
        if self.relay is not None:
            self.relay.notify()
        # DEBUG, because the association or request that stored it logs one INFO summary.
        logger.debug(
            "stored instance %s of study %s (%s) from %s",
            record.sop_instance_uid,
            record.study_instance_uid,
            transfer_syntax_uid,
            source_ae_title or "HTTP",
        )
        return StoredInstance(
            study_instance_uid=record.study_instance_uid,
            series_instance_uid=record.series_instance_uid,
            sop_instance_uid=record.sop_instance_uid,
            sop_class_uid=record.sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            duplicate=False,
        )

    def _prepare(
        self,
        path: Path,
        source_ae_title: str | None,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
        inspect: Callable[[Dataset], None] | None = None,
    ) -> _PreparedInstance:
        """Parse and check the received file and give it Noctis's File Meta Information.

        This is the CPU-bound part of a store. It reads and writes files in the spool
        but syncs nothing to disk and sends nothing to the database.
        """
        dataset, transfer_syntax_uid, dataset_offset = self._read(path, inspect)
        record = self._validate(dataset, expected_sop_class_uid, expected_sop_instance_uid)
        metadata_json = json.dumps(
            dataset_to_json(dataset), separators=(",", ":"), ensure_ascii=False, allow_nan=False
        )
        with (
            tracer.start_as_current_span("write spool copy"),
            open(path, "rb") as source,
        ):
            # The frame layout comes from the parse above, in the received file's
            # positions; a copy moves every byte by the same amount.
            frame_layout = frame_layout_of(source, dataset, transfer_syntax_uid)
            # A dataset written behind room for Noctis's File Meta Information (by
            # pynetdicom for a C-STORE, by the STOW-RS spooler) is stored without a copy.
            written = finish_received_part10(
                path,
                dataset_offset,
                sop_class_uid=record.sop_class_uid,
                sop_instance_uid=record.sop_instance_uid,
                transfer_syntax_uid=transfer_syntax_uid,
                source_ae_title=source_ae_title,
            )
            if written is None:
                source.seek(dataset_offset)
                spool_copy = self.new_spool_path()
                try:
                    written = write_part10(
                        spool_copy,
                        source,
                        sop_class_uid=record.sop_class_uid,
                        sop_instance_uid=record.sop_instance_uid,
                        transfer_syntax_uid=transfer_syntax_uid,
                        source_ae_title=source_ae_title,
                    )
                except BaseException:
                    spool_copy.unlink(missing_ok=True)
                    raise
        if frame_layout is not None:
            frame_layout = frame_layout.moved_by(written.dataset_offset - dataset_offset)
        return _PreparedInstance(
            dataset, record, transfer_syntax_uid, metadata_json, frame_layout, written
        )

    def _read(
        self, path: Path, inspect: Callable[[Dataset], None] | None = None
    ) -> tuple[Dataset, str, int]:
        try:
            with open(path, "rb") as handle:
                header = read_part10_header(handle)
        except Part10Error as error:
            raise StoreFailedError(FailureReason.CANNOT_UNDERSTAND, str(error)) from error
        try:
            transfer_syntax_uid = validate_uid(header.transfer_syntax_uid, "TransferSyntaxUID")
        except InvalidUIDError as error:
            raise StoreFailedError(FailureReason.CANNOT_UNDERSTAND, str(error)) from error
        except Exception as error:  # an undecodable value in the File Meta Information
            raise StoreFailedError(
                FailureReason.CANNOT_UNDERSTAND,
                f"the Transfer Syntax UID (0002,0010) cannot be read: {error}",
            ) from error
        try:
            dataset = dcmread(path, defer_size=BULK_DATA_THRESHOLD_BYTES, force=True)
            # Reading one element forces pydicom to check the encoding early.
            dataset.get("SOPInstanceUID")
        except Exception as error:  # pydicom raises many types on corrupt input
            raise StoreFailedError(
                FailureReason.CANNOT_UNDERSTAND, f"the dataset cannot be parsed: {error}"
            ) from error
        if inspect is not None:
            inspect(dataset)
        if transfer_syntax_uid != DeflatedExplicitVRLittleEndian:
            _check_not_truncated(dataset, path.stat().st_size)
        return dataset, transfer_syntax_uid, header.dataset_offset

    def _validate(
        self,
        dataset: Dataset,
        expected_sop_class_uid: str | None,
        expected_sop_instance_uid: str | None,
    ) -> IndexRecord:
        try:
            record = extract_index_record(dataset)
        except InvalidUIDError as error:
            raise StoreFailedError(
                FailureReason.CANNOT_UNDERSTAND,
                f"{error}; every instance needs valid SOP Class, SOP Instance, Study "
                "Instance and Series Instance UIDs",
            ) from error
        except Exception as error:  # pydicom raises many types on undecodable values
            raise StoreFailedError(
                FailureReason.CANNOT_UNDERSTAND,
                f"the identifying UIDs cannot be read: {error}",
            ) from error
        if expected_sop_class_uid and record.sop_class_uid != expected_sop_class_uid:
            raise StoreFailedError(
                FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS,
                f"the dataset's SOP Class UID {record.sop_class_uid} differs from the "
                f"request's Affected SOP Class UID {expected_sop_class_uid}",
            )
        if expected_sop_instance_uid and record.sop_instance_uid != expected_sop_instance_uid:
            raise StoreFailedError(
                FailureReason.CANNOT_UNDERSTAND,
                f"the dataset's SOP Instance UID {record.sop_instance_uid} differs from "
                f"the request's Affected SOP Instance UID {expected_sop_instance_uid}",
            )
        return record

    def _is_indexed(self, sop_instance_uid: str) -> bool:
        """Return whether an instance with ``sop_instance_uid`` is indexed: one Core query."""
        with self.database.engine.connect() as connection:
            found = connection.scalar(_SELECT_INDEXED, {"b_sop_instance_uid": sop_instance_uid})
        return found is not None

    def _check_duplicate(
        self, record: IndexRecord, dataset_sha256: str, dataset: Dataset
    ) -> StoredInstance | None:
        """Return the stored copy when ``record`` repeats it, or raise on a conflict."""
        with self.database.read_session() as session:
            existing = session.scalar(
                select(Instance).where(Instance.sop_instance_uid == record.sop_instance_uid)
            )
            if existing is None:
                return None
            series = session.get(Series, existing.series_fk)
            study = session.get(Study, existing.study_fk)
        assert series is not None and study is not None  # foreign keys guarantee both
        stored = StoredInstance(
            study_instance_uid=study.study_instance_uid,
            series_instance_uid=series.series_instance_uid,
            sop_instance_uid=existing.sop_instance_uid,
            sop_class_uid=existing.sop_class_uid,
            transfer_syntax_uid=existing.transfer_syntax_uid,
            duplicate=True,
        )
        if existing.dataset_sha256 == dataset_sha256 or self._same_elements(existing, dataset):
            logger.debug(
                "instance %s is already stored with the same content", record.sop_instance_uid
            )
            return stored
        raise StoreFailedError(
            FailureReason.DUPLICATE_SOP_INSTANCE,
            f"SOP Instance UID {record.sop_instance_uid} is already stored with different "
            f"content in study {study.study_instance_uid}; the archive keeps the first "
            "copy, so send a corrected object with a new SOP Instance UID",
        )

    def _same_elements(self, existing: Instance, dataset: Dataset) -> bool:
        """Compare element values, so a re-send in another transfer syntax counts as equal."""
        try:
            with self.store.open(existing.object_key) as handle:
                stored = dcmread(handle, force=True)
                return _comparable(stored) == _comparable(dataset)
        except Exception as error:  # an unreadable stored copy is treated as different
            logger.warning(
                "could not compare instance %s with its stored copy: %s",
                existing.sop_instance_uid,
                error,
            )
            return False

    def _discard_unindexed(self, key: str) -> None:
        try:
            if not self._key_is_indexed(key):
                self.store.delete(key)
        except (StorageError, SQLAlchemyError) as error:
            if isinstance(error, StorageError):
                STORAGE_ERRORS.labels(operation="delete").inc()
            logger.error(
                "could not remove unindexed object %s (recovery retries at start): %s",
                key,
                error,
            )

    def _commit(
        self, record: IndexRecord, frame_layout: FrameLayout | None, **instance_values: Any
    ) -> StoredInstance | None:
        """Commit the index rows; return the stored copy if another writer won the race.

        Concurrent writers of one new study race on the unique patient, study and
        series rows. The loser's transaction fails with an integrity error; a retry
        then finds the rows the winner committed.
        """
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self.database.write_transaction() as connection:
                    self._insert_rows(connection, record, instance_values, frame_layout)
                return None
            except IntegrityError:
                # Another writer may have committed the same SOP Instance UID first:
                # apply the duplicate policy against what it stored.
                existing = self._check_duplicate(
                    record, instance_values["dataset_sha256"], Dataset()
                )
                if existing is not None:
                    return existing
                if attempt == COMMIT_ATTEMPTS:
                    raise
                logger.info(
                    "retrying the index commit of instance %s after a concurrent insert",
                    record.sop_instance_uid,
                )
            except OperationalError as error:
                # PostgreSQL ends one of two transactions that wait on each other, such
                # as a store and a deletion of the same study (SQLSTATE 40P01).
                sqlstate = getattr(error.orig, "sqlstate", None)
                if sqlstate not in RETRYABLE_SQLSTATES or attempt == COMMIT_ATTEMPTS:
                    raise
                logger.info(
                    "retrying the index commit of instance %s after SQLSTATE %s",
                    record.sop_instance_uid,
                    sqlstate,
                )
        return None

    def _insert_rows(
        self,
        connection: Connection,
        record: IndexRecord,
        instance_values: dict[str, Any],
        frame_layout: FrameLayout | None = None,
    ) -> None:
        try:
            insert_instance_rows(connection, record, instance_values, frame_layout)
        except SeriesInOtherStudyError as error:
            raise StoreFailedError(FailureReason.CANNOT_UNDERSTAND, str(error)) from error
        except StudyDeletedDuringStoreError as error:
            raise StoreFailedError(FailureReason.OUT_OF_RESOURCES, str(error)) from error
