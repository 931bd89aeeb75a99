"""/api/v1/users (admin) and /api/v1/me (anyone signed in)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from sctk.api.deps import (
    CurrentUser,
    SessionDep,
    client_address,
    commit_and_forget_credentials,
    require,
)
from sctk.api.routes.schemas import (
    Me,
    PasswordChange,
    PasswordReset,
    UserCreate,
    UserOut,
    UserUpdate,
)
from sctk.errors import SctkError
from sctk.security import users
from sctk.security.roles import PERMISSIONS, allowed
from sctk.security.users import UserView

router = APIRouter(tags=["users"])
Username = Annotated[str, Path(min_length=1, max_length=64)]


def _out(user) -> UserOut:
    return UserOut(**asdict(UserView.of(user)))


@router.get("/me", response_model=Me, summary="The signed-in user and what they may do.")
def me(user: CurrentUser, session: SessionDep) -> Me:
    perms = sorted(p for p in PERMISSIONS if allowed(user.role, p))
    return Me(**asdict(UserView.of(users.get(session, user.username))), permissions=perms)


@router.post(
    "/me/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change one's own password."
)
def change_own_password(
    body: PasswordChange,
    request: Request,
    session: SessionDep,
    user=require("tokens.own"),
) -> None:
    try:
        users.authenticate(
            session,
            user.username,
            body.current_password,
            client_address(request),
            request.app.state.settings.security,
        )
    except users.AuthenticationFailed:
        # keep the failed attempt (and any lockout) that authenticate recorded: the error
        # below would roll it back, and a stolen token could then guess the password freely
        session.commit()
        raise SctkError("The current password is wrong.") from None
    # one's own change keeps one's API tokens (the caller may be using one); an admin's
    # reset revokes them
    users.reset_password(
        session, user.username, body.new_password, actor=user.username, revoke_tokens=False
    )
    commit_and_forget_credentials(request, session)


@router.get("/users", response_model=list[UserOut], summary="All users.")
def list_users(session: SessionDep, _admin=require("users.manage")) -> list[UserOut]:
    return [UserOut(**asdict(v)) for v in users.list_users(session)]


@router.post(
    "/users", response_model=UserOut, status_code=status.HTTP_201_CREATED, summary="Create a user."
)
def create_user(body: UserCreate, session: SessionDep, admin=require("users.manage")) -> UserOut:
    return _out(
        users.create(session, body.username, body.password, body.role.value, actor=admin.username)
    )


@router.get("/users/{username}", response_model=UserOut, summary="One user.")
def get_user(username: Username, session: SessionDep, _admin=require("users.manage")) -> UserOut:
    return _out(users.get(session, username))


@router.patch(
    "/users/{username}",
    response_model=UserOut,
    summary="Change a user's role or enable/disable the account.",
)
def update_user(
    username: Username,
    body: UserUpdate,
    request: Request,
    session: SessionDep,
    admin=require("users.manage"),
) -> UserOut:
    user = users.get(session, username)
    if body.role is not None:
        user = users.set_role(session, username, body.role.value, actor=admin.username)
    if body.disabled is not None:
        user = users.set_disabled(session, username, body.disabled, actor=admin.username)
    commit_and_forget_credentials(request, session)
    return _out(user)


@router.post(
    "/users/{username}/unlock",
    response_model=UserOut,
    summary="Lift a lockout caused by failed logins.",
)
def unlock_user(username: Username, session: SessionDep, admin=require("users.manage")) -> UserOut:
    return _out(users.unlock(session, username, actor=admin.username))


@router.put(
    "/users/{username}/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password for a user; their sessions and personal API tokens end.",
)
def reset_password(
    username: Username,
    body: PasswordReset,
    request: Request,
    session: SessionDep,
    admin=require("users.manage"),
) -> None:
    users.reset_password(session, username, body.password, actor=admin.username)
    commit_and_forget_credentials(request, session)
