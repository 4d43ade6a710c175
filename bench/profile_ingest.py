"""Profile Noctis during a C-STORE ingest with py-spy: ``python -m bench.profile_ingest``.

Starts ``python -m noctis_archive`` on SQLite, samples it with py-spy while storescu
sends CT slices, and writes a summary: the share of samples per thread and the
functions with the largest inclusive share. py-spy counts only samples of threads that
are not waiting, so a thread blocked in a lock or an fsync still shows while the
kernel reports it running.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.corpus import CorpusGenerator
from bench.ingest import measure_ingest
from bench.peers import NoctisArchive

logger = logging.getLogger("bench.profile_ingest")

SAMPLES_PER_S = 200
DEFAULT_SLICES = 200
# Frames that every thread starts with; they show nothing about where the time goes.
SKIPPED_FRAMES = re.compile(r"^(Thread\._bootstrap|Thread\.run|thread \()")
LINE_NUMBER = re.compile(r":\d+\)$")


# Leaf frames of threads that wait: a lock, an event, a poll, pynetdicom's reactor
# sleeping between two polls of its socket, or the event-driven wait of its DUL thread
# in select(). py-spy does not always count them as idle.
WAITING_LEAVES = re.compile(
    r"^(Condition\.wait|Event\.wait|Queue\.get|_PollLikeSelector\.select|EpollSelector\.select"
    r"|DULServiceProvider\.run_reactor \(pynetdicom/dul\.py:403\)"
    r"|_AssociationWaits\.dul_wait )"
)
STORE_FRAME = "Archive._store_part10 (noctis_common/archive.py)"


def summarize(raw_path: Path, top: int, gil: bool = False) -> str:
    """Return per-thread, per-function and per-store-step sample shares of a py-spy raw file.

    Samples whose leaf frame waits (:data:`WAITING_LEAVES`) are left out.
    """
    threads: Counter[str] = Counter()
    functions: Counter[str] = Counter()
    store_steps: Counter[str] = Counter()
    total = 0
    for line in raw_path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = stack.split(";")
        if WAITING_LEAVES.match(frames[-1]):
            continue
        total += count
        threads[re.sub(r"\(\d+\): ", "", frames[0])] += count
        names = [LINE_NUMBER.sub(")", frame) for frame in frames[1:]]
        for name in set(names):
            if not SKIPPED_FRAMES.match(name):
                functions[name] += count
        if STORE_FRAME in names:
            position = names.index(STORE_FRAME)
            step = names[position + 1] if position + 1 < len(names) else "(own code)"
            store_steps[step] += count
    sampled = (
        "of the thread holding the interpreter lock"
        if gil
        else "of threads that were running or blocked in a system call"
    )
    lines = [f"{total} samples {sampled}", ""]
    lines.append("By thread:")
    lines += [f"  {count / total:6.1%}  {name}" for name, count in threads.most_common(10)]
    lines += ["", f"Steps of {STORE_FRAME}:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in store_steps.most_common(15)]
    lines += ["", "By function, inclusive:"]
    lines += [f"  {count / total:6.1%}  {name}" for name, count in functions.most_common(top)]
    return "\n".join(lines) + "\n"


def profile(output_dir: Path, slices: int, associations: int, gil: bool = False) -> Path:
    """Profile one ingest and write its summary; with ``gil``, sample only the lock holder."""
    binary = shutil.which("py-spy")
    if binary is None:
        candidate = Path(sys.executable).parent / "py-spy"
        binary = str(candidate) if candidate.exists() else None
    if binary is None:
        raise SystemExit("py-spy is not installed; pip install -r requirements-dev.txt")
    work_dir = Path(tempfile.mkdtemp(prefix="noctis-profile-"))
    try:
        generator = CorpusGenerator(work_dir / "corpus", seed=5)
        study = generator.study(1)
        generator.write_ct_series(study, slices)
        target = NoctisArchive("noctis", work_dir / "noctis")
        target.start()
        raw_path = work_dir / "samples.txt"
        try:
            sampler = subprocess.Popen(
                [
                    *(binary, "record", "--pid", str(target.pids[0]), "--threads"),
                    *("--rate", str(SAMPLES_PER_S), "--format", "raw", "-o", str(raw_path)),
                    *(["--gil"] if gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1)
            result = measure_ingest(target, study.files, "C-STORE", associations, 0)
            sampler.send_signal(signal.SIGINT)
            sampler.wait(timeout=60)
        finally:
            target.stop()
        header = (
            f"C-STORE of {slices} CT slices of 512 x 512 on {associations} association(s) into "
            f"python -m noctis_archive on SQLite: {result.instances_per_s:.1f} instances/s, "
            f"{result.cpu_s * 1000 / result.instances:.1f} ms server CPU per instance.\n"
            f"Command: python -m bench.profile_ingest --associations {associations}"
            f"{'' if slices == DEFAULT_SLICES else f' --slices {slices}'}"
            f"{' --gil' if gil else ''}\n\n"
        )
        suffix = "-gil" if gil else ""
        summary_path = output_dir / f"ingest-profile-x{associations}{suffix}.txt"
        summary_path.write_text(header + summarize(raw_path, top=40, gil=gil))
        return summary_path
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_ingest", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--slices", type=int, default=DEFAULT_SLICES, help="CT slices to send")
    parser.add_argument("--associations", type=int, default=1, help="concurrent associations")
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "docs" / "benchmarks",
        help="folder for the summary",
    )
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the interpreter lock (CPU in Python code)",
    )
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    path = profile(arguments.output_dir, arguments.slices, arguments.associations, arguments.gil)
    print(path.read_text())


if __name__ == "__main__":
    main()
