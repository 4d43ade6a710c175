"""Run the QIDO-RS service alone: ``python -m noctis_qido``.

Searches read only the index, so readiness checks the database alone.
"""

from __future__ import annotations

from noctis_common.health import Dependency
from noctis_common.service import run_http_service
from noctis_qido.routes import router


def main() -> None:
    run_http_service(
        "Noctis QIDO-RS",
        [router],
        required_dependencies=[Dependency.DATABASE],
        optional_dependencies=[],
    )


if __name__ == "__main__":
    main()
