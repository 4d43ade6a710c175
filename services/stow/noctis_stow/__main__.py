"""Run the STOW-RS service, with DELETE, alone: ``python -m noctis_stow``.

Readiness requires the index and the object store. The broker is reported but not
required, because events wait in the outbox while it is down.
"""

from __future__ import annotations

from noctis_common.health import STORE_SERVICE_OPTIONAL, STORE_SERVICE_REQUIRED
from noctis_common.service import run_http_service
from noctis_stow.delete import router as delete_router
from noctis_stow.routes import router


def main() -> None:
    run_http_service(
        "Noctis STOW-RS",
        [router, delete_router],
        required_dependencies=STORE_SERVICE_REQUIRED,
        optional_dependencies=STORE_SERVICE_OPTIONAL,
    )


if __name__ == "__main__":
    main()
