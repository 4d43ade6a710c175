"""Run the events service alone: ``python -m noctis_events``.

The process runs the outbox relay, the study-complete sweeper (both started with the
archive context) and serves the REST change feed at ``/dicom-web/changefeed``. Several
replicas may run, because the relays take turns and the sweepers claim disjoint
studies. The change feed reads only the index, so readiness requires the database alone
and reports the broker without requiring it.
"""

from __future__ import annotations

from noctis_common.health import Dependency
from noctis_common.service import run_http_service
from noctis_events.routes import router


def main() -> None:
    run_http_service(
        "Noctis events",
        [router],
        required_dependencies=[Dependency.DATABASE],
        optional_dependencies=[Dependency.BROKER],
    )


if __name__ == "__main__":
    main()
