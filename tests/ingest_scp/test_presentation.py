"""The SCP's supported presentation contexts, as pynetdicom copies them per association."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from noctis_ingest_scp.presentation import (
    CopyablePresentationContext,
    supported_presentation_contexts,
)
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk
from tests.support import write_series


def test_copied_contexts_equal_the_originals() -> None:
    contexts = supported_presentation_contexts()

    copies = copy.deepcopy(contexts)

    assert [vars(item) for item in copies] == [vars(item) for item in contexts]
    assert all(isinstance(item, CopyablePresentationContext) for item in copies)


def test_copied_context_changes_stay_local() -> None:
    contexts = supported_presentation_contexts()
    original = contexts[-1]
    syntaxes = list(original.transfer_syntax)

    duplicate = copy.deepcopy(contexts)[-1]
    duplicate.transfer_syntax.append(ExplicitVRLittleEndian)
    duplicate.context_id = 1
    duplicate.result = 0x00

    assert duplicate is not original
    assert original.transfer_syntax == syntaxes
    assert original.context_id is None
    assert original.result is None


@pytest.mark.dcmtk
def test_one_association_per_instance(scp: RunningSCP, tmp_path: Path) -> None:
    paths = write_series(tmp_path / "series", 3)

    for path in paths:
        result = run_dcmtk("storescu", "127.0.0.1", scp.port, path)
        assert result.returncode == 0, result.stdout

    for path in paths:
        assert scp.instance(path.stem) is not None, f"{path.name} is not in the index"
