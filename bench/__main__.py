"""Run the benchmark suite: ``python -m bench [--quick]`` from the repository root.

Writes the results to ``docs/benchmarks/<name>.json`` and renders ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

from bench.corpus import FULL_SIZE, QUICK_SIZE, generate_corpus
from bench.peers import orthanc_version
from bench.render import render_page
from bench.runner import BenchmarkRun, RunOptions, measure_long_ingest_memory

logger = logging.getLogger("bench")

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPOSITORY / "docs" / "benchmarks"
PAGE = REPOSITORY / "docs" / "benchmarks.md"
# Set in the process that runs from the copy of the packages: the run's work folder.
SNAPSHOT_VARIABLE = "NOCTIS_BENCH_WORK_DIR"
# Set there too with --baseline: the revision whose packages lie in <work>/baseline.
BASELINE_VARIABLE = "NOCTIS_BENCH_BASELINE"

QUICK_OPTIONS = RunOptions(
    repetitions=2,
    requests_per_measure=5,
    index_sizes_sqlite=(1_000,),
    index_sizes_postgres=(1_000,),
    scaleout_gateways=(2,),
    query_services=(1, 2),
    query_index_size=1_000,
    query_seconds=3.0,
    memory_ingest_instances=1_000,
    memory_repetitions=2,
)
FULL_OPTIONS = RunOptions(
    repetitions=3,
    requests_per_measure=20,
    index_sizes_sqlite=(1_000, 100_000, 1_000_000),
    index_sizes_postgres=(1_000, 100_000, 1_000_000),
    scaleout_gateways=(1, 2, 4),
)


def machine_description() -> dict[str, object]:
    cpu_model = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": cpu_model,
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "orthanc": orthanc_version(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure Noctis against Orthanc and dcmtk's storescp over loopback.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small corpus, 2 repetitions, index sizes of 1,000 only (a few minutes)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="results file; default docs/benchmarks/full.json, or quick.json with --quick",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="folder for the corpus, the copy of the Noctis packages and the targets' data; "
        "default: a new temporary folder",
    )
    only = parser.add_mutually_exclusive_group()
    only.add_argument(
        "--only-query-processes",
        action="store_true",
        help="measure only QIDO-RS throughput against the number of processes and add it "
        "to the existing results file",
    )
    only.add_argument(
        "--only-memory",
        action="store_true",
        help="measure only RSS over the long C-STORE ingest (10,000 MR instances, 1,000 with "
        "--quick) and add it to the existing results file",
    )
    parser.add_argument(
        "--baseline",
        metavar="REVISION",
        help="also measure ingest with the Noctis packages of this git revision, as the "
        "target noctis-baseline, to show what the changes since then gained",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only render docs/benchmarks.md from docs/benchmarks/full.json",
    )
    return parser.parse_args(argv)


def copy_packages(tree: Path, target: Path) -> None:
    """Copy the ``noctis_*`` packages of the checkout at ``tree`` into ``target``."""
    for package in sorted(tree.glob("*/*/noctis_*")):
        in_package_folder = package.parent.parent.name in ("libs", "services")
        if package.is_dir() and package.suffix != ".egg-info" and in_package_folder:
            shutil.copytree(
                package, target / package.name, ignore=shutil.ignore_patterns("__pycache__")
            )


def export_revision(revision: str, target: Path) -> None:
    """Write the libs and services folders of git ``revision`` into ``target``."""
    result = subprocess.run(
        ["git", "-C", str(REPOSITORY), "archive", "--format=tar", revision, "libs", "services"],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(
            f"git archive of the baseline revision {revision!r} failed: "
            f"{result.stderr.decode(errors='replace').strip()}; name a commit of this repository"
        )
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(result.stdout)) as archive:
        archive.extractall(target, filter="data")


def run_from_snapshot(work_dir: Path, revision: str | None = None) -> None:
    """Copy the Noctis packages into ``work_dir`` and run this command again from the copy.

    Every target is a new Python process that imports Noctis when it starts. Running
    them from a copy keeps all of them on the same code while the working tree changes.
    With ``revision``, the packages of that git revision are copied as well, for the
    ``noctis-baseline`` target.
    """
    copy_packages(REPOSITORY, work_dir / "source")
    source = work_dir / "source"
    baseline: dict[str, str] = {}
    if revision is not None:
        export_revision(revision, work_dir / "baseline-tree")
        copy_packages(work_dir / "baseline-tree", work_dir / "baseline")
        baseline[BASELINE_VARIABLE] = revision
    environment = {
        **os.environ,
        **baseline,
        SNAPSHOT_VARIABLE: str(work_dir),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(source), os.environ.get("PYTHONPATH")])),
    }
    os.execve(sys.executable, [sys.executable, "-m", "bench", *sys.argv[1:]], environment)  # noqa: S606


def render_if_page_source(output: Path) -> None:
    """Render ``docs/benchmarks.md`` from ``output`` if it is the page's results file.

    A run to another file renders the page only while ``full.json`` does not exist yet.
    """
    page_source = RESULTS_DIR / "full.json"
    if output.resolve() == page_source or not page_source.exists():
        render_page(output, PAGE)


def merge_into_results(output: Path, key: str, value: object) -> None:
    """Set ``key`` in the existing results file ``output`` to ``value``.

    Renders the page afterwards under the rule of :func:`render_if_page_source`.
    """
    results = json.loads(output.read_text())
    results[key] = value
    output.write_text(json.dumps(results, indent=1) + "\n")
    logger.info("added %s to %s", key, output)
    render_if_page_source(output)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    if arguments.render_only:
        render_page(RESULTS_DIR / "full.json", PAGE)
        return

    options = QUICK_OPTIONS if arguments.quick else FULL_OPTIONS
    size = QUICK_SIZE if arguments.quick else FULL_SIZE
    output = arguments.output or RESULTS_DIR / ("quick.json" if arguments.quick else "full.json")
    merging = arguments.only_memory or arguments.only_query_processes
    if merging and not output.exists():
        raise SystemExit(
            f"{output} does not exist. --only-memory and --only-query-processes add to an "
            "existing results file, so run python -m bench first or name one with --output."
        )
    if SNAPSHOT_VARIABLE not in os.environ:
        run_from_snapshot(
            arguments.work_dir or Path(tempfile.mkdtemp(prefix="noctis-bench-")),
            arguments.baseline,
        )
    work_dir = Path(os.environ[SNAPSHOT_VARIABLE])
    baseline_revision = os.environ.get(BASELINE_VARIABLE)
    if baseline_revision is not None:
        options = dataclasses.replace(
            options,
            baseline_revision=baseline_revision,
            baseline_packages=str(work_dir / "baseline"),
        )
    started_at = datetime.now(UTC)
    started = time.monotonic()
    machine = machine_description()

    if arguments.only_memory:
        long_ingest_memory = measure_long_ingest_memory(work_dir / "long-ingest", options)
        merge_into_results(output, "long_ingest_memory", long_ingest_memory)
        if arguments.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
        return

    corpus = generate_corpus(work_dir / "corpus", size)
    run = BenchmarkRun(work_dir, corpus, options)
    if arguments.only_query_processes:
        run.run_query_processes()
        merge_into_results(output, "query_processes", run.query_process_rows)
        if arguments.work_dir is None:
            shutil.rmtree(work_dir, ignore_errors=True)
        return
    run.run()

    results = {
        "command": shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)]),
        "started_at": started_at.isoformat(timespec="seconds"),
        "duration_s": round(time.monotonic() - started),
        "machine": machine,
        "options": options.__dict__,
        "corpus": {
            "ingest_instances": len(corpus.ingest),
            "ingest_bytes": sum(path.stat().st_size for path in corpus.ingest),
            "ct_slices": size.ct_slices,
            "mr_slices": size.mr_slices,
            "cr_images": size.cr_images,
            "multiframe_frames": size.multiframe_frames,
            "read_corpus_instances": len(corpus.loaded_files),
        },
        "ingest": run.ingest_rows,
        "reads": run.read_rows,
        "qido_scale": run.qido_scale_rows,
        "memory": run.memory_rows,
        "long_ingest_memory": run.long_ingest_memory,
        "query_processes": run.query_process_rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=1) + "\n")
    logger.info("wrote %s after %d s", output, results["duration_s"])
    render_if_page_source(output)
    # A failed run keeps its folder: the targets' logs there show what went wrong.
    if arguments.work_dir is None:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
