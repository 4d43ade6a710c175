"""Settings read from ``NOCTIS_*`` environment variables.

Every setting is documented in the README's settings table with its default and unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Runtime configuration shared by every Noctis service."""

    model_config = SettingsConfigDict(env_prefix="NOCTIS_", extra="ignore", frozen=True)

    data_dir: Path = Field(
        default=Path("var"),
        description="Folder for the SQLite index, stored objects and the receive spool.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the index database; default: SQLite in data_dir.",
    )
    storage_backend: Literal["filesystem", "s3"] = "filesystem"
    s3_endpoint: str = "127.0.0.1:9000"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "noctis"
    s3_secure: bool = False
    s3_region: str | None = None

    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=1, le=65535)
    public_base_url: str | None = Field(
        default=None,
        description="Base URL put in RetrieveURL and BulkDataURI; default: from the request.",
    )
    trust_forwarded_headers: bool = Field(
        default=True,
        description="Build response links from Forwarded and X-Forwarded-* proxy headers.",
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
            "TCP port on http_host where the standalone DIMSE gateway serves Prometheus "
            "metrics at /metrics; 0 turns it off. Processes with an HTTP app serve "
            "/metrics on http_port instead."
        ),
    )
    log_level: str = "INFO"
    log_phi: bool = Field(
        default=False, description="Log patient names and IDs; off so logs carry no PHI."
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
