"""Run the WADO-RS service alone: ``python -m noctis_wado``."""

from __future__ import annotations

from noctis_common.service import run_http_service
from noctis_wado.routes import router


def main() -> None:
    run_http_service("Noctis WADO-RS", [router])


if __name__ == "__main__":
    main()
