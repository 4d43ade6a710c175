"""Apply index migrations: ``python -m noctis_common.db upgrade``."""

from __future__ import annotations

import argparse
import logging

from noctis_common.db import Database
from noctis_common.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m noctis_common.db")
    parser.add_argument("command", choices=["upgrade"], help="upgrade: apply every migration")
    parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    database = Database(Settings().resolved_database_url)
    database.upgrade()
    database.dispose()


if __name__ == "__main__":
    main()
