"""Run the STOW-RS service alone: ``python -m noctis_stow``."""

from __future__ import annotations

from noctis_common.service import run_http_service
from noctis_stow.delete import router as delete_router
from noctis_stow.routes import router


def main() -> None:
    run_http_service("Noctis STOW-RS", [router, delete_router])


if __name__ == "__main__":
    main()
