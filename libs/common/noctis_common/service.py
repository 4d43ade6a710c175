"""Entry point helpers for running one HTTP service alone."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn
from fastapi import APIRouter

from noctis_common.logs import configure_logging
from noctis_common.settings import Settings
from noctis_common.web import create_app


def run_http_service(title: str, routers: Sequence[APIRouter]) -> None:
    """Serve ``routers`` on ``NOCTIS_HTTP_HOST:NOCTIS_HTTP_PORT`` until interrupted."""
    settings = Settings()
    configure_logging(settings)
    app = create_app(title, routers, settings)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
