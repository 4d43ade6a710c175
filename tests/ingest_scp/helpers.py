"""Helpers for the DIMSE gateway tests: an in-process SCP, dcmtk runs, index look-ups."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import FileDataset
from sqlalchemy import func, select

from noctis_common.context import ArchiveContext
from noctis_common.db.models import Instance
from noctis_common.settings import Settings
from noctis_ingest_scp.scp import StorageSCP
from tests.support import dataset_bytes, free_port, require_tool


@dataclass
class RunningSCP:
    """A started :class:`StorageSCP` and the archive context it stores into."""

    context: ArchiveContext
    scp: StorageSCP

    @property
    def port(self) -> int:
        return self.scp.port

    def instance(self, sop_instance_uid: str) -> Instance | None:
        with self.context.database.read_session() as session:
            return session.scalar(
                select(Instance).where(Instance.sop_instance_uid == sop_instance_uid)
            )

    def instance_count(self) -> int:
        with self.context.database.read_session() as session:
            return int(session.scalar(select(func.count(Instance.id))) or 0)

    def object_path(self, instance: Instance) -> Path:
        return self.context.settings.objects_dir / instance.object_key

    def stored_file(self, instance: Instance) -> FileDataset:
        return pydicom.dcmread(self.object_path(instance), stop_before_pixels=True)

    def stored_dataset_bytes(self, instance: Instance) -> bytes:
        return dataset_bytes(self.object_path(instance))

    def object_files(self) -> list[Path]:
        root = self.context.settings.objects_dir
        return sorted(path for path in root.rglob("*") if path.is_file())

    def spool_files(self) -> list[Path]:
        """Return the files in this process's spool, leaving out the intents folder."""
        spool = self.context.archive.spool_dir
        intents = self.context.archive.intents_dir
        return sorted(
            path for path in spool.rglob("*") if path.is_file() and intents not in path.parents
        )


@contextmanager
def running_scp(settings: Settings, **overrides: object) -> Iterator[RunningSCP]:
    """Start a StorageSCP on a free loopback port; stop it and close its context after."""
    scp_settings = settings.model_copy(
        update={"dimse_host": "127.0.0.1", "dimse_port": free_port(), **overrides}
    )
    context = ArchiveContext.create(scp_settings)
    scp = StorageSCP(context)
    try:
        scp.start()
        yield RunningSCP(context=context, scp=scp)
    finally:
        scp.stop()
        context.close()


def run_dcmtk(
    tool: str, *arguments: object, timeout_s: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk command-line tool; stdout and stderr come back together as text."""
    return subprocess.run(
        [require_tool(tool), *map(str, arguments)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout_s,
        check=False,
    )
