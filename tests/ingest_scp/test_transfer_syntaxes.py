"""Every accepted transfer syntax, and the request checks, with a pynetdicom sender.

pynetdicom sends a file's dataset bytes unchanged when ``STORE_SEND_CHUNKED_DATASET``
is on, so the stored dataset must equal the file's. dcmtk 3.6.7 cannot propose HTJ2K
or the video syntaxes, which is why these tests use pynetdicom as the peer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.association import Association

from noctis_common.settings import Settings
from noctis_ingest_scp.presentation import STORAGE_TRANSFER_SYNTAXES
from tests.ingest_scp.helpers import RunningSCP, running_scp
from tests.support import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, dataset_bytes, make_dataset


@pytest.fixture
def send_files_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)


def write_instance(path: Path, transfer_syntax_uid: UID) -> Dataset:
    """Write a small CT instance in ``transfer_syntax_uid``.

    Compressed syntaxes get one encapsulated frame of placeholder bytes: the archive
    stores pixel data without decoding it.
    """
    dataset = make_dataset()
    dataset.file_meta.TransferSyntaxUID = transfer_syntax_uid
    if transfer_syntax_uid.is_compressed:
        dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + bytes(range(60))])
        dataset["PixelData"].VR = "OB"
        dataset["PixelData"].is_undefined_length = True
    dataset.save_as(path, enforce_file_format=True)
    return dataset


def associate(port: int, sop_class_uid: str, transfer_syntax_uid: str) -> Association:
    sender = AE(ae_title="PYNETDICOM")
    sender.add_requested_context(sop_class_uid, transfer_syntax_uid)
    association = sender.associate("127.0.0.1", port, ae_title="NOCTIS")
    assert association.is_established
    return association


@pytest.fixture(scope="module")
def module_scp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSCP]:
    """One SCP for the whole module; every test sends instances with new UIDs."""
    data_dir = tmp_path_factory.mktemp("transfer-syntaxes") / "var"
    with running_scp(Settings(data_dir=data_dir)) as running:
        yield running


@pytest.mark.usefixtures("send_files_unchanged")
@pytest.mark.parametrize(
    "transfer_syntax_uid",
    STORAGE_TRANSFER_SYNTAXES,
    ids=[uid.name for uid in STORAGE_TRANSFER_SYNTAXES],
)
def test_transfer_syntax_stored_unchanged(
    module_scp: RunningSCP, tmp_path: Path, transfer_syntax_uid: UID
) -> None:
    path = tmp_path / "instance.dcm"
    dataset = write_instance(path, transfer_syntax_uid)
    association = associate(module_scp.port, CT_IMAGE_STORAGE, transfer_syntax_uid)
    try:
        status = association.send_c_store(path)
    finally:
        association.release()

    assert status.Status == 0x0000
    instance = module_scp.instance(dataset.SOPInstanceUID)
    assert instance is not None
    assert instance.transfer_syntax_uid == transfer_syntax_uid
    assert module_scp.stored_dataset_bytes(instance) == dataset_bytes(path)


@pytest.mark.usefixtures("send_files_unchanged")
def test_sop_class_mismatch_answers_a900(module_scp: RunningSCP, tmp_path: Path) -> None:
    path = tmp_path / "instance.dcm"
    dataset = make_dataset(modality="CT")
    dataset.file_meta.MediaStorageSOPClassUID = UID(MR_IMAGE_STORAGE)
    dataset.preamble = bytes(128)
    dataset.save_as(path, enforce_file_format=False)
    association = associate(module_scp.port, MR_IMAGE_STORAGE, ExplicitVRLittleEndian)
    try:
        status = association.send_c_store(path)
    finally:
        association.release()

    assert status.Status == 0xA900
    assert status.ErrorComment == "dataset SOP Class UID differs from Affected SOP Class UID"
    assert module_scp.instance(dataset.SOPInstanceUID) is None


@pytest.mark.usefixtures("send_files_unchanged")
def test_sop_instance_mismatch_answers_c000(module_scp: RunningSCP, tmp_path: Path) -> None:
    path = tmp_path / "instance.dcm"
    dataset = make_dataset()
    dataset.file_meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    dataset.preamble = bytes(128)
    dataset.save_as(path, enforce_file_format=False)
    association = associate(module_scp.port, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    try:
        status = association.send_c_store(path)
    finally:
        association.release()

    assert status.Status == 0xC000
    assert status.ErrorComment.startswith("the dataset's SOP Instance UID")
    assert module_scp.instance(dataset.SOPInstanceUID) is None


def test_missing_study_uid_answers_c000(module_scp: RunningSCP) -> None:
    dataset = make_dataset()
    del dataset.StudyInstanceUID
    association = associate(module_scp.port, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    try:
        status = association.send_c_store(dataset)
    finally:
        association.release()

    assert status.Status == 0xC000
    assert status.ErrorComment.startswith("invalid StudyInstanceUID")
    assert module_scp.instance(dataset.SOPInstanceUID) is None


@pytest.mark.usefixtures("send_files_unchanged")
def test_unparsable_dataset_answers_c000(module_scp: RunningSCP, tmp_path: Path) -> None:
    path = tmp_path / "instance.dcm"
    dataset = make_dataset()
    dataset.save_as(path, enforce_file_format=True)
    dataset_offset = len(path.read_bytes()) - len(dataset_bytes(path))
    with open(path, "r+b") as handle:
        # Overwrite the first element's header: tag (0008,0016) with VR 'UI' and a
        # value length of 0xFFFF, far past the end of the dataset.
        handle.seek(dataset_offset)
        handle.write(b"\x08\x00\x16\x00UI\xff\xff")
        handle.truncate(dataset_offset + 200)
    association = associate(module_scp.port, CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    try:
        status = association.send_c_store(path)
    finally:
        association.release()

    assert status.Status == 0xC000
    assert module_scp.instance(dataset.SOPInstanceUID) is None
