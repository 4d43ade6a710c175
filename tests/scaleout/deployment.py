"""A scale-out deployment on one machine: every server and service its own process.

PostgreSQL comes from the test session (tests/conftest.py). This module starts
SeaweedFS (S3) and the Tansu broker, whose topics live in SeaweedFS so that they survive
a SIGKILL of the broker. Then it runs the migration job and starts two DIMSE gateways,
STOW-RS, QIDO-RS, WADO-RS and the events service. The services get every setting through the
environment and run with ``NOCTIS_DB_MIGRATE_ON_START=false``, as in production.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition

from tests.scaleout.processes import ServiceProcess, dimse_gateway, run_migration_job
from tests.servers.seaweedfs import SeaweedFS
from tests.servers.tansu import TansuBroker

OBJECT_BUCKET = "noctis-objects"
BROKER_BUCKET = "tansu"
EVENT_TOPIC = "noctis-events"
EVENT_PARTITIONS = 3
# Short waits so that a run takes about a minute: a study counts as complete after two
# quiet seconds, and relays retry a failed batch within two seconds.
SERVICE_ENVIRONMENT = {
    "NOCTIS_DB_MIGRATE_ON_START": "false",
    "NOCTIS_STUDY_COMPLETE_QUIET_S": "2",
    "NOCTIS_STUDY_COMPLETE_SWEEP_INTERVAL_S": "0.5",
    "NOCTIS_OUTBOX_POLL_INTERVAL_S": "0.2",
    "NOCTIS_OUTBOX_RETRY_MAX_S": "2",
    "NOCTIS_READINESS_TIMEOUT_S": "3",
    "NOCTIS_EVENTS_SOURCE": "/noctis-scaleout-test",
}


@dataclass
class Deployment:
    """The running processes of one scale-out deployment."""

    work_dir: Path
    object_store: SeaweedFS
    broker: TansuBroker
    environment: dict[str, str]
    services: dict[str, ServiceProcess] = field(default_factory=dict)

    @property
    def gateways(self) -> list[ServiceProcess]:
        return [self.services["ingest-scp-1"], self.services["ingest-scp-2"]]

    def start_services(self) -> None:
        """Start every service at once and wait until each is ready."""
        gateway_1 = dimse_gateway("ingest-scp-1", self.environment, self.work_dir)
        gateway_2 = dimse_gateway("ingest-scp-2", self.environment, self.work_dir)
        self.services = {
            "ingest-scp-1": gateway_1,
            "ingest-scp-2": gateway_2,
            "stow": ServiceProcess("stow", "noctis_stow", self.environment, self.work_dir),
            "qido": ServiceProcess("qido", "noctis_qido", self.environment, self.work_dir),
            "wado": ServiceProcess("wado", "noctis_wado", self.environment, self.work_dir),
            "events": ServiceProcess("events", "noctis_events", self.environment, self.work_dir),
        }
        for service in self.services.values():
            service.start(wait=False)
        for service in self.services.values():
            service.wait_until_ready(timeout_s=120)

    def close(self) -> None:
        for service in self.services.values():
            service.close()
        self.broker.close()
        self.object_store.close()

    def logs(self) -> str:
        """Return the end of every service's log, for assertion messages."""
        return "\n".join(
            f"--- {name}:\n{service.log_tail()}" for name, service in self.services.items()
        )


@contextmanager
def running_deployment(work_dir: Path, database_url: str) -> Iterator[Deployment]:
    """Start the servers, run the migration job, start the services; stop all at the end."""
    object_store = SeaweedFS(work_dir / "seaweedfs")
    broker = TansuBroker(
        storage_url=f"s3://{BROKER_BUCKET}/",
        environment=object_store.aws_environment(),
        log_dir=work_dir / "tansu",
    )
    deployment = Deployment(work_dir, object_store, broker, {})
    try:
        object_store.start()
        object_store.create_bucket(OBJECT_BUCKET)
        object_store.create_bucket(BROKER_BUCKET)
        broker.start()
        broker.create_topic(EVENT_TOPIC, EVENT_PARTITIONS)
        deployment.environment = {
            "NOCTIS_DATABASE_URL": database_url,
            **object_store.noctis_environment(OBJECT_BUCKET),
            **broker.noctis_environment(EVENT_TOPIC),
            **SERVICE_ENVIRONMENT,
        }
        run_migration_job(deployment.environment, work_dir)
        deployment.start_services()
        yield deployment
    finally:
        deployment.close()


def read_topic(
    bootstrap_servers: str,
    topic: str,
    complete: Callable[[list[dict[str, Any]]], bool],
    timeout_s: float = 60.0,
) -> list[dict[str, Any]]:
    """Read the topic from its start until ``complete(events)`` is true or time runs out.

    Returns every CloudEvent read, duplicates included.
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    events: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout_s
        partitions = consumer.partitions_for_topic(topic)
        while not partitions and time.monotonic() < deadline:
            time.sleep(0.2)
            consumer.topics()
            partitions = consumer.partitions_for_topic(topic)
        consumer.assign([TopicPartition(topic, number) for number in sorted(partitions or ())])
        consumer.seek_to_beginning()
        while time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                events.extend(json.loads(record.value) for record in records)
            if complete(events):
                break
    finally:
        consumer.close()
    return events
