"""Back up, restore and check a Noctis archive: ``python -m noctis_common.backup``.

The index and the object store are the ones the ``NOCTIS_*`` settings name, as for
the services. Subcommands:

- ``create DIR``: back up into the new folder DIR; services may keep running.
- ``restore DIR``: restore the backup in DIR; stop every service first.
- ``check``: compare index and object store; ``--repair`` moves objects without
  rows aside and deletes nothing.

Exit status: 0 when the archive (or the restored archive) is consistent, 1 when the
check found problems that remain. 2 means the command could not run: invalid arguments
or settings, a failed dump or restore, an unreachable database or object store.
Reports go to stdout and log lines to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from noctis_common.backup import (
    BackupError,
    ConsistencyReport,
    check_consistency,
    create_backup,
    move_orphans_aside,
    restore_backup,
)
from noctis_common.backup.check import DEFAULT_GRACE_S
from noctis_common.db import Database
from noctis_common.logs import configure_logging
from noctis_common.settings import Settings
from noctis_common.storage import StorageError, create_object_store

logger = logging.getLogger("noctis_common.backup")

EXIT_CONSISTENT = 0
EXIT_INCONSISTENT = 1
EXIT_FAILED = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m noctis_common.backup",
        description="Back up, restore and check the index and object store of Noctis.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    create = commands.add_parser("create", help="back up into a new folder")
    create.add_argument("folder", type=Path, help="new or empty folder for the backup")
    create.add_argument(
        "--objects",
        choices=["copy", "manifest"],
        default="copy",
        help="copy the objects (default), or only list them, for S3 buckets protected by "
        "versioning or replication",
    )
    create.add_argument(
        "--previous",
        type=Path,
        help="an earlier backup on the same filesystem whose objects are hard-linked "
        "instead of copied again",
    )

    restore = commands.add_parser("restore", help="restore a backup; stop the services first")
    restore.add_argument("folder", type=Path, help="the backup folder")
    restore.add_argument(
        "--replace",
        action="store_true",
        help="overwrite an index that is not empty (drops and recreates its tables)",
    )
    restore.add_argument("--json", action="store_true", help="print the check report as JSON")

    check = commands.add_parser("check", help="compare the index with the object store")
    check.add_argument(
        "--repair",
        action="store_true",
        help="move objects without index rows aside; nothing is deleted",
    )
    check.add_argument(
        "--quarantine",
        help="where --repair moves objects: a folder for the filesystem store (default "
        "NOCTIS_DATA_DIR/quarantine/<time>), a key prefix under quarantine/ for S3 "
        "(default quarantine/<time>/)",
    )
    check.add_argument(
        "--grace-s",
        type=float,
        default=DEFAULT_GRACE_S,
        help="skip objects without rows written less than this many seconds ago, because "
        "a store in progress writes the object before its row (default %(default)g)",
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    return parser


def default_quarantine(settings: Settings) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if settings.storage_backend == "s3":
        return f"quarantine/{stamp}/"
    return str(settings.data_dir / "quarantine" / stamp)


def print_report(report: ConsistencyReport, as_json: bool) -> int:
    print(report.to_json() if as_json else report.to_text())
    return EXIT_CONSISTENT if report.consistent else EXIT_INCONSISTENT


def run_check(settings: Settings, arguments: argparse.Namespace) -> int:
    database = Database(settings.resolved_database_url)
    try:
        store = create_object_store(settings)
        report = check_consistency(database, store, grace_s=arguments.grace_s)
        if arguments.repair and report.objects_without_rows:
            move_orphans_aside(report, store, arguments.quarantine or default_quarantine(settings))
    finally:
        database.dispose()
    return print_report(report, arguments.json)


def run(arguments: argparse.Namespace, settings: Settings) -> int:
    if arguments.command == "create":
        manifest = create_backup(
            settings, arguments.folder, objects_mode=arguments.objects, previous=arguments.previous
        )
        print(
            f"backup {arguments.folder}: {manifest.index_kind} index, {manifest.object_count} "
            f"objects ({manifest.object_bytes} bytes, {manifest.objects_mode}), "
            f"{len(manifest.missing_objects)} missing"
        )
        return EXIT_INCONSISTENT if manifest.missing_objects else EXIT_CONSISTENT
    if arguments.command == "restore":
        report = restore_backup(settings, arguments.folder, replace=arguments.replace)
        return print_report(report, arguments.json)
    return run_check(settings, arguments)


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    settings = Settings()
    configure_logging(settings, stream=sys.stderr)
    try:
        return run(arguments, settings)
    except (BackupError, StorageError, SQLAlchemyError, OSError) as error:
        logger.error("%s failed: %s", arguments.command, error)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
