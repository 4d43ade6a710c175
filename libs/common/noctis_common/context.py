"""The objects every service shares in one process, built once from settings."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from noctis_common.archive import Archive
from noctis_common.audit import AuditTrail
from noctis_common.db import Database
from noctis_common.deletion import OrphanObjectSweeper
from noctis_common.events import EventPublisher, InProcessPublisher, OutboxRelay, PublisherChain
from noctis_common.kafka_publisher import KafkaPublisher
from noctis_common.metrics import INDEX_DEPTHS, count_database_errors
from noctis_common.settings import Settings
from noctis_common.storage import ObjectStore, create_object_store
from noctis_common.study_complete import StudyCompleteSweeper

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
    # Writes study.complete events; built by create(), started by start().
    study_complete_sweeper: StudyCompleteSweeper | None = field(default=None)
    # With NOCTIS_EVENTS_BACKEND=kafka: the relay sends events to Kafka, then to publisher.
    kafka_publisher: KafkaPublisher | None = field(default=None)
    # Journals audit events; its thread, started by start(), moves them into the index.
    audit: AuditTrail | None = field(default=None)

    @classmethod
    def create(cls, settings: Settings, *, migrate: bool | None = None) -> ArchiveContext:
        """Open the index and the object store.

        With ``migrate`` (default: ``NOCTIS_DB_MIGRATE_ON_START``) pending migrations are
        applied; without it :class:`~noctis_common.db.IndexSchemaOutdatedError` is raised
        when some are pending.
        """
        if migrate is None:
            migrate = settings.db_migrate_on_start
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = Database.from_settings(settings)
        count_database_errors(database.engine)
        try:
            if migrate:
                database.upgrade()
            else:
                database.require_current_schema()
        except BaseException:
            database.dispose()
            raise
        store = create_object_store(settings)
        publisher = InProcessPublisher()
        kafka_publisher = (
            KafkaPublisher.from_settings(settings) if settings.events_backend == "kafka" else None
        )
        relay_publisher: EventPublisher = publisher
        if kafka_publisher is not None:
            relay_publisher = PublisherChain([kafka_publisher, publisher])
        relay = OutboxRelay(
            database,
            relay_publisher,
            settings.outbox_poll_interval_s,
            settings.outbox_retry_max_s,
            batch_delay_s=settings.outbox_relay_batch_delay_s,
        )
        archive = Archive(database, store, settings.spool_dir, relay)
        archive.recover()
        INDEX_DEPTHS.track(database)
        sweeper = OrphanObjectSweeper(database, store, settings.orphan_sweep_interval_s)
        study_complete_sweeper = StudyCompleteSweeper(
            database,
            settings.study_complete_quiet_s,
            settings.study_complete_sweep_interval_s,
            settings.public_base_url,
            on_announced=relay.notify,
        )
        return cls(
            settings,
            database,
            store,
            archive,
            publisher,
            relay,
            sweeper,
            study_complete_sweeper=study_complete_sweeper,
            kafka_publisher=kafka_publisher,
            audit=AuditTrail.from_settings(settings, database),
        )

    def start(self) -> None:
        self.relay.start()
        if self.audit is not None:
            self.audit.start()
        if self.sweeper is not None:
            self.sweeper.start()
        if self.study_complete_sweeper is not None:
            self.study_complete_sweeper.start()

    def close(self) -> None:
        if self.study_complete_sweeper is not None:
            self.study_complete_sweeper.stop()
        if self.sweeper is not None:
            self.sweeper.stop()
        self.relay.stop()
        if self.kafka_publisher is not None:
            self.kafka_publisher.close()
        if self.audit is not None:
            self.audit.stop()
        INDEX_DEPTHS.untrack(self.database)
        self.database.dispose()
