"""Connection options shared by the Kafka producer and consumers (kafka-python).

The security settings are passed through to kafka-python unchanged, so a cluster that
needs TLS, SASL (PLAIN or SCRAM) or both is reached by setting ``NOCTIS_KAFKA_*``
variables alone.
"""

from __future__ import annotations

from typing import Any

from noctis_common.settings import Settings


class KafkaSettingsError(ValueError):
    """The Kafka security settings contradict each other."""


def kafka_connection_options(settings: Settings) -> dict[str, Any]:
    """Return the kafka-python keyword arguments that connect to the configured brokers.

    Raises :class:`KafkaSettingsError` when a SASL protocol has no mechanism or user.
    """
    options: dict[str, Any] = {
        "bootstrap_servers": [
            server.strip()
            for server in settings.kafka_bootstrap_servers.split(",")
            if server.strip()
        ],
        "client_id": settings.kafka_client_id,
        "security_protocol": settings.kafka_security_protocol,
    }
    if settings.kafka_security_protocol.startswith("SASL_"):
        if settings.kafka_sasl_mechanism is None or not settings.kafka_sasl_username:
            raise KafkaSettingsError(
                f"NOCTIS_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol} needs "
                "NOCTIS_KAFKA_SASL_MECHANISM and NOCTIS_KAFKA_SASL_USERNAME; set both, or "
                "use PLAINTEXT or SSL"
            )
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    if settings.kafka_security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_check_hostname"] = settings.kafka_ssl_check_hostname
        if settings.kafka_ssl_cafile is not None:
            options["ssl_cafile"] = str(settings.kafka_ssl_cafile)
        if settings.kafka_ssl_certfile is not None:
            options["ssl_certfile"] = str(settings.kafka_ssl_certfile)
        if settings.kafka_ssl_keyfile is not None:
            options["ssl_keyfile"] = str(settings.kafka_ssl_keyfile)
    return options


def record_headers(headers: Any) -> dict[str, str]:
    """Decode a Kafka record's headers (name and bytes pairs) to text.

    A header that is not valid UTF-8 is decoded with replacement characters; when a
    name repeats, the last value wins.
    """
    decoded: dict[str, str] = {}
    for name, value in headers or ():
        decoded[str(name)] = (value or b"").decode("utf-8", errors="replace")
    return decoded
