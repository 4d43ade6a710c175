"""Logging set-up shared by the services."""

from __future__ import annotations

import logging

from noctis_common.settings import Settings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT)
    # pynetdicom logs dataset contents at DEBUG; keep it at INFO unless asked.
    if settings.log_level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def phi(settings: Settings, value: object) -> str:
    """Return ``value`` for a log line when PHI logging is on, else a placeholder."""
    return str(value) if settings.log_phi else "<redacted>"
