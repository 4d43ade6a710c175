"""The benchmark harness on a tiny corpus: it sends, counts and renders, without timing anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from bench.corpus import CorpusSize, generate_corpus, generate_long_ingest_corpus
from bench.ingest import measure_ingest
from bench.peers import NoctisArchive, Storescp
from bench.populate import INSTANCES_PER_STUDY, populate_index
from bench.render import BEGIN_MARKER, END_MARKER, render_page
from bench.runner import MemoryTrace, growth_mb_per_1000_instances
from noctis_common.db import Database
from noctis_common.db.models import Instance, Study

TINY = CorpusSize(
    ct_slices=2,
    mr_slices=1,
    cr_images=0,
    multiframe_frames=2,
    large_study_instances=8,
    query_studies=1,
)


def test_corpus_is_deterministic(tmp_path: Path) -> None:
    first = generate_corpus(tmp_path / "first", TINY, seed=3)
    second = generate_corpus(tmp_path / "second", TINY, seed=3)

    first_uids = [pydicom.dcmread(path).SOPInstanceUID for path in first.ingest]
    second_uids = [pydicom.dcmread(path).SOPInstanceUID for path in second.ingest]
    assert first_uids == second_uids
    assert [path.read_bytes() for path in first.ingest] == [
        path.read_bytes() for path in second.ingest
    ]


def test_ct_slice_is_512_by_512(tmp_path: Path) -> None:
    corpus = generate_corpus(tmp_path, TINY)

    dataset = pydicom.dcmread(corpus.retrieval_study.files[0])
    assert dataset.Modality == "CT"
    assert (dataset.Rows, dataset.Columns, dataset.BitsAllocated) == (512, 512, 16)
    assert "^" in str(dataset.PatientName)
    assert dataset.AccessionNumber


@pytest.mark.slow
@pytest.mark.dcmtk
@pytest.mark.parametrize("target_type", [Storescp, NoctisArchive])
def test_c_store_run_counts_every_instance(tmp_path: Path, target_type: type) -> None:
    if shutil.which("storescu") is None:
        pytest.skip("storescu is not installed (Debian package dcmtk)")
    corpus = generate_corpus(tmp_path / "corpus", TINY)
    target = target_type("target", tmp_path / "target")
    target.start()
    try:
        result = measure_ingest(target, corpus.ingest, "C-STORE", 2, 0)
    finally:
        target.stop()

    row = result.as_json()
    assert row["instances"] == len(corpus.ingest)
    assert row["bytes"] == sum(path.stat().st_size for path in corpus.ingest)
    assert result.peak_rss_bytes > 0


def test_populator_fills_index(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'index.sqlite'}")
    database.upgrade()
    try:
        populated = populate_index(database, 3 * INSTANCES_PER_STUDY)
        with database.read_session() as session:
            instances = session.query(Instance).count()
            studies = session.query(Study).count()
    finally:
        database.dispose()

    assert populated.instances == 3 * INSTANCES_PER_STUDY
    assert instances == 3 * INSTANCES_PER_STUDY
    assert studies == 3


def test_render_keeps_text_outside_markers(tmp_path: Path) -> None:
    results = {
        "command": "python -m bench --quick",
        "started_at": "2026-12-05T00:00:00+00:00",
        "duration_s": 60,
        "machine": {
            "cpu": "test CPU",
            "logical_cpus": 2,
            "memory_gb": 4,
            "kernel": "6",
            "python": "3.11",
            "orthanc": "Orthanc 1.10.1",
            "load_average_at_start": [1.0, 1.0, 1.0],
        },
        "options": {"requests_per_measure": 5},
        "corpus": {
            "ingest_instances": 2,
            "ingest_bytes": 1_000_000,
            "ct_slices": 2,
            "mr_slices": 0,
            "cr_images": 0,
            "multiframe_frames": 2,
            "read_corpus_instances": 10,
        },
        "ingest": [
            {
                "target": target,
                "protocol": "C-STORE",
                "clients": 1,
                "repetition": 0,
                "instances_per_s": speed,
                "mb_per_s": speed,
                "cpu_ms_per_instance": 1.0,
                "peak_rss_mb": 10.0,
            }
            for target, speed in (("orthanc", 50.0), ("noctis", 100.0))
        ],
        "reads": [],
        "qido_scale": [],
        "memory": [],
    }
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps(results))
    page = tmp_path / "benchmarks.md"
    page.write_text(
        f"# Benchmarks\n\nKept above.\n\n{BEGIN_MARKER}\nold\n{END_MARKER}\n\nKept below.\n"
    )

    render_page(results_path, page)

    text = page.read_text()
    assert "Kept above." in text
    assert "Kept below." in text
    assert "\nold\n" not in text
    assert "| C-STORE x1 | noctis / orthanc | 2.00 |" in text


def test_long_ingest_corpus_exact_count(tmp_path: Path) -> None:
    first = generate_long_ingest_corpus(tmp_path / "first", 50)
    second = generate_long_ingest_corpus(tmp_path / "second", 50)

    assert len(first.files) == 50
    assert [path.read_bytes() for path in first.files] == [
        path.read_bytes() for path in second.files
    ]


def test_memory_growth_fitted_per_instance() -> None:
    # RSS rises by 2 MB a second while 100 instances arrive a second: 20 MB per 1,000.
    samples = [(second / 2, int(100e6 + second / 2 * 2e6)) for second in range(21)]
    trace = MemoryTrace(seconds=10.0, rss_before=100_000_000, samples=samples, rss_after=0)

    growth = growth_mb_per_1000_instances(trace, instances=1000)

    assert growth == pytest.approx(20.0)


def test_memory_growth_needs_two_late_samples() -> None:
    trace = MemoryTrace(seconds=10.0, rss_before=0, samples=[(0.0, 1), (9.0, 2)], rss_after=0)

    assert growth_mb_per_1000_instances(trace, instances=1000) is None
