"""Request and response bodies shared by the security routes. Unknown fields are rejected."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from sctk.security.roles import Role


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    disabled: bool
    locked: bool
    locked_until: datetime | None
    created_at: datetime
    last_login_at: datetime | None


class UserCreate(Strict):
    username: str = Field(min_length=3, max_length=64, pattern=r"^[a-z][a-z0-9._-]{2,63}$")
    password: str = Field(min_length=1, max_length=256)
    role: Role = Role.viewer


class UserUpdate(Strict):
    role: Role | None = None
    disabled: bool | None = None


class PasswordReset(Strict):
    password: str = Field(min_length=1, max_length=256)


class PasswordChange(Strict):
    current_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


class TokenCreate(Strict):
    name: str = Field(min_length=1, max_length=100)
    expires: str = Field(
        "90d", max_length=16, description="Lifetime such as 12h, 30d, 2w, 1y, or 'never'."
    )


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str
    username: str
    state: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself; shown this once and never again.")


class Me(UserOut):
    permissions: list[str]
