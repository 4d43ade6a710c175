"""Manage the index schema: ``python -m noctis_common.db upgrade|check|current``.

``upgrade`` is the migration job of a scale-out deployment, which starts the services
with ``NOCTIS_DB_MIGRATE_ON_START=false``. ``check`` exits with status 1 while
migrations are pending, which suits an init container that waits for the job.
"""

from __future__ import annotations

import argparse
import logging
import sys

from noctis_common.db import Database, IndexSchemaOutdatedError
from noctis_common.logs import configure_logging
from noctis_common.settings import Settings

logger = logging.getLogger("noctis_common.db")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m noctis_common.db")
    parser.add_argument(
        "command",
        choices=["upgrade", "check", "current"],
        help="upgrade: apply every pending migration; check: exit 1 when migrations are "
        "pending; current: print the index's schema revision",
    )
    arguments = parser.parse_args()
    settings = Settings()
    configure_logging(settings)
    database = Database.from_settings(settings)
    try:
        if arguments.command == "upgrade":
            database.upgrade()
            logger.info("index schema is at revision %s", database.schema_revision())
        elif arguments.command == "check":
            database.require_current_schema()
            logger.info("index schema is current (revision %s)", database.schema_revision())
        else:
            print(database.schema_revision() or "none")
    except IndexSchemaOutdatedError as error:
        logger.error("%s", error)
        sys.exit(1)
    finally:
        database.dispose()


if __name__ == "__main__":
    main()
