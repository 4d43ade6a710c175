"""The store pipeline: durability, duplicate policy, hostile input, recovery, outbox."""

from __future__ import annotations

import array
import json
import logging
import os
import shutil
import socket
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ImplicitVRLittleEndian, generate_uid
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from noctis_common.archive import Archive, FailureReason, StoreFailedError
from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance, OutboxEvent, Series, Study
from noctis_common.events import INSTANCE_STORED, Event
from tests.support import dataset_bytes, make_dataset


def _spool(context: ArchiveContext, dataset: Dataset) -> Path:
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=True)
    return path


def _count(context: ArchiveContext, model: type) -> int:
    with context.database.read_session() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _object_files(context: ArchiveContext) -> list[Path]:
    return [path for path in context.settings.objects_dir.rglob("*") if path.is_file()]


def test_stored_object_keeps_dataset_bytes(context: ArchiveContext, tmp_path: Path) -> None:
    dataset = make_dataset()
    sent = tmp_path / "sent.dcm"
    dataset.save_as(sent, enforce_file_format=True)
    spool = context.archive.new_spool_path()
    shutil.copy(sent, spool)

    context.archive.store_part10(spool, source_ae_title="MODALITY")

    [stored] = _object_files(context)
    assert dataset_bytes(stored) == dataset_bytes(sent)
    with context.database.read_session() as session:
        instance = session.scalars(select(Instance)).one()
    assert instance.source_ae_title == "MODALITY"
    assert instance.transfer_syntax_uid == "1.2.840.10008.1.2.1"


def test_store_maintains_counts_and_modalities(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    series_ct = generate_uid()
    for number in (1, 2):
        context.archive.store_part10(
            _spool(
                context,
                make_dataset(
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series_ct,
                    instance_number=number,
                ),
            )
        )
    context.archive.store_part10(
        _spool(context, make_dataset(study_instance_uid=study_instance_uid, modality="MR"))
    )

    with context.database.read_session() as session:
        study = session.scalars(select(Study)).one()
        series = session.scalar(select(Series).where(Series.series_instance_uid == series_ct))
    assert study.number_of_study_related_series == 2
    assert study.number_of_study_related_instances == 3
    assert study.modalities_in_study == "CT\\MR"
    assert series is not None
    assert series.number_of_series_related_instances == 2


def test_identical_resend_is_stored_once(context: ArchiveContext) -> None:
    dataset = make_dataset()
    first = context.archive.store_part10(_spool(context, dataset))

    again = context.archive.store_part10(_spool(context, dataset))

    assert not first.duplicate
    assert again.duplicate
    assert _count(context, Instance) == 1
    assert len(_object_files(context)) == 1


def test_store_logs_no_info_per_instance(
    context: ArchiveContext, caplog: pytest.LogCaptureFixture
) -> None:
    dataset = make_dataset()
    with caplog.at_level(logging.INFO, logger="noctis_common.archive"):
        context.archive.store_part10(_spool(context, dataset))
        context.archive.store_part10(_spool(context, dataset))

    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


def test_resend_in_other_syntax_is_duplicate(context: ArchiveContext) -> None:
    dataset = make_dataset()
    context.archive.store_part10(_spool(context, dataset))
    dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian

    again = context.archive.store_part10(_spool(context, dataset))

    assert again.duplicate
    assert again.transfer_syntax_uid == "1.2.840.10008.1.2.1"
    assert _count(context, Instance) == 1


def test_conflicting_resend_is_rejected(context: ArchiveContext) -> None:
    dataset = make_dataset()
    context.archive.store_part10(_spool(context, dataset))
    [first_copy] = _object_files(context)
    first_bytes = first_copy.read_bytes()
    dataset.StudyDescription = "Changed after the first send"

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(_spool(context, dataset))

    assert raised.value.reason == FailureReason.DUPLICATE_SOP_INSTANCE
    assert dataset.SOPInstanceUID in raised.value.message
    assert _object_files(context) == [first_copy]
    assert first_copy.read_bytes() == first_bytes


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SOPInstanceUID", "../../../etc/passwd"),
        ("SOPInstanceUID", "1.2/3"),
        ("SOPInstanceUID", "1." + "2" * 80),
        ("SOPInstanceUID", "1..2"),
        ("StudyInstanceUID", "1.2.abc"),
        ("SeriesInstanceUID", ""),
    ],
)
def test_hostile_uid_is_rejected(context: ArchiveContext, keyword: str, value: str) -> None:
    dataset = make_dataset()
    setattr(dataset, keyword, value)
    if keyword == "SOPInstanceUID":
        dataset.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3")

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(_spool(context, dataset))

    assert raised.value.reason == FailureReason.CANNOT_UNDERSTAND
    assert keyword in raised.value.message
    assert _count(context, Instance) == 0
    assert _object_files(context) == []


def test_non_part10_input_is_rejected(context: ArchiveContext) -> None:
    path = context.archive.new_spool_path()
    path.write_bytes(b"this is not DICOM" * 20)

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(path)

    assert raised.value.reason == FailureReason.CANNOT_UNDERSTAND
    assert "DICM" in raised.value.message
    assert not path.exists()


def test_sop_class_mismatch_is_rejected(context: ArchiveContext) -> None:
    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(
            _spool(context, make_dataset()), expected_sop_class_uid="1.2.840.10008.5.1.4.1.1.4"
        )

    assert raised.value.reason == FailureReason.DATASET_DOES_NOT_MATCH_SOP_CLASS


def test_series_of_other_study_is_rejected(context: ArchiveContext) -> None:
    series_instance_uid = generate_uid()
    context.archive.store_part10(
        _spool(context, make_dataset(series_instance_uid=series_instance_uid))
    )

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(
            _spool(context, make_dataset(series_instance_uid=series_instance_uid))
        )

    assert raised.value.reason == FailureReason.CANNOT_UNDERSTAND
    assert _count(context, Instance) == 1
    assert len(_object_files(context)) == 1


def test_index_failure_leaves_nothing(
    context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_commit(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(Archive, "_insert_rows", fail_commit)

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(_spool(context, make_dataset()))

    assert raised.value.reason == FailureReason.OUT_OF_RESOURCES
    assert _object_files(context) == []
    assert _count(context, OutboxEvent) == 0
    assert list(context.archive.intents_dir.iterdir()) == []


def test_storage_failure_leaves_nothing(context: ArchiveContext) -> None:
    objects_dir = context.settings.objects_dir
    shutil.rmtree(objects_dir)
    objects_dir.write_text("a file where the object folder should be")

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(_spool(context, make_dataset()))

    assert raised.value.reason == FailureReason.OUT_OF_RESOURCES
    assert raised.value.message.startswith("the object store failed, retry later: ")
    assert _count(context, Instance) == 0
    spooled = [path for path in context.archive.spool_dir.rglob("*") if path.is_file()]
    assert spooled == []


def test_over_long_values_are_cut(context: ArchiveContext) -> None:
    dataset = make_dataset()
    dataset.StudyDescription = "x" * 200
    dataset.AccessionNumber = "A" * 40

    context.archive.store_part10(_spool(context, dataset))

    with context.database.read_session() as session:
        study = session.scalars(select(Study)).one()
    assert study.study_description == "x" * 64
    assert study.accession_number == "A" * 16


def test_recover_deletes_unindexed_objects(context: ArchiveContext, tmp_path: Path) -> None:
    indexed = context.archive.store_part10(_spool(context, make_dataset()))
    with context.database.read_session() as session:
        indexed_key = session.scalars(select(Instance.object_key)).one()
    orphan = tmp_path / "orphan.dcm"
    orphan.write_bytes(b"written before a crash")
    orphan_key = "1.2.3/4.5.6/7.8.9.0123456789abcdef.dcm"
    context.store.put_file(orphan_key, orphan)
    # A spool folder as a process that died would leave it: a PID that is not running.
    dead_pid = _unused_pid()
    crashed = context.settings.spool_dir / f"{socket.gethostname()}-{dead_pid}"
    (crashed / "intents").mkdir(parents=True)
    (crashed / "intents" / "a").write_text(orphan_key)
    (crashed / "intents" / "b").write_text(indexed_key)
    (crashed / "partial-upload.dcm").write_bytes(b"half")

    context.archive.recover()

    assert not context.store.exists(orphan_key)
    assert context.store.exists(indexed_key)
    assert not crashed.exists()
    assert indexed.sop_instance_uid


def test_store_writes_outbox_event(context: ArchiveContext) -> None:
    received: list[Event] = []
    context.publisher.subscribe(received.append)
    dataset = make_dataset()

    context.archive.store_part10(_spool(context, dataset))
    published = context.relay.relay_once()

    assert published == 1
    assert [event.type for event in received] == [INSTANCE_STORED]
    assert received[0].payload["SOPInstanceUID"] == dataset.SOPInstanceUID
    assert received[0].payload["NewStudy"] is True
    assert context.relay.relay_once() == 0


def test_metadata_replaces_pixel_data_by_uri(context: ArchiveContext) -> None:
    dataset = make_dataset()
    context.archive.store_part10(_spool(context, dataset))

    with context.database.read_session() as session:
        metadata = json.loads(session.scalars(select(Instance.metadata_json)).one())

    assert metadata["7FE00010"] == {
        "vr": "OW",
        "BulkDataURI": "noctis-instance:bulkdata/7FE00010",
    }
    assert metadata["00100010"] == {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    assert metadata["00200013"] == {"vr": "IS", "Value": [1]}


def _unused_pid() -> int:
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_truncated_file_is_rejected(context: ArchiveContext) -> None:
    path = _spool(context, make_dataset(rows=64, columns=64))
    path.write_bytes(path.read_bytes()[:-100])

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(path)

    assert raised.value.reason == FailureReason.CANNOT_UNDERSTAND
    assert "truncated" in raised.value.message
    assert _count(context, Instance) == 0


def test_index_error_message_has_no_patient_data(
    context: ArchiveContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_commit(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT ... Doe^Jane", {"name": "Doe^Jane"}, Exception("Doe^Jane"))

    monkeypatch.setattr(Archive, "_insert_rows", fail_commit)

    with pytest.raises(StoreFailedError) as raised:
        context.archive.store_part10(_spool(context, make_dataset()))

    assert "Doe" not in raised.value.message


def test_resend_in_other_byte_order_is_duplicate(context: ArchiveContext) -> None:
    dataset = make_dataset()
    context.archive.store_part10(_spool(context, dataset))
    big_endian = make_dataset(
        study_instance_uid=dataset.StudyInstanceUID,
        series_instance_uid=dataset.SeriesInstanceUID,
        sop_instance_uid=dataset.SOPInstanceUID,
    )
    big_endian.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    # pydicom writes OW bytes as given, so they must be big endian already.
    words = array.array("H", dataset.PixelData)
    words.byteswap()
    big_endian.PixelData = words.tobytes()
    path = context.archive.new_spool_path()
    big_endian.save_as(path, enforce_file_format=True, little_endian=False, implicit_vr=False)

    again = context.archive.store_part10(path)

    assert again.duplicate
    assert _count(context, Instance) == 1


def test_legacy_dotted_date_is_normalized(context: ArchiveContext) -> None:
    dataset = make_dataset()
    dataset.StudyDate = "1997.04.24"

    context.archive.store_part10(_spool(context, dataset))

    with context.database.read_session() as session:
        study = session.scalars(select(Study)).one()
    assert study.study_date == "19970424"


def test_meta_without_preamble_is_accepted(context: ArchiveContext) -> None:
    dataset = make_dataset()
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=False)
    assert path.read_bytes()[:2] == b"\x02\x00"

    stored = context.archive.store_part10(path)

    assert stored.sop_instance_uid == dataset.SOPInstanceUID


def test_inspect_sees_parsed_dataset(context: ArchiveContext) -> None:
    dataset = make_dataset()
    seen: list[str] = []

    context.archive.store_part10(
        _spool(context, dataset), inspect=lambda parsed: seen.append(parsed.SOPInstanceUID)
    )

    assert seen == [dataset.SOPInstanceUID]


def test_inspect_rejection_stores_nothing(context: ArchiveContext) -> None:
    path = _spool(context, make_dataset())

    def reject(_parsed: Dataset) -> None:
        raise LookupError("rejected by the caller")

    with pytest.raises(LookupError, match="rejected by the caller"):
        context.archive.store_part10(path, inspect=reject)

    assert _count(context, Instance) == 0
    assert _object_files(context) == []
    assert not path.exists()
