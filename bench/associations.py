"""Measure C-STORE with one association per instance: ``python -m bench.associations``.

Some modalities and routers open a new association for every instance they send. This
sends CT slices that way with one dcmtk ``storescu`` process each, to a fresh Noctis
and a fresh Orthanc in its durable mode, and prints the server CPU per instance, which
includes accepting and negotiating the association. The rate is printed too, but the
start of a storescu process per instance dominates it.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.corpus import CorpusGenerator
from bench.peers import SERVER_ENVIRONMENT, NoctisArchive, Orthanc, Target


def measure(target: Target, files: list[Path]) -> tuple[float, float]:
    """Send each of ``files`` on its own association; return instances/s and CPU ms each."""
    binary = shutil.which("storescu")
    if binary is None:
        raise SystemExit("storescu is not installed (Debian package dcmtk)")
    before = target.sample()
    started = time.perf_counter()
    for path in files:
        subprocess.run(
            [binary, "-aec", target.ae_title, "127.0.0.1", str(target.dimse_ports[0]), str(path)],
            env=SERVER_ENVIRONMENT,
            check=True,
            capture_output=True,
        )
    seconds = time.perf_counter() - started
    cpu_s = target.sample().cpu_s - before.cpu_s
    return len(files) / seconds, cpu_s * 1000 / len(files)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.associations", description=__doc__)
    parser.add_argument("--slices", type=int, default=40, help="CT slices to send")
    arguments = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    work_dir = Path(tempfile.mkdtemp(prefix="noctis-associations-"))
    try:
        generator = CorpusGenerator(work_dir / "corpus", seed=5)
        study = generator.study(1)
        generator.write_ct_series(study, arguments.slices)
        print("| Target | Instances/s | Server CPU ms per instance |")
        print("| --- | --- | --- |")
        for target in (
            NoctisArchive("noctis", work_dir / "noctis"),
            Orthanc("orthanc", work_dir / "orthanc"),
        ):
            target.start()
            try:
                rate, cpu_ms = measure(target, study.files)
            finally:
                target.stop()
            print(f"| {target.name} | {rate:.1f} | {cpu_ms:.1f} |")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
