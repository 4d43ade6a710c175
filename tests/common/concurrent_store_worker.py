"""Store Part 10 files from several threads at once, as one archive replica would.

Run as ``python -m tests.common.concurrent_store_worker DATA_DIR DATABASE_URL START_FILE
THREADS FILE...`` from the repository root. The worker opens its own index connection
and spool, prints ``ready`` and waits until START_FILE exists, so that every worker
begins together. Then it stores the files from THREADS threads, prints one line per
failed store and exits with status 1 if any failed.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from noctis_common.archive import Archive, StoreFailedError
from noctis_common.db import Database
from noctis_common.settings import Settings
from noctis_common.storage import create_object_store

START_TIMEOUT_S = 60.0
# The line a worker prints when it is ready to store and starts to wait for START_FILE.
READY = "ready"


def store_concurrently(archive: Archive, paths: list[Path], threads: int) -> list[str]:
    """Store ``paths`` from ``threads`` threads that start together, and return the failures."""
    barrier = threading.Barrier(threads)
    failures: list[str] = []

    def store_share(share: list[Path]) -> None:
        barrier.wait()
        for path in share:
            try:
                archive.store_part10(path)
            except StoreFailedError as error:
                failures.append(f"{path.name}: {error.message}")

    workers = [
        threading.Thread(target=store_share, args=(paths[index::threads],))
        for index in range(threads)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return failures


def main() -> int:
    data_dir, database_url, start_file, threads, *files = sys.argv[1:]
    settings = Settings(data_dir=Path(data_dir), database_url=database_url)
    database = Database(settings.resolved_database_url)
    archive = Archive(database, create_object_store(settings), settings.spool_dir)
    print(READY, flush=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not Path(start_file).exists():
        if time.monotonic() > deadline:
            print(f"{start_file} did not appear in {START_TIMEOUT_S} s", flush=True)
            return 1
        time.sleep(0.01)
    failures = store_concurrently(archive, [Path(name) for name in files], int(threads))
    database.dispose()
    for failure in failures:
        print(failure, flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
