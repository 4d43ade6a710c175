"""The archive keeps every acknowledged instance when it is killed during a C-STORE burst.

storescu sends a few hundred small instances to ``python -m noctis_archive``. The test
kills the server with SIGKILL after some acknowledgements, restarts it on the same data
folder and checks the durability rule: every instance that storescu saw acknowledged
with Success is indexed with a complete, byte-identical object; every index row points at an object
that parses; and no object or spool file is left without an index row. The checks hold
wherever the kill lands, so the test does not depend on timing.
"""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from noctis_common.db import Database
from noctis_common.db.models import Instance
from tests.support import ArchiveProcess, dataset_bytes, require_tool, write_series

pytestmark = [pytest.mark.dcmtk, pytest.mark.slow]

INSTANCE_COUNT = 300
KILL_AFTER_ACKNOWLEDGEMENTS = 100
SENDING_FILE = re.compile(r"Sending file: (\S+)")
SUCCESS_RESPONSE = re.compile(r"Received Store Response \(Success\)")


def send_until_killed(archive: ArchiveProcess, paths: list[Path]) -> list[Path]:
    """Send ``paths`` with storescu, kill the archive midway; return the acknowledged files."""
    storescu = subprocess.Popen(
        [require_tool("storescu"), "-v", "127.0.0.1", str(archive.dimse_port), *map(str, paths)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert storescu.stdout is not None
    acknowledged: list[Path] = []
    current: Path | None = None
    try:
        for line in storescu.stdout:
            if sending := SENDING_FILE.search(line):
                current = Path(sending.group(1))
            elif SUCCESS_RESPONSE.search(line) and current is not None:
                acknowledged.append(current)
                current = None
                if len(acknowledged) == KILL_AFTER_ACKNOWLEDGEMENTS:
                    archive.kill()
    finally:
        storescu.wait(timeout=60)
    return acknowledged


def test_acknowledged_instances_survive_sigkill(
    archive_process: ArchiveProcess, tmp_path: Path
) -> None:
    paths = write_series(tmp_path / "burst", INSTANCE_COUNT)
    data_dir = archive_process.data_dir
    assert archive_process.process is not None
    killed_spool = data_dir / "spool" / f"{socket.gethostname()}-{archive_process.process.pid}"

    acknowledged = send_until_killed(archive_process, paths)
    assert archive_process.process.poll() is not None, "the archive was not killed"
    assert len(acknowledged) >= KILL_AFTER_ACKNOWLEDGEMENTS

    restarted = ArchiveProcess(data_dir=data_dir)
    restarted.start()
    try:
        database = Database(f"sqlite:///{data_dir / 'index.sqlite'}")
        with database.read_session() as session:
            rows = {row.sop_instance_uid: row for row in session.scalars(select(Instance))}
        database.dispose()
        objects_dir = data_dir / "objects"

        for path in acknowledged:
            sop_instance_uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            row = rows.get(sop_instance_uid)
            assert row is not None, f"acknowledged {path.name} is not in the index"
            # dcmtk 3.6.7 sends these pydicom-written files without re-encoding them.
            assert dataset_bytes(objects_dir / row.object_key) == dataset_bytes(path)

        for row in rows.values():
            stored = objects_dir / row.object_key
            assert stored.is_file(), f"index row {row.sop_instance_uid} has no object"
            digest = hashlib.sha256(dataset_bytes(stored)).hexdigest()
            assert digest == row.dataset_sha256, f"object of {row.sop_instance_uid} is partial"
            assert pydicom.dcmread(stored).SOPInstanceUID == row.sop_instance_uid

        indexed_keys = {row.object_key for row in rows.values()}
        object_keys = {
            found.relative_to(objects_dir).as_posix()
            for found in objects_dir.rglob("*")
            if found.is_file()
        }
        assert object_keys == indexed_keys
        assert not killed_spool.exists(), "the killed process's spool was not recovered"
    finally:
        restarted.stop()
