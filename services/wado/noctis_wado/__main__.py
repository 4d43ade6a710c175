"""Run the WADO-RS service alone, with WADO-URI at ``/wado``: ``python -m noctis_wado``.

Retrievals read the index and the object store, so readiness checks both.
"""

from __future__ import annotations

from noctis_common.health import Dependency
from noctis_common.service import run_http_service
from noctis_wado.routes import router
from noctis_wado.wado_uri import router as wado_uri_router


def main() -> None:
    run_http_service(
        "Noctis WADO-RS",
        [router],
        root_routers=[wado_uri_router],
        required_dependencies=[Dependency.DATABASE, Dependency.OBJECT_STORE],
        optional_dependencies=[],
    )


if __name__ == "__main__":
    main()
