"""The Tansu test broker: restart by PID, and S3 storage that survives SIGKILL."""

from __future__ import annotations

import uuid

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from tests.servers.seaweedfs import SeaweedFS
from tests.servers.tansu import TansuBroker

TOPIC = "survival"
GROUP = "survival-test"


def committed_offset(broker: TansuBroker) -> int | None:
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    try:
        offsets = admin.list_group_offsets(GROUP).get(GROUP, {})
    finally:
        admin.close()
    found = offsets.get(TopicPartition(TOPIC, 0))
    return None if found is None else int(found.offset)


def read_values(broker: TansuBroker) -> list[bytes]:
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap_servers, consumer_timeout_ms=2000)
    try:
        partition = TopicPartition(TOPIC, 0)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        return [record.value for record in consumer]
    finally:
        consumer.close()


def test_kill_then_start_keeps_address(kafka_broker: TansuBroker) -> None:
    first_pid = kafka_broker.pid
    address = kafka_broker.bootstrap_servers

    kafka_broker.kill()
    kafka_broker.start()

    assert kafka_broker.is_running()
    assert kafka_broker.pid != first_pid
    assert kafka_broker.bootstrap_servers == address


def test_s3_storage_survives_sigkill(s3_server: SeaweedFS) -> None:
    bucket = f"tansu-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    with TansuBroker(f"s3://{bucket}/", s3_server.aws_environment()) as broker:
        broker.create_topic(TOPIC, partitions=1)
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap_servers, acks="all")
        for number in range(3):
            producer.send(TOPIC, value=f"record {number}".encode()).get(timeout=10)
        producer.close()
        consumer = KafkaConsumer(
            bootstrap_servers=broker.bootstrap_servers,
            group_id=GROUP,
            enable_auto_commit=False,
        )
        consumer.commit({TopicPartition(TOPIC, 0): OffsetAndMetadata(2, "", -1)})
        consumer.close(autocommit=False)

        broker.kill()
        broker.start()

        assert read_values(broker) == [b"record 0", b"record 1", b"record 2"]
        assert committed_offset(broker) == 2
