"""Run the token service alone, or manage it from the command line.

``python -m noctis_auth`` serves the ``/auth`` routes on NOCTIS_HTTP_HOST:NOCTIS_HTTP_PORT.
``python -m noctis_auth create-admin --username NAME`` creates the first administrator,
reading the password from ``--password-file`` or standard input, never from the
command line, where other users could read it in the process list.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from pathlib import Path

from fastapi import HTTPException
from pydantic import ValidationError

from noctis_auth import admin
from noctis_auth.app import mount_token_service
from noctis_auth.keys import SigningKeyError, SigningKeyStore
from noctis_auth.schemas import ClientCreate, UserCreate
from noctis_auth.state import AuthService
from noctis_common.db import Database
from noctis_common.health import Dependency
from noctis_common.logs import configure_logging
from noctis_common.roles import Role
from noctis_common.service import open_context, serve_http
from noctis_common.settings import Settings
from noctis_common.tracing import configure_tracing
from noctis_common.web import create_app

logger = logging.getLogger("noctis_auth")

SERVICE_TITLE = "Noctis auth"


class CommandError(Exception):
    """A command that failed for a reason the message explains."""


def read_password(password_file: Path | None) -> str:
    """Read a password from a file, a terminal prompt, or standard input.

    One final line break is dropped; other white space is part of the password.
    """
    if password_file is not None:
        try:
            text = password_file.read_text()
        except OSError as error:
            raise CommandError(f"cannot read {password_file}: {error.strerror}") from error
        password = text.removesuffix("\n").removesuffix("\r")
    elif sys.stdin.isatty():
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat the password: ") != password:
            raise CommandError("the two passwords differ; nothing was created")
    else:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    if not password:
        raise CommandError("the password is empty; give one on standard input or in a file")
    return password


def open_service(settings: Settings) -> AuthService:
    database = Database(settings.resolved_database_url)
    database.upgrade()
    return AuthService(database, settings, SigningKeyStore(database, settings))


def create_admin(settings: Settings, arguments: argparse.Namespace) -> None:
    password = read_password(arguments.password_file)
    service = open_service(settings)
    try:
        body = UserCreate(
            username=arguments.username,
            password=password,
            roles=[Role.ADMINISTRATOR.value],
            name=arguments.name or arguments.username,
        )
        admin.create_user(service, body, actor="the create-admin command")
    finally:
        service.database.dispose()
    print(f"created administrator {arguments.username}")


def create_client(settings: Settings, arguments: argparse.Namespace) -> None:
    service = open_service(settings)
    try:
        body = ClientCreate(
            client_id=arguments.client_id,
            name=arguments.name or arguments.client_id,
            public=arguments.public,
            roles=arguments.role or [],
            grant_types=arguments.grant_type,
            redirect_uris=arguments.redirect_uri or [],
            post_logout_redirect_uris=arguments.post_logout_redirect_uri or [],
        )
        created = admin.create_client(service, body, actor="the create-client command")
    finally:
        service.database.dispose()
    print(json.dumps(created.model_dump(mode="json"), indent=2))


def rotate_key(settings: Settings, arguments: argparse.Namespace) -> None:
    service = open_service(settings)
    try:
        kid = service.keys.rotate()
    finally:
        service.database.dispose()
    print(f"created signing key {kid}")


def serve(settings: Settings, arguments: argparse.Namespace) -> None:
    """Serve the token service alone, shutting down gracefully on SIGTERM."""
    configure_tracing()
    context = open_context(settings, SERVICE_TITLE)
    app = create_app(
        SERVICE_TITLE,
        [],
        settings,
        context,
        required_dependencies=(Dependency.DATABASE,),
        optional_dependencies=(),
    )
    mount_token_service(app, context)

    def begin_shutdown() -> None:
        app.state.readiness.shutting_down = True

    context.start()
    logger.info("%s at http://%s:%d/auth", SERVICE_TITLE, settings.http_host, settings.http_port)
    try:
        serve_http(app, settings, begin_shutdown)
    finally:
        context.close()
        logger.info("%s stopped", SERVICE_TITLE)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    # allow_abbrev=False: "--password" must not be taken for "--password-file".
    parser = argparse.ArgumentParser(
        prog="python -m noctis_auth",
        allow_abbrev=False,
        description="Run the Noctis token service, or manage its users, clients and keys.",
    )
    commands = parser.add_subparsers(dest="command")
    # Each subcommand parser needs allow_abbrev too; it is not inherited.
    commands.add_parser("serve", help="serve /auth on NOCTIS_HTTP_HOST:NOCTIS_HTTP_PORT (default)")

    admin_parser = commands.add_parser(
        "create-admin",
        allow_abbrev=False,
        help="create an administrator; the password comes from stdin or a file",
    )
    admin_parser.add_argument("--username", required=True)
    admin_parser.add_argument("--name", help="display name; default: the username")
    admin_parser.add_argument(
        "--password-file",
        type=Path,
        help="file containing the password; default: read it from standard input",
    )

    client_parser = commands.add_parser(
        "create-client",
        allow_abbrev=False,
        help="register a client; prints its secret once, as JSON",
    )
    client_parser.add_argument("--client-id", required=True)
    client_parser.add_argument("--name", help="display name; default: the client id")
    client_parser.add_argument(
        "--public", action="store_true", help="a client without a secret, such as a viewer"
    )
    client_parser.add_argument(
        "--grant-type",
        action="append",
        required=True,
        help="authorization_code, refresh_token, password or client_credentials; repeatable",
    )
    client_parser.add_argument("--role", action="append", help="role of its tokens; repeatable")
    client_parser.add_argument(
        "--redirect-uri", action="append", help="where the login page sends the user; repeatable"
    )
    client_parser.add_argument(
        "--post-logout-redirect-uri",
        action="append",
        help="where logout sends the user; repeatable",
    )

    commands.add_parser("rotate-key", help="create a new signing key; the old one stays published")
    return parser.parse_args(argv)


COMMANDS = {
    None: serve,
    "serve": serve,
    "create-admin": create_admin,
    "create-client": create_client,
    "rotate-key": rotate_key,
}


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    settings = Settings()
    configure_logging(settings)
    try:
        COMMANDS[arguments.command](settings, arguments)
    except HTTPException as error:
        sys.exit(f"{arguments.command} failed: {error.detail}")
    except (CommandError, SigningKeyError) as error:
        sys.exit(f"{arguments.command} failed: {error}")
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in item['loc'])}: {item['msg']}"
            for item in error.errors(include_input=False)
        )
        sys.exit(f"{arguments.command} failed: {problems}")


if __name__ == "__main__":
    main()
