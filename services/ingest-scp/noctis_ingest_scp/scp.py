"""Verification and Storage SCP (placeholder until the service is implemented)."""

from __future__ import annotations

from noctis_common.context import ArchiveContext


class StorageSCP:
    """The DIMSE gateway: C-ECHO and C-STORE on ``NOCTIS_DIMSE_PORT``."""

    def __init__(self, context: ArchiveContext) -> None:
        self.context = context

    def start(self) -> None:
        """Start listening in background threads and return."""

    def stop(self) -> None:
        """Stop listening and release every association."""
