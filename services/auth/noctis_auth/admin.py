"""The admin API's work: create, change and disable users and clients, reset passwords.

Users and clients are never deleted, so that the audit trail keeps naming who acted;
they are disabled. Disabling an account, resetting its password or removing a client
revokes their refresh tokens at once. Access tokens already issued stay valid until
they expire (NOCTIS_AUTH_ACCESS_TOKEN_LIFETIME_S), because services verify them without
asking the token service.

The last enabled administrator cannot be disabled or lose the administrator role, so
that someone can always manage the accounts.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from noctis_auth.clients import GRANT_TYPES, PUBLIC_CLIENT_GRANT_TYPES, find_client
from noctis_auth.opaque import new_opaque_value, sha256_hex
from noctis_auth.passwords import PasswordPolicyError, check_password_policy, hash_password
from noctis_auth.refresh_tokens import revoke_client_tokens, revoke_user_tokens
from noctis_auth.schemas import (
    ClientCreate,
    ClientCreated,
    ClientPublic,
    ClientSecret,
    ClientUpdate,
    PasswordReset,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from noctis_auth.state import AuthService
from noctis_auth.users import find_user
from noctis_common.db.models import AuthClient, AuthUser
from noctis_common.roles import CLIENT_ROLES, USER_ROLES, Role, parse_roles

logger = logging.getLogger(__name__)


def _bad_request(message: str) -> HTTPException:
    return HTTPException(status.HTTP_400_BAD_REQUEST, detail=message)


def _conflict(message: str) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, detail=message)


def _not_found(kind: str, name: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no {kind} {name!r}")


def _checked_roles(names: list[str], allowed: frozenset[Role], holder: str) -> list[Role]:
    try:
        roles = parse_roles(names)
    except ValueError as error:
        raise _bad_request(str(error)) from None
    misplaced = [role.value for role in roles if role not in allowed]
    if misplaced:
        allowed_names = ", ".join(role.value for role in Role if role in allowed)
        raise _bad_request(
            f"roles {', '.join(misplaced)} are not for {holder}; use {allowed_names}"
        )
    return roles


def _check_password(password: str, username: str, service: AuthService) -> None:
    try:
        check_password_policy(
            password, username=username, min_length=service.settings.auth_password_min_length
        )
    except PasswordPolicyError as error:
        raise _bad_request(str(error)) from None


def user_public(user: AuthUser) -> UserPublic:
    return UserPublic(
        username=user.username,
        name=user.name,
        roles=user.roles.split(),
        referring_physician_name=user.referring_physician_name,
        disabled=user.disabled,
        locked_until=user.locked_until,
        failed_logins=user.failed_logins,
        last_login_at=user.last_login_at,
        password_changed_at=user.password_changed_at,
        created_at=user.created_at,
        updated_at=user.updated_at,
    )


def _check_referring_physician(roles: list[str], referring_physician_name: str) -> None:
    if Role.REFERRING_PHYSICIAN in roles and not referring_physician_name.strip():
        raise _bad_request(
            "a referring physician needs referring_physician_name, the DICOM person name "
            "(such as 'Smith^John') that their studies carry as Referring Physician's Name"
        )


def create_user(service: AuthService, body: UserCreate, *, actor: str) -> UserPublic:
    """Create a user account; 409 when the username is taken by a user or a client."""
    roles = _checked_roles(body.roles, USER_ROLES, "people")
    _check_referring_physician([role.value for role in roles], body.referring_physician_name)
    _check_password(body.password, body.username, service)
    password_hash = hash_password(body.password)
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        if find_user(session, body.username) is not None:
            raise _conflict(f"user {body.username!r} exists already")
        if find_client(session, body.username) is not None:
            raise _conflict(f"{body.username!r} is a client id; choose another username")
        user = AuthUser(
            username=body.username,
            name=body.name,
            referring_physician_name=body.referring_physician_name,
            password_hash=password_hash,
            roles=" ".join(role.value for role in roles),
            disabled=False,
            failed_logins=0,
            password_changed_at=now,
            created_at=now,
            updated_at=now,
        )
        session.add(user)
        session.flush()
        public = user_public(user)
    logger.info("%s created user %s with roles %s", actor, body.username, user.roles or "none")
    return public


def list_users(service: AuthService) -> list[UserPublic]:
    with service.database.read_session() as session:
        users = session.scalars(select(AuthUser).order_by(AuthUser.username))
        return [user_public(user) for user in users]


def get_user(service: AuthService, username: str) -> UserPublic:
    with service.database.read_session() as session:
        user = find_user(session, username)
        if user is None:
            raise _not_found("user", username)
        return user_public(user)


def _is_enabled_administrator(user: AuthUser) -> bool:
    return not user.disabled and Role.ADMINISTRATOR in user.roles.split()


def _check_other_administrator_remains(session: Session, user: AuthUser) -> None:
    others = session.scalars(select(AuthUser).where(AuthUser.id != user.id))
    if not any(_is_enabled_administrator(other) for other in others):
        raise _conflict(
            f"{user.username!r} is the last enabled administrator; make another user an "
            "administrator first"
        )


def update_user(service: AuthService, username: str, body: UserUpdate, *, actor: str) -> UserPublic:
    """Change a user; disabling revokes the user's refresh tokens."""
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        user = find_user(session, username)
        if user is None:
            raise _not_found("user", username)
        was_administrator = _is_enabled_administrator(user)
        if body.roles is not None:
            roles = _checked_roles(body.roles, USER_ROLES, "people")
            user.roles = " ".join(role.value for role in roles)
        if body.name is not None:
            user.name = body.name
        if body.referring_physician_name is not None:
            user.referring_physician_name = body.referring_physician_name
        _check_referring_physician(user.roles.split(), user.referring_physician_name)
        if body.disabled is not None:
            user.disabled = body.disabled
        if body.unlock:
            user.failed_logins = 0
            user.locked_until = None
        if was_administrator and not _is_enabled_administrator(user):
            _check_other_administrator_remains(session, user)
        if user.disabled:
            revoke_user_tokens(session, user.id, now)
        user.updated_at = now
        public = user_public(user)
    logger.info(
        "%s changed user %s: %s",
        actor,
        username,
        ", ".join(sorted(body.model_dump(exclude_unset=True))) or "nothing",
    )
    return public


def reset_password(
    service: AuthService, username: str, body: PasswordReset, *, actor: str
) -> UserPublic:
    """Set a new password, end any lockout and revoke the user's refresh tokens."""
    _check_password(body.password, username, service)
    password_hash = hash_password(body.password)
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        user = find_user(session, username)
        if user is None:
            raise _not_found("user", username)
        user.password_hash = password_hash
        user.password_changed_at = now
        user.failed_logins = 0
        user.locked_until = None
        user.updated_at = now
        revoke_user_tokens(session, user.id, now)
        public = user_public(user)
    logger.info("%s reset the password of user %s", actor, username)
    return public


def client_public(client: AuthClient) -> ClientPublic:
    return ClientPublic(
        client_id=client.client_id,
        name=client.name,
        public=client.secret_sha256 is None,
        roles=client.roles.split(),
        grant_types=client.grant_types.split(),
        redirect_uris=client.redirect_uris.split(),
        post_logout_redirect_uris=client.post_logout_redirect_uris.split(),
        disabled=client.disabled,
        created_at=client.created_at,
        updated_at=client.updated_at,
    )


def _check_redirect_uris(uris: list[str], field: str) -> str:
    for uri in uris:
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
            raise _bad_request(
                f"{field} {uri!r} is invalid: give an absolute http(s) URI without a fragment"
            )
        if any(character.isspace() for character in uri):
            raise _bad_request(f"{field} {uri!r} contains white space")
    return " ".join(uris)


def _check_client(
    client_id: str, public: bool, grant_types: list[str], roles: list[str], redirect_uris: str
) -> None:
    unknown = [grant for grant in grant_types if grant not in GRANT_TYPES]
    if unknown or not grant_types:
        raise _bad_request(
            f"invalid grant_types {grant_types}; give one or more of {', '.join(GRANT_TYPES)}"
        )
    if public:
        not_public = [grant for grant in grant_types if grant not in PUBLIC_CLIENT_GRANT_TYPES]
        if not_public:
            raise _bad_request(
                f"client {client_id!r} is public, and public clients may use only the "
                f"authorization_code and refresh_token grants, not {', '.join(not_public)}"
            )
    if "authorization_code" in grant_types and not redirect_uris:
        raise _bad_request(
            f"client {client_id!r} uses the authorization code grant and needs redirect_uris"
        )
    if "client_credentials" in grant_types and not roles:
        raise _bad_request(
            f"client {client_id!r} uses the client credentials grant and needs roles, the "
            "roles of its tokens"
        )


def create_client(service: AuthService, body: ClientCreate, *, actor: str) -> ClientCreated:
    """Create a client; a confidential one gets a secret that is shown only now."""
    if body.client_id == service.settings.auth_audience:
        raise _bad_request(
            f"client_id {body.client_id!r} equals NOCTIS_AUTH_AUDIENCE, so its ID tokens "
            "would pass as access tokens; choose another client_id"
        )
    roles = _checked_roles(body.roles, CLIENT_ROLES, "service clients")
    redirect_uris = _check_redirect_uris(body.redirect_uris, "redirect_uri")
    logout_uris = _check_redirect_uris(body.post_logout_redirect_uris, "post_logout_redirect_uri")
    _check_client(body.client_id, body.public, body.grant_types, body.roles, redirect_uris)
    secret = None if body.public else new_opaque_value()
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        if find_client(session, body.client_id) is not None:
            raise _conflict(f"client {body.client_id!r} exists already")
        if find_user(session, body.client_id) is not None:
            raise _conflict(f"{body.client_id!r} is a username; choose another client_id")
        client = AuthClient(
            client_id=body.client_id,
            name=body.name,
            secret_sha256=sha256_hex(secret) if secret is not None else None,
            roles=" ".join(role.value for role in roles),
            grant_types=" ".join(dict.fromkeys(body.grant_types)),
            redirect_uris=redirect_uris,
            post_logout_redirect_uris=logout_uris,
            disabled=False,
            created_at=now,
            updated_at=now,
        )
        session.add(client)
        session.flush()
        created = ClientCreated(**client_public(client).model_dump(), client_secret=secret)
    logger.info(
        "%s created %s client %s with grants %s",
        actor,
        "public" if body.public else "confidential",
        body.client_id,
        client.grant_types,
    )
    return created


def list_clients(service: AuthService) -> list[ClientPublic]:
    with service.database.read_session() as session:
        clients = session.scalars(select(AuthClient).order_by(AuthClient.client_id))
        return [client_public(client) for client in clients]


def get_client(service: AuthService, client_id: str) -> ClientPublic:
    with service.database.read_session() as session:
        client = find_client(session, client_id)
        if client is None:
            raise _not_found("client", client_id)
        return client_public(client)


def update_client(
    service: AuthService, client_id: str, body: ClientUpdate, *, actor: str
) -> ClientPublic:
    """Change a client; disabling revokes the refresh tokens issued through it."""
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        client = find_client(session, client_id)
        if client is None:
            raise _not_found("client", client_id)
        if body.name is not None:
            client.name = body.name
        if body.roles is not None:
            roles = _checked_roles(body.roles, CLIENT_ROLES, "service clients")
            client.roles = " ".join(role.value for role in roles)
        if body.grant_types is not None:
            client.grant_types = " ".join(dict.fromkeys(body.grant_types))
        if body.redirect_uris is not None:
            client.redirect_uris = _check_redirect_uris(body.redirect_uris, "redirect_uri")
        if body.post_logout_redirect_uris is not None:
            client.post_logout_redirect_uris = _check_redirect_uris(
                body.post_logout_redirect_uris, "post_logout_redirect_uri"
            )
        _check_client(
            client.client_id,
            client.secret_sha256 is None,
            client.grant_types.split(),
            client.roles.split(),
            client.redirect_uris,
        )
        if body.disabled is not None:
            client.disabled = body.disabled
        if client.disabled:
            revoke_client_tokens(session, client.client_id, now)
        client.updated_at = now
        public = client_public(client)
    logger.info(
        "%s changed client %s: %s",
        actor,
        client_id,
        ", ".join(sorted(body.model_dump(exclude_unset=True))) or "nothing",
    )
    return public


def new_client_secret(service: AuthService, client_id: str, *, actor: str) -> ClientSecret:
    """Replace a confidential client's secret; the old one stops working at once."""
    secret = new_opaque_value()
    now = service.clock()
    with service.database.write_session() as session, session.begin():
        client = find_client(session, client_id)
        if client is None:
            raise _not_found("client", client_id)
        if client.secret_sha256 is None:
            raise _bad_request(f"client {client_id!r} is public and has no secret")
        client.secret_sha256 = sha256_hex(secret)
        client.updated_at = now
    logger.info("%s replaced the secret of client %s", actor, client_id)
    return ClientSecret(client_id=client_id, client_secret=secret)
