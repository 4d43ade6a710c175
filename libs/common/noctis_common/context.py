"""The objects every service shares in one process, built once from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from noctis_common.archive import Archive
from noctis_common.db import Database
from noctis_common.events import InProcessPublisher, OutboxRelay
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
        return cls(settings, database, store, archive, publisher, relay)

    def start(self) -> None:
        self.relay.start()

    def close(self) -> None:
        self.relay.stop()
        self.database.dispose()
