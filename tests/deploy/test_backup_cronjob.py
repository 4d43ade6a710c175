"""The backup CronJob's shell script, run for real on a small SQLite archive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from noctis_common.db import Database
from tests.deploy.manifests import chart_objects

KEEP = 1


def backup_container() -> dict[str, Any]:
    objects = chart_objects(
        {"backup": {"enabled": True, "existingClaim": "noctis-backup", "keep": KEEP}}
    )
    (cron_job,) = [document for document in objects if document["kind"] == "CronJob"]
    container: dict[str, Any] = cron_job["spec"]["jobTemplate"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return container


def run_backup_script(container: dict[str, Any], environment: dict[str, str]) -> None:
    completed = subprocess.run(
        container["command"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr


def test_backup_script_keeps_newest(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    backup_dir = tmp_path / "backup"
    data_dir.mkdir()
    backup_dir.mkdir()
    database = Database(f"sqlite:///{data_dir / 'index.sqlite'}")
    database.upgrade()
    database.dispose()

    container = backup_container()
    environment = {variable["name"]: variable["value"] for variable in container["env"]}
    environment.update(
        {
            "BACKUP_DIR": str(backup_dir),
            "NOCTIS_DATA_DIR": str(data_dir),
            # `python` in the script is the one running the tests.
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        }
    )
    for run in range(KEEP + 1):
        if run:
            time.sleep(1.1)  # folders are named by their start time, to the second
        run_backup_script(container, environment)

    folders = sorted(path for path in backup_dir.iterdir())
    assert environment["BACKUP_KEEP"] == str(KEEP)
    assert len(folders) == KEEP
    for folder in folders:
        assert (folder / "manifest.json").is_file(), folder
        assert (folder / "index.sqlite").is_file(), folder
