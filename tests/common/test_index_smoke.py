from __future__ import annotations

from noctis_common.context import ArchiveContext
from noctis_common.db.models import Study
from sqlalchemy import select

from tests.support import make_dataset


def test_store_indexes_study(context: ArchiveContext, tmp_path) -> None:
    dataset = make_dataset()
    path = context.archive.new_spool_path()
    dataset.save_as(path, enforce_file_format=True)
    stored = context.archive.store_part10(path)
    assert not stored.duplicate
    with context.database.read_session() as session:
        study = session.scalar(select(Study))
    assert study is not None
    assert study.number_of_study_related_instances == 1
