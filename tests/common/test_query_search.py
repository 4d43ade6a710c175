"""The matching engine against the index, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import event

from noctis_common.context import ArchiveContext
from noctis_common.query import (
    InvalidQueryError,
    Query,
    QueryPage,
    QueryRetrieveLevel,
    find_matches,
)
from tests.support import make_dataset

STUDY = QueryRetrieveLevel.STUDY
SERIES = QueryRetrieveLevel.SERIES
IMAGE = QueryRetrieveLevel.IMAGE


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag


def _store(context: ArchiveContext, dataset: Dataset) -> Dataset:
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=True)
    context.archive.store_part10(path)
    return dataset


def _find(context: ArchiveContext, query: Query) -> QueryPage:
    with context.database.read_session() as session:
        return find_matches(session, query)


@contextmanager
def _counted_selects(context: ArchiveContext) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_args: Any, **_kwargs: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    event.listen(context.database.engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(context.database.engine, "before_cursor_execute", record)


def _store_two_studies(context: ArchiveContext) -> None:
    for _ in range(2):
        study_instance_uid = generate_uid()
        for modality in ("CT", "MR"):
            dataset = make_dataset(study_instance_uid=study_instance_uid, modality=modality)
            dataset.Manufacturer = "Noctis Test Devices"
            _store(context, dataset)


@pytest.mark.parametrize("level", [STUDY, SERIES, IMAGE])
def test_page_with_extras_takes_two_selects(
    context: ArchiveContext, level: QueryRetrieveLevel
) -> None:
    _store_two_studies(context)
    query = Query(level, return_tags=frozenset({_tag("Manufacturer"), _tag("PatientName")}))

    with _counted_selects(context) as statements:
        page = _find(context, query)

    assert len(page.matches) == {STUDY: 2, SERIES: 4, IMAGE: 4}[level]
    assert all(
        match.attributes["00080070"]["Value"] == ["Noctis Test Devices"] for match in page.matches
    )
    assert len(statements) == (1 if level is IMAGE else 2)


def test_page_of_indexed_keys_takes_one_select(context: ArchiveContext) -> None:
    _store_two_studies(context)
    query = Query(SERIES, ((_tag("Modality"), "CT"),), frozenset({_tag("PatientName")}))

    with _counted_selects(context) as statements:
        page = _find(context, query)

    assert len(page.matches) == 2
    assert len(statements) == 1


def test_limit_reports_more_matches(context: ArchiveContext) -> None:
    _store_two_studies(context)

    first = _find(context, Query(SERIES, limit=3))
    last = _find(context, Query(SERIES, limit=3, offset=3))
    unlimited = _find(context, Query(SERIES))

    assert len(first.matches) == 3
    assert first.more_matches
    assert len(last.matches) == 1
    assert not last.more_matches
    assert len(unlimited.matches) == 4
    assert not unlimited.more_matches


def test_instances_ordered_by_series_and_number(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    series_instance_uid = generate_uid()
    stored = {}
    for number in (3, 1, 2):
        dataset = make_dataset(
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            instance_number=number,
        )
        stored[number] = _store(context, dataset).SOPInstanceUID
    unnumbered = make_dataset(
        study_instance_uid=study_instance_uid, series_instance_uid=series_instance_uid
    )
    del unnumbered.InstanceNumber
    _store(context, unnumbered)

    page = _find(context, Query(IMAGE))

    assert [match.sop_instance_uid for match in page.matches] == [
        stored[1],
        stored[2],
        stored[3],
        unnumbered.SOPInstanceUID,
    ]


def test_studies_ordered_newest_first(context: ArchiveContext) -> None:
    dates_and_times = [("20240101", "080000"), ("20240301", "070000"), ("20240101", "090000")]
    uids = [
        _store(context, make_dataset(study_date=date, study_time=time)).StudyInstanceUID
        for date, time in dates_and_times
    ]

    page = _find(context, Query(STUDY))

    assert [match.study_instance_uid for match in page.matches] == [uids[1], uids[2], uids[0]]


def test_first_instance_supplies_study_extras(context: ArchiveContext) -> None:
    study_instance_uid = generate_uid()
    for manufacturer in ("First Maker", "Second Maker"):
        dataset = make_dataset(study_instance_uid=study_instance_uid)
        dataset.Manufacturer = manufacturer
        _store(context, dataset)

    page = _find(context, Query(STUDY, return_tags=frozenset({_tag("Manufacturer")})))

    [match] = page.matches
    assert match.attributes["00080070"]["Value"] == ["First Maker"]
    assert match.metadata_source is not None
    assert match.metadata_source.study_instance_uid == study_instance_uid


def test_repeated_key_must_match_every_value(context: ArchiveContext) -> None:
    _store(context, make_dataset(patient_id="PID-1"))
    patient_id = _tag("PatientID")

    both = _find(context, Query(STUDY, ((patient_id, "PID-1"), (patient_id, "PID-*"))))
    conflicting = _find(context, Query(STUDY, ((patient_id, "PID-1"), (patient_id, "PID-2"))))

    assert len(both.matches) == 1
    assert conflicting.matches == []


def test_specific_character_set_is_never_matched(context: ArchiveContext) -> None:
    _store(context, make_dataset())

    page = _find(context, Query(STUDY, ((_tag("SpecificCharacterSet"), "ISO_IR 100"),)))

    [match] = page.matches
    assert "00080005" not in match.attributes


def test_unindexed_key_raises_invalid_query(context: ArchiveContext) -> None:
    query = Query(SERIES, ((_tag("ProtocolName"), "Head"),))

    with pytest.raises(InvalidQueryError, match=r"cannot match ProtocolName='Head'") as raised:
        _find(context, query)

    assert "Keys that a series-level query can match: AccessionNumber" in str(raised.value)
    assert "SOPInstanceUID" not in str(raised.value)


def test_private_key_named_by_tag_in_error(context: ArchiveContext) -> None:
    query = Query(STUDY, ((0x00091001, "x"),))

    with pytest.raises(InvalidQueryError, match=r"cannot match \(0009,1001\)='x'"):
        _find(context, query)
