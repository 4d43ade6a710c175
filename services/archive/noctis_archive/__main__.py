"""Run the whole archive in one process: ``python -m noctis_archive`` (``make run``).

DICOMweb (QIDO-RS, WADO-RS, STOW-RS) is served on ``NOCTIS_HTTP_PORT`` under
``/dicom-web``, WADO-URI at ``/wado``, and the DIMSE gateway on ``NOCTIS_DIMSE_PORT``,
over one index, one object store and one event relay.
"""

from __future__ import annotations

import logging
import sys

import uvicorn

from noctis_common.context import ArchiveContext
from noctis_common.logs import configure_logging
from noctis_common.settings import Settings
from noctis_common.web import create_app
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
    context = ArchiveContext.create(settings)
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
        "Noctis", [qido_router, wado_router, stow_router, delete_router], settings, context
    )
    app.include_router(wado_uri_router)  # WADO-URI lives at /wado, outside /dicom-web
    logger.info(
        "Noctis archive: DICOMweb at http://%s:%d/dicom-web, DIMSE AE title %s on port %d, "
        "data in %s",
        settings.http_host,
        settings.http_port,
        settings.ae_title,
        settings.dimse_port,
        settings.data_dir.resolve(),
    )
    try:
        uvicorn.run(app, host=settings.http_host, port=settings.http_port, log_config=None)
    finally:
        scp.stop()
        context.close()


if __name__ == "__main__":
    main()
