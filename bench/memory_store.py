"""RSS of the store path alone, without DIMSE: ``python -m bench.memory_store``.

Stores MR slices of 256 x 256 through :meth:`Archive.store_part10` in this process, on
SQLite in a temporary folder, and prints the process's RSS after each thousand. With
``--sqlite-cache-kib N`` every index connection gets ``PRAGMA cache_size=-N``, to see
whether SQLite's page cache accounts for growth. The long-ingest part of the suite
measures the whole server; this separates the archive's own path from pynetdicom's.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import event

from bench.corpus import CorpusGenerator
from noctis_common.context import ArchiveContext
from noctis_common.settings import Settings

SLICES_PER_STUDY = 250
BATCH = 1000


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS line in /proc/self/status: this script needs Linux")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=6000)
    parser.add_argument("--sqlite-cache-kib", type=int, default=None)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="noctis-memory-"))
    # Settings() below reads these.
    os.environ.update({"NOCTIS_DATA_DIR": str(work / "data"), "NOCTIS_AUTH_MODE": "off"})
    try:
        generator = CorpusGenerator(work / "corpus", seed=5)
        files: list[Path] = []
        for number in range(1, options.instances // SLICES_PER_STUDY + 1):
            study = generator.study(number)
            generator.write_mr_series(study, SLICES_PER_STUDY)
            files += study.files
        context = ArchiveContext.create(Settings())
        if options.sqlite_cache_kib is not None:
            pragma = f"PRAGMA cache_size=-{options.sqlite_cache_kib}"

            @event.listens_for(context.database.engine, "connect")
            def _set_cache_size(connection: Any, _record: Any) -> None:
                cursor = connection.cursor()
                cursor.execute(pragma)
                cursor.close()

            context.database.engine.dispose()
        context.start()
        try:
            samples = []
            for start in range(0, len(files), BATCH):
                for index, path in enumerate(files[start : start + BATCH]):
                    spooled = context.archive.spool_dir / f"in{index}.dcm"
                    shutil.copy(path, spooled)
                    context.archive.store_part10(spooled, source_ae_title="BENCH")
                gc.collect()
                samples.append(f"{rss_mb():.1f}")
        finally:
            context.close()
        cache = options.sqlite_cache_kib
        print(
            f"{len(files)} instances, SQLite cache "
            f"{'default' if cache is None else f'{cache} KiB'}; RSS MB after each "
            f"{BATCH}: {' '.join(samples)}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
