"""Request and response bodies of the admin API and the preferences API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from noctis_auth.clock import as_utc

# A timestamp from the index, in UTC with its offset, also where SQLite dropped it.
Timestamp = Annotated[datetime, AfterValidator(as_utc)]

# Letters, digits and . _ @ -, starting with a letter or digit.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"


class StrictBody(BaseModel):
    """A request body that rejects unknown fields, so a misspelt field is not ignored."""

    model_config = ConfigDict(extra="forbid")


class UserCreate(StrictBody):
    """A new user account."""

    username: str = Field(pattern=NAME_PATTERN)
    password: str = Field(min_length=1, max_length=1024)
    roles: list[str]
    name: str = Field(default="", max_length=255)
    referring_physician_name: str = Field(default="", max_length=324)


class UserUpdate(StrictBody):
    """Changes to a user account; fields left out stay as they are."""

    roles: list[str] | None = None
    name: str | None = Field(default=None, max_length=255)
    referring_physician_name: str | None = Field(default=None, max_length=324)
    disabled: bool | None = None
    unlock: bool = Field(default=False, description="End a lockout after failed logins.")


class PasswordReset(StrictBody):
    """A new password that an administrator sets for a user."""

    password: str = Field(min_length=1, max_length=1024)


class UserPublic(BaseModel):
    """A user account as the admin API shows it, without its password hash."""

    username: str
    name: str
    roles: list[str]
    referring_physician_name: str
    disabled: bool
    locked_until: Timestamp | None
    failed_logins: int
    last_login_at: Timestamp | None
    password_changed_at: Timestamp
    created_at: Timestamp
    updated_at: Timestamp


class ClientCreate(StrictBody):
    """A new OAuth 2.0 client; confidential clients get a generated secret."""

    client_id: str = Field(pattern=NAME_PATTERN)
    name: str = Field(default="", max_length=255)
    public: bool = Field(
        default=False,
        description="A client without a secret, such as a browser viewer; it must use PKCE.",
    )
    roles: list[str] = Field(default_factory=list)
    grant_types: list[str]
    redirect_uris: list[str] = Field(default_factory=list)
    post_logout_redirect_uris: list[str] = Field(default_factory=list)


class ClientUpdate(StrictBody):
    """Changes to a client; fields left out stay as they are."""

    name: str | None = Field(default=None, max_length=255)
    roles: list[str] | None = None
    grant_types: list[str] | None = None
    redirect_uris: list[str] | None = None
    post_logout_redirect_uris: list[str] | None = None
    disabled: bool | None = None


class ClientPublic(BaseModel):
    """A client as the admin API shows it, without its secret."""

    client_id: str
    name: str
    public: bool
    roles: list[str]
    grant_types: list[str]
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    disabled: bool
    created_at: Timestamp
    updated_at: Timestamp


class ClientSecret(BaseModel):
    """A client's new secret, shown once: the service stores only its SHA-256."""

    client_id: str
    client_secret: str


class ClientCreated(ClientPublic):
    """A new client, with its secret when it is confidential."""

    client_secret: str | None


class SigningKeyPublic(BaseModel):
    """A signing key as the admin API shows it, without its private half."""

    kid: str
    algorithm: str
    encrypted: bool
    signing: bool = Field(description="Signs new tokens.")
    published: bool = Field(description="In the JWKS, so tokens it signed verify.")
    created_at: Timestamp
    rotated_at: Timestamp | None
    retired_at: Timestamp | None
