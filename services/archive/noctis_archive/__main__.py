"""Run the whole archive in one process: ``python -m noctis_archive`` (``make run``).

DICOMweb (QIDO-RS, WADO-RS, STOW-RS) and the change feed are served on
``NOCTIS_HTTP_PORT`` under ``/dicom-web``, WADO-URI at ``/wado``, and the DIMSE
gateway on ``NOCTIS_DIMSE_PORT``, over one index, one object store, one event relay
and one study-complete sweeper. On SIGTERM both stop accepting
work and let requests and associations in progress finish (see
:func:`noctis_common.service.serve_http` and :meth:`StorageSCP.stop`).
With NOCTIS_AUTH_MODE=internal (the default) the token service is served at ``/auth``.
"""

from __future__ import annotations

import logging
import sys
import threading

from noctis_auth.app import mount_token_service
from noctis_common.logs import configure_logging
from noctis_common.service import open_context, serve_http
from noctis_common.settings import Settings
from noctis_common.tracing import configure_tracing
from noctis_common.web import create_app
from noctis_events.routes import router as changefeed_router
from noctis_ingest_scp.scp import StorageSCP
from noctis_qido.routes import router as qido_router
from noctis_stow.delete import router as delete_router
from noctis_stow.routes import router as stow_router
from noctis_wado.routes import router as wado_router
from noctis_wado.wado_uri import router as wado_uri_router

logger = logging.getLogger("noctis_archive")


def main() -> None:
    settings = Settings()
    configure_logging(settings)
    configure_tracing()
    context = open_context(settings, "Noctis")
    context.start()
    scp = StorageSCP(context)
    try:
        scp.start()
    except OSError as error:
        logger.error(
            "cannot listen for DIMSE on %s (port %d, TLS port %d): %s; set "
            "NOCTIS_DIMSE_PORT and NOCTIS_DIMSE_TLS_PORT to free ports",
            settings.dimse_host,
            settings.dimse_port,
            settings.dimse_tls_port,
            error,
        )
        context.close()
        sys.exit(1)
    except ValueError as error:  # invalid peer list, TLS files or forwarding rules
        logger.error("cannot start the DIMSE gateway: %s", error)
        context.close()
        sys.exit(1)
    app = create_app(
        "Noctis",
        [qido_router, wado_router, stow_router, delete_router, changefeed_router],
        settings,
        context,
    )
    app.include_router(wado_uri_router)  # WADO-URI lives at /wado, outside /dicom-web
    if settings.auth_mode == "internal":
        # The token service at /auth; the other routes verify its tokens in-process.
        mount_token_service(app, context)
    logger.info(
        "Noctis archive: DICOMweb at http://%s:%d/dicom-web, DIMSE AE title %s on port %d, "
        "data in %s",
        settings.http_host,
        settings.http_port,
        settings.ae_title,
        settings.dimse_port,
        settings.data_dir.resolve(),
    )

    # On SIGTERM the DIMSE gateway drains its associations while uvicorn drains its
    # requests, so the shutdown takes the longer of the two grace periods, not the sum.
    scp_stopper = threading.Thread(
        target=scp.stop, args=(settings.dimse_shutdown_timeout_s,), name="scp-shutdown"
    )

    def begin_shutdown() -> None:
        app.state.readiness.shutting_down = True
        scp_stopper.start()

    try:
        serve_http(app, settings, begin_shutdown)
    finally:
        if scp_stopper.is_alive():
            scp_stopper.join()
        scp.stop()  # does nothing when the thread stopped it already
        context.close()


if __name__ == "__main__":
    main()
