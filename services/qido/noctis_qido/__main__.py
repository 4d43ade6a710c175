"""Run the QIDO-RS service alone: ``python -m noctis_qido``."""

from __future__ import annotations

from noctis_common.service import run_http_service
from noctis_qido.routes import router


def main() -> None:
    run_http_service("Noctis QIDO-RS", [router])


if __name__ == "__main__":
    main()
