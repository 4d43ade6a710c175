"""Settings read from ``NOCTIS_*`` environment variables.

Every setting is documented in the README's settings table with its default and unit.
"""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from noctis_common.auth_config import (
    check_auth_settings,
    parse_role_mapping,
    parse_trusted_proxies,
)
from noctis_common.secret_files import read_secret_files

# Secrets that a file can hold instead, as Kubernetes Secrets are mounted: each maps to
# the setting that names the file. auth_key_passphrase_file is read by noctis_auth.keys.
SECRET_FILE_SETTINGS = {
    "database_url": "database_url_file",
    "s3_secret_key": "s3_secret_key_file",
    "kafka_sasl_password": "kafka_sasl_password_file",
}


class Settings(BaseSettings):
    """Runtime configuration shared by every Noctis service."""

    # Validation errors leave out the input: a model-level error would otherwise print
    # every setting, secrets included.
    model_config = SettingsConfigDict(
        env_prefix="NOCTIS_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    data_dir: Path = Field(
        default=Path("var"),
        description="Folder for the SQLite index, stored objects and the receive spool.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the index database; default: SQLite in data_dir.",
    )

    # Object storage: the backend, and the S3 server, bucket and client behaviour.
    storage_backend: Literal["filesystem", "s3"] = Field(
        default="filesystem",
        description="Where stored objects go: 'filesystem' (data_dir/objects) or 's3' (s3_*).",
    )
    s3_endpoint: str = Field(
        default="127.0.0.1:9000",
        description="Host and port of the S3 server, or an http:// or https:// URL of it; "
        "a URL's scheme overrides s3_secure.",
    )
    s3_access_key: str = Field(
        default="", description="S3 access key ID; empty sends unsigned requests."
    )
    s3_secret_key: SecretStr = Field(
        default=SecretStr(""), description="Secret access key of s3_access_key; never logged."
    )
    s3_bucket: str = Field(
        default="noctis",
        description="Bucket that holds the objects; created at start when missing, which "
        "needs the permission to create buckets.",
    )
    s3_secure: bool = Field(default=False, description="Reach the S3 server by HTTPS.")
    s3_region: str | None = Field(
        default=None, description="Region of the bucket; default: the one the server reports."
    )
    s3_part_size_bytes: int = Field(
        default=16 * 1024**2,
        ge=5 * 1024**2,
        le=5 * 1024**3,
        description="Part size of multipart uploads (5 MiB to 5 GiB); objects up to this "
        "size are stored by one PUT.",
    )
    s3_parallel_parts: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Parts of one object uploaded at once; an upload keeps up to "
        "s3_parallel_parts + 1 parts in memory.",
    )
    s3_max_connections: int = Field(
        default=32, ge=1, description="HTTP connections to the S3 server kept for reuse."
    )
    s3_connect_timeout_s: float = Field(
        default=5.0, gt=0, description="Seconds to wait for the S3 server to accept a connection."
    )
    s3_read_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds to wait for each read of the S3 server's response.",
    )
    s3_retry_max_s: float = Field(
        default=15.0,
        ge=0,
        description="Seconds after its first failure during which an S3 request that "
        "failed for a transient reason (connection refused or reset, timeout, HTTP 5xx, "
        "SlowDown) is retried; 0 turns retries off.",
    )
    s3_retry_initial_s: float = Field(
        default=0.2,
        gt=0,
        description="Wait before the first S3 retry; each further retry doubles it, up to 5 s.",
    )

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    public_base_url: str | None = Field(
        default=None,
        description="Base URL put in RetrieveURL and BulkDataURI; default: from the request.",
    )
    trust_forwarded_headers: bool = Field(
        default=True,
        description="Build response links from Forwarded and X-Forwarded-* proxy headers, "
        "and take client addresses (login throttling, audit records) from them, for "
        "requests whose TCP peer is one of trusted_proxies; false ignores them always.",
    )
    trusted_proxies: str = Field(
        default="127.0.0.1,::1",
        description="Comma-separated addresses or networks (CIDR) of the reverse proxies "
        "whose Forwarded and X-Forwarded-* headers are believed; '*' trusts every peer. "
        "The default, loopback only, lets a proxy on the same host work while remote "
        "clients cannot forge their address.",
    )
    cors_allow_origins: str = Field(
        default="*", description="Comma-separated origins allowed by CORS, or '*'."
    )
    stow_max_request_bytes: int = Field(default=2 * 1024**3, gt=0)
    qido_max_limit: int = Field(
        default=1000,
        ge=1,
        description="Maximum number of matches in one QIDO-RS response; more need offset.",
    )

    dimse_host: str = "127.0.0.1"
    dimse_port: int = Field(default=11112, ge=1, le=65535)
    ae_title: str = Field(default="NOCTIS", min_length=1, max_length=16)
    dimse_max_associations: int = Field(default=32, ge=1)
    dimse_max_pdu_bytes: int = Field(default=0, ge=0)
    dimse_event_driven_reactors: bool = Field(
        default=True,
        description="Wake pynetdicom's reactor threads on work instead of polling every 1 ms.",
    )
    dimse_acse_timeout_s: float = Field(default=30.0, gt=0)
    dimse_timeout_s: float = Field(default=60.0, gt=0)
    dimse_network_timeout_s: float = Field(default=60.0, gt=0)
    dimse_peers_file: Path | None = Field(
        default=None, description="JSON file listing known remote AEs and their permissions."
    )
    dimse_unknown_peer_permissions: str = Field(
        default="echo,store",
        description="Comma-separated permissions of calling AE titles not in the peer list.",
    )
    dimse_check_called_ae_title: bool = Field(
        default=False,
        description="Reject associations whose called AE title is not ae_title; off accepts any.",
    )
    dimse_tls_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="TCP port of the DICOM TLS listener (conventionally 2762); 0 turns TLS off.",
    )
    dimse_tls_certificate_file: Path | None = Field(
        default=None, description="PEM certificate (chain) the TLS listener presents."
    )
    dimse_tls_private_key_file: Path | None = Field(
        default=None, description="PEM private key of dimse_tls_certificate_file, unencrypted."
    )
    dimse_tls_ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM CA certificates: TLS clients must present a certificate they signed, and "
            "peers Noctis connects to by TLS are verified against them."
        ),
    )
    forward_rules_file: Path | None = Field(
        default=None, description="JSON file of rules that forward stored instances by C-STORE."
    )
    forward_max_attempts: int = Field(
        default=10, ge=1, description="Attempts to forward one instance before it is marked failed."
    )
    forward_retry_initial_s: float = Field(
        default=5.0, gt=0, description="Wait before the first retry; each retry doubles it."
    )
    forward_retry_max_s: float = Field(
        default=600.0, gt=0, description="Maximum wait between two forwarding attempts."
    )
    forward_poll_interval_s: float = Field(
        default=2.0, gt=0, description="How often the forwarding worker looks for due retries."
    )

    outbox_poll_interval_s: float = Field(default=1.0, gt=0)

    # Study completion and the change feed (noctis_common.study_complete, noctis_events).
    study_complete_quiet_s: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Seconds without a new instance after which a study counts as complete and "
            "its study.complete event is written."
        ),
    )
    study_complete_sweep_interval_s: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Seconds between two checks for studies whose quiet period has passed; an "
            "event comes at most this long after the quiet period."
        ),
    )
    orphan_sweep_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between retries of object deletions that failed, after the "
        "first retry at start-up.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description=(
            "TCP port on http_host where the standalone DIMSE gateway serves /metrics, "
            "/health/live and /health/ready; 0 serves them on http_port. Processes with "
            "an HTTP app serve them on http_port."
        ),
    )
    log_level: str = "INFO"
    log_phi: bool = Field(
        default=False, description="Log patient names and IDs; off so logs carry no PHI."
    )

    # -- Observability: log format (traces are configured by the standard OTEL_* variables)
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "Console log format: 'text' lines on stderr, or 'json' (one JSON object per "
            "line on stdout, with trace_id and span_id), meant for production."
        ),
    )

    # Services run alone: PostgreSQL connection pool, migrations, readiness, shutdown.
    db_pool_size: int = Field(
        default=5,
        ge=1,
        description="Connections each process keeps open to a PostgreSQL index.",
    )
    db_max_overflow: int = Field(
        default=10,
        ge=0,
        description="Extra PostgreSQL connections a process may open under load, beyond "
        "db_pool_size; they are closed when returned.",
    )
    db_pool_recycle_s: int = Field(
        default=1800,
        ge=-1,
        description="Seconds after which a pooled PostgreSQL connection is replaced on its "
        "next use, so idle-connection cuts of proxies and firewalls do no harm; -1 never.",
    )
    db_pool_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds a request waits for a free pooled connection before it fails.",
    )
    db_connect_timeout_s: int = Field(
        default=10,
        ge=1,
        description="Seconds to wait for PostgreSQL to accept a new connection.",
    )
    db_migrate_on_start: bool = Field(
        default=True,
        description="Apply pending index migrations when a service starts. With false, a "
        "service whose index is behind exits and names the migration command.",
    )
    readiness_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Seconds each required dependency check of /health/ready may take "
        "before it counts as failed. Keep it below the orchestrator's probe timeout (3 s "
        "in the Helm chart); optional checks run in the background and never wait.",
    )
    http_shutdown_timeout_s: int = Field(
        default=30,
        ge=1,
        description="Seconds an HTTP service waits on SIGTERM for requests in progress "
        "before it cancels them and exits.",
    )
    dimse_shutdown_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the DIMSE gateway waits on SIGTERM for open associations to "
        "be released before it aborts them and exits.",
    )

    # -- Access control and audit trail: token checks on every HTTP API, the audit table
    auth_mode: Literal["internal", "oidc", "off"] = Field(
        default="internal",
        description=(
            "How HTTP APIs authenticate: 'internal' verifies tokens of the Noctis token "
            "service, 'oidc' those of an external OpenID Connect provider, 'off' lets "
            "every request in, which is allowed only while http_host is a loopback address."
        ),
    )
    auth_issuer: str | None = Field(
        default=None,
        description=(
            "The iss claim tokens must carry. Required with 'oidc'. With 'internal' the "
            "default is public_base_url without '/dicom-web', or the request's base URL, "
            "followed by '/auth'."
        ),
    )
    auth_audience: str = Field(
        default="noctis", min_length=1, description="The aud claim tokens must carry."
    )
    auth_jwks_url: str | None = Field(
        default=None,
        description=(
            "URL of the JSON Web Key Set that signs tokens. Default: the keys of the token "
            "service in this process ('internal'), or the jwks_uri of the issuer's OpenID "
            "discovery document."
        ),
    )
    auth_clock_skew_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds of clock difference allowed when checking exp, nbf and iat.",
    )
    auth_jwks_max_age_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a fetched key set is used before it is fetched again.",
    )
    auth_jwks_min_refresh_interval_s: float = Field(
        default=30.0,
        ge=0,
        description=(
            "Minimum seconds between two key set fetches caused by tokens with an unknown "
            "key id, so forged key ids cannot make the service hammer the key server."
        ),
    )
    auth_role_claim: str = Field(
        default="roles",
        min_length=1,
        description=(
            "Dotted path of the claim that lists a token's roles, such as "
            "'realm_access.roles' for Keycloak realm roles."
        ),
    )
    auth_role_mapping: str = Field(
        default="",
        description=(
            "Comma-separated 'provider_role=noctis_role' pairs that map an external "
            "provider's role names to Noctis roles; names that are Noctis roles map to "
            "themselves."
        ),
    )
    auth_referring_physician_claim: str = Field(
        default="referring_physician_name",
        min_length=1,
        description=(
            "Claim with the DICOM person name of a referring physician, which limits "
            "them to the studies naming them as Referring Physician."
        ),
    )
    audit_source_id: str | None = Field(
        default=None,
        description="AuditSourceID of exported audit messages; default: ae_title.",
    )
    audit_flush_interval_s: float = Field(
        default=1.0,
        gt=0,
        description=(
            "Seconds between two moves of journaled audit records into the index "
            "database; a process crash loses none of them, see the README."
        ),
    )

    # Auth service (noctis_auth): token lifetimes, account lockout, signing keys.
    auth_access_token_lifetime_s: int = Field(
        default=900, ge=30, description="Seconds an access token or ID token is valid."
    )
    auth_refresh_token_lifetime_s: int = Field(
        default=12 * 3600,
        ge=60,
        description=(
            "Seconds a login lasts: refresh tokens stop working this long after the user "
            "entered their password, however often they were rotated."
        ),
    )
    auth_authorization_code_lifetime_s: int = Field(
        default=60, ge=5, description="Seconds an authorization code can be exchanged."
    )
    auth_lockout_threshold: int = Field(
        default=5, ge=1, description="Failed logins in a row that lock an account."
    )
    auth_lockout_minutes: float = Field(
        default=15.0, gt=0, description="Minutes a locked account rejects every login."
    )
    auth_password_min_length: int = Field(
        default=12, ge=8, description="Minimum length of a new password, in characters."
    )
    auth_signing_algorithm: Literal["ES256", "RS256"] = Field(
        default="ES256",
        description="JWS algorithm of the signing keys the token service creates.",
    )
    auth_key_overlap_s: int = Field(
        default=3600,
        ge=0,
        description=(
            "Seconds a signing key stays in the JWKS after a rotation replaced it, so that "
            "tokens it signed still verify; keep it above auth_access_token_lifetime_s."
        ),
    )
    auth_key_passphrase: SecretStr | None = Field(
        default=None,
        description=(
            "Passphrase that encrypts the token signing keys stored in the index. Without "
            "it they are stored unencrypted."
        ),
    )
    auth_key_passphrase_file: Path | None = Field(
        default=None,
        description="File whose content (without a final newline) is auth_key_passphrase.",
    )

    # -- Auth hardening: login throttling, audit journal fsync, secrets read from files
    auth_throttle_max_failures: int = Field(
        default=30,
        ge=0,
        description=(
            "Failed logins a client address may make in a row before the token endpoint "
            "and the login form answer it with 429; it regains one every "
            "auth_throttle_window_s / auth_throttle_max_failures seconds. 0 turns the "
            "throttle off."
        ),
    )
    auth_throttle_window_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds in which an address regains all auth_throttle_max_failures.",
    )
    audit_journal_fsync: bool = Field(
        default=True,
        description=(
            "fsync the audit journal, so that the audit record of an acknowledged store "
            "or delete survives a power loss; concurrent records share one fsync."
        ),
    )
    database_url_file: Path | None = Field(
        default=None,
        description="File whose content (without a final newline) is database_url.",
    )
    s3_secret_key_file: Path | None = Field(
        default=None,
        description="File whose content (without a final newline) is s3_secret_key.",
    )
    kafka_sasl_password_file: Path | None = Field(
        default=None,
        description="File whose content (without a final newline) is kafka_sasl_password.",
    )

    # -- Events: the outbox relay, the Kafka publisher and event consumers
    events_backend: Literal["inprocess", "kafka"] = Field(
        default="inprocess",
        description="Where the outbox relay publishes events: 'inprocess' calls subscribers "
        "in the relay's process only; 'kafka' sends them to kafka_topic first.",
    )
    events_source: str = Field(
        default="/noctis",
        min_length=1,
        description="CloudEvents 'source' of published events (a URI reference). Give each "
        "archive that shares a Kafka cluster its own, because consumers deduplicate by "
        "source and id.",
    )
    outbox_retry_max_s: float = Field(
        default=60.0,
        gt=0,
        description="Maximum seconds between two outbox relay attempts after failures; the "
        "wait starts at outbox_poll_interval_s and doubles after each failure.",
    )
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        min_length=1,
        description="Comma-separated host:port of Kafka brokers to fetch cluster metadata from.",
    )
    kafka_topic: str = Field(
        default="noctis-events",
        min_length=1,
        description="Topic of every published event, keyed by StudyInstanceUID.",
    )
    kafka_client_id: str = Field(
        default="noctis",
        min_length=1,
        description="Client id the producer and consumers send to the brokers, for their "
        "logs and quotas.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="Kafka security protocol: TLS (SSL), SASL authentication, both or neither.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        description="SASL mechanism with SASL_PLAINTEXT or SASL_SSL; none without SASL.",
    )
    kafka_sasl_username: str = Field(default="", description="SASL user name.")
    kafka_sasl_password: SecretStr = Field(
        default=SecretStr(""), description="SASL password; never logged."
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA certificates that broker certificates are verified against; "
        "default: the system's trusted CAs.",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None,
        description="PEM client certificate for brokers that require TLS client authentication.",
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of kafka_ssl_certfile."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="Check that broker certificates name the broker's host."
    )
    kafka_publish_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Seconds the relay waits for the brokers to acknowledge one batch before "
        "it counts the batch as failed and retries it.",
    )
    kafka_consumer_max_attempts: int = Field(
        default=5,
        ge=1,
        description="Attempts an event consumer's handler gets for one event before the "
        "event goes to the dead-letter topic.",
    )
    kafka_consumer_retry_initial_s: float = Field(
        default=1.0,
        gt=0,
        description="Seconds before a consumer's first retry of a failed event; each retry "
        "doubles it.",
    )
    kafka_consumer_retry_max_s: float = Field(
        default=30.0,
        gt=0,
        description="Maximum seconds between two attempts of a consumer on one event.",
    )
    kafka_consumer_session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="Milliseconds without heartbeats after which the group coordinator "
        "removes a consumer and moves its partitions to the others.",
    )

    # Ingest speed: batching of the work that concurrent stores share (docs/benchmarks.md).
    outbox_relay_batch_delay_s: float = Field(
        default=0.05,
        ge=0,
        le=5,
        description="Seconds the outbox relay waits after a store before it publishes, so "
        "that one batch carries the events of the stores committed meanwhile; 0 publishes "
        "at once. Events are delayed by at most this much.",
    )

    @property
    def resolved_database_url(self) -> str:
        """Return the index URL, defaulting to a SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def cors_origins(self) -> list[str]:
        return [origin.strip() for origin in self.cors_allow_origins.split(",") if origin.strip()]

    @property
    def audit_journal_dir(self) -> Path:
        """Folder of the audit journal files, which queue records for the audit table."""
        return self.data_dir / "audit-journal"

    @property
    def trusted_proxy_networks(self) -> list[IPv4Network | IPv6Network] | None:
        """Return the networks of ``trusted_proxies``, or ``None`` when it is '*'."""
        return parse_trusted_proxies(self.trusted_proxies)

    @property
    def auth_role_map(self) -> dict[str, str]:
        """Return ``auth_role_mapping`` as a dict from provider role to Noctis role."""
        return parse_role_mapping(self.auth_role_mapping)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, values: Any) -> Any:
        if isinstance(values, dict):
            return read_secret_files(values, SECRET_FILE_SETTINGS)
        return values

    @model_validator(mode="after")
    def _check_auth_settings(self) -> Settings:
        check_auth_settings(self)
        return self
