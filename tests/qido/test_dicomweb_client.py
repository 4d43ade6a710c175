"""QIDO-RS end to end: dicomweb-client against ``python -m noctis_archive`` over loopback."""

from __future__ import annotations

import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings
from tests.qido.helpers import store
from tests.support import ArchiveProcess, make_dataset

pytestmark = pytest.mark.slow


def _store_studies(archive: ArchiveProcess) -> tuple[str, str, str]:
    """Store two studies into the running archive's index; return their UIDs.

    The first study has a CT series and an MR series of two instances, the second, an
    older one, a CT series. The returned UIDs are those of the first study, of its MR
    series and of the second study. The test process writes to the same data folder as
    the server, as a second archive process on the host would.
    """
    context = ArchiveContext.create(Settings(data_dir=archive.data_dir))
    study_instance_uid = generate_uid()
    mr_series = generate_uid()
    try:
        for number, (series_instance_uid, modality) in enumerate(
            [(generate_uid(), "CT"), (mr_series, "MR"), (mr_series, "MR")], start=1
        ):
            store(
                context,
                make_dataset(
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series_instance_uid,
                    modality=modality,
                    patient_name="Doe^Jane",
                    instance_number=number,
                ),
            )
        older = store(context, make_dataset(patient_name="Roe^Richard", study_date="20230301"))
    finally:
        context.close()
    return study_instance_uid, mr_series, older.StudyInstanceUID


def test_dicomweb_client_searches_all_levels(archive_process: ArchiveProcess) -> None:
    study_instance_uid, mr_series, older_study_instance_uid = _store_studies(archive_process)
    client = DICOMwebClient(url=archive_process.dicomweb_url)

    by_name = client.search_for_studies(search_filters={"PatientName": "DOE^*"})
    by_fuzzy_name = client.search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": "jan"}
    )
    by_date = client.search_for_studies(
        search_filters={"StudyDate": "20230101-20231231"}, fields=["StudyDescription"]
    )
    paged = client.search_for_studies(limit=1, get_remaining=True)
    mr_series_results = client.search_for_series(
        study_instance_uid, search_filters={"Modality": "MR"}
    )
    all_ct_series = client.search_for_series(search_filters={"Modality": "CT"})
    instances = client.search_for_instances(
        study_instance_uid, mr_series, search_filters={"InstanceNumber": 3}
    )

    [study] = [Dataset.from_json(result) for result in by_name]
    assert study.StudyInstanceUID == study_instance_uid
    assert study.ModalitiesInStudy == ["CT", "MR"]
    assert study.NumberOfStudyRelatedInstances == 3
    assert [result["0020000D"]["Value"][0] for result in by_fuzzy_name] == [study_instance_uid]
    [older] = [Dataset.from_json(result) for result in by_date]
    assert str(older.PatientName) == "Roe^Richard"
    assert older.StudyDescription == "Synthetic study"
    assert len(paged) == 2
    [series] = [Dataset.from_json(result) for result in mr_series_results]
    assert series.SeriesInstanceUID == mr_series
    assert series.NumberOfSeriesRelatedInstances == 2
    assert [Dataset.from_json(result).StudyInstanceUID for result in all_ct_series] == [
        study_instance_uid,
        older_study_instance_uid,
    ]
    [instance] = [Dataset.from_json(result) for result in instances]
    assert instance.InstanceNumber == 3
    # dicomweb-client 0.61 sends "Host: 127.0.0.1" without the port, and the server
    # builds RetrieveURL from the Host header, so only the path is compared.
    assert instance.RetrieveURL.endswith(
        f"/dicom-web/studies/{study_instance_uid}/series/{mr_series}"
        f"/instances/{instance.SOPInstanceUID}"
    )
