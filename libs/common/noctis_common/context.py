"""The objects every service shares in one process, built once from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from noctis_common.archive import Archive
from noctis_common.db import Database
from noctis_common.deletion import OrphanObjectSweeper
from noctis_common.events import InProcessPublisher, OutboxRelay
from noctis_common.metrics import INDEX_DEPTHS
from noctis_common.settings import Settings
from noctis_common.storage import ObjectStore, create_object_store

logger = logging.getLogger(__name__)


@dataclass
class ArchiveContext:
    """Settings, index, object store, archive pipeline and event relay of one process."""

    settings: Settings
    database: Database
    store: ObjectStore
    archive: Archive
    publisher: InProcessPublisher
    relay: OutboxRelay
    # Retries failed object deletions; built by create(), started by start().
    sweeper: OrphanObjectSweeper | None = field(default=None)

    @classmethod
    def create(cls, settings: Settings, *, migrate: bool = True) -> ArchiveContext:
        """Open the index and the object store; apply migrations when ``migrate`` is set."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database(settings.resolved_database_url)
        if migrate:
            database.upgrade()
        store = create_object_store(settings)
        publisher = InProcessPublisher()
        relay = OutboxRelay(database, publisher, settings.outbox_poll_interval_s)
        archive = Archive(database, store, settings.spool_dir, relay)
        archive.recover()
        INDEX_DEPTHS.track(database)
        sweeper = OrphanObjectSweeper(database, store, settings.orphan_sweep_interval_s)
        return cls(settings, database, store, archive, publisher, relay, sweeper)

    def start(self) -> None:
        self.relay.start()
        if self.sweeper is not None:
            self.sweeper.start()

    def close(self) -> None:
        if self.sweeper is not None:
            self.sweeper.stop()
        self.relay.stop()
        INDEX_DEPTHS.untrack(self.database)
        self.database.dispose()
