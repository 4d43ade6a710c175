"""Entry point helpers for running one HTTP service alone."""

from __future__ import annotations

from collections.abc import Sequence

import uvicorn
from fastapi import APIRouter

from noctis_common.logs import configure_logging
from noctis_common.settings import Settings
from noctis_common.web import create_app


def run_http_service(
    title: str, routers: Sequence[APIRouter], root_routers: Sequence[APIRouter] = ()
) -> None:
    """Serve ``routers`` on ``NOCTIS_HTTP_HOST:NOCTIS_HTTP_PORT`` until interrupted.

    ``routers`` are served under ``/dicom-web`` and ``root_routers`` (WADO-URI) at the root.
    """
    settings = Settings()
    configure_logging(settings)
    app = create_app(title, routers, settings)
    for router in root_routers:
        app.include_router(router)
    uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
