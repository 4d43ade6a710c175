"""Kafka connection settings map onto kafka-python's options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from noctis_common.context import ArchiveContext
from noctis_common.kafka_client import (
    KafkaSettingsError,
    kafka_connection_options,
    record_headers,
)
from noctis_common.settings import Settings


def test_plaintext_options_list_brokers(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, kafka_bootstrap_servers=" kafka-1:9092, kafka-2:9092 ,", auth_mode="off"
    )

    options = kafka_connection_options(settings)

    assert options == {
        "bootstrap_servers": ["kafka-1:9092", "kafka-2:9092"],
        "client_id": "noctis",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_ssl_options_pass_through(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        auth_mode="off",
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="noctis",
        kafka_sasl_password=SecretStr("secret"),
        kafka_ssl_cafile=tmp_path / "ca.pem",
        kafka_ssl_check_hostname=False,
    )

    options = kafka_connection_options(settings)

    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "noctis"
    assert options["sasl_plain_password"] == "secret"
    assert options["ssl_cafile"] == str(tmp_path / "ca.pem")
    assert options["ssl_check_hostname"] is False
    assert "ssl_certfile" not in options


def test_sasl_without_mechanism_is_rejected(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, auth_mode="off", kafka_security_protocol="SASL_PLAINTEXT"
    )

    with pytest.raises(KafkaSettingsError, match="NOCTIS_KAFKA_SASL_MECHANISM"):
        kafka_connection_options(settings)


def test_record_headers_decode_to_text() -> None:
    headers = [("traceparent", b"00-abc-def-01"), ("binary", b"\xff"), ("empty", None)]

    assert record_headers(headers) == {
        "traceparent": "00-abc-def-01",
        "binary": "\ufffd",
        "empty": "",
    }


def test_default_backend_has_no_kafka_publisher(sqlite_settings: Settings) -> None:
    context = ArchiveContext.create(sqlite_settings)
    try:
        assert context.kafka_publisher is None
        assert context.relay.publisher is context.publisher
    finally:
        context.close()
