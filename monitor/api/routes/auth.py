"""Login (password, then a one-time code once the user has a second factor), the
lockout after repeated failures, and second-factor enrolment."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request, status
from pydantic import BaseModel

from monitor.api import totp
from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.api.passwords import verify_password
from monitor.store import audit
from monitor.store import users as user_store

router = APIRouter(prefix="/api/v1", tags=["auth"])

# CJIS: lock an account after 5 failed logins within 15 minutes, until an administrator
# releases it.
LOCK_AFTER = 5
LOCK_WINDOW_S = 15 * 60


def _refused(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


@router.post("/auth/token")
async def token(
    request: Request,
    runtime: RuntimeDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    otp: Annotated[str | None, Form()] = None,
) -> dict[str, str]:
    source = request.client.host if request.client else None
    async with runtime.pool.connection() as conn:
        user = await user_store.get(conn, username, for_update=True)
        if user is not None and user["locked_at"] is not None:
            await audit.record(
                conn, username, "login", "session", source=source, outcome="refused: account locked"
            )
            raise _refused(
                "account locked after repeated failed logins; an administrator must release it"
            )
        failure = None
        step = None
        if user is None or user["disabled"] or not verify_password(user["password_hash"], password):
            failure = "wrong username or password"
        elif user["totp_enabled"]:
            if not otp:
                failure = "a one-time code (otp) is required for this user"
            else:
                step = totp.matching_step(
                    user["totp_secret"], otp, time.time(), user["totp_last_step"]
                )
                if step is None:
                    failure = "wrong or already used one-time code"
        if failure is not None:
            locked = False
            if user is not None:
                locked = await user_store.failed_login(
                    conn, username, source, LOCK_WINDOW_S, LOCK_AFTER
                )
            await audit.record(
                conn,
                username,
                "login",
                "session",
                source=source,
                outcome=f"refused: {failure}" + ("; account locked" if locked else ""),
            )
            await conn.commit()
            raise _refused(failure)
        if step is not None:
            await user_store.use_totp_step(conn, username, step)
        access_token = await user_store.create_session(conn, username)
        await audit.record(conn, username, "login", "session", source=source)
    return {"access_token": access_token, "token_type": "bearer"}


@router.post("/auth/logout", status_code=204)
async def logout(user: CurrentUser, runtime: RuntimeDep, request: Request) -> None:
    header = request.headers.get("authorization", "")
    async with runtime.pool.connection() as conn:
        await user_store.end_session(conn, header.removeprefix("Bearer ").strip())
        await audit.record(conn, user.username, "logout", "session")


class OtpConfirm(BaseModel):
    otp: str


@router.post("/users/me/totp")
async def start_totp(user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    """A new secret for the user's authenticator app; active once confirmed."""
    secret = totp.new_secret()
    async with runtime.pool.connection() as conn:
        current = await user_store.get(conn, user.username)
        if current is not None and current["totp_enabled"]:
            raise HTTPException(409, "a second factor is already active")
        await user_store.set_totp(conn, user.username, secret, enabled=False)
    return {"secret": secret, "otpauth_uri": totp.provisioning_uri(secret, user.username)}


@router.post("/users/me/totp/confirm")
async def confirm_totp(body: OtpConfirm, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    async with runtime.pool.connection() as conn:
        current = await user_store.get(conn, user.username, for_update=True)
        if current is None or not current["totp_secret"]:
            raise HTTPException(409, "start with POST /api/v1/users/me/totp")
        step = totp.matching_step(current["totp_secret"], body.otp, time.time(), None)
        if step is None:
            raise HTTPException(422, "otp: wrong one-time code")
        await user_store.set_totp(conn, user.username, current["totp_secret"], enabled=True)
        await user_store.use_totp_step(conn, user.username, step)
        await audit.record(conn, user.username, "enable_totp", "user", user.username)
    return {"totp_enabled": True}


@router.post("/users/{username}/unlock")
async def unlock(username: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "administrator")
    async with runtime.pool.connection() as conn:
        if not await user_store.unlock(conn, username):
            raise HTTPException(404, f"no user {username}")
        await audit.record(conn, user.username, "unlock", "user", username)
    return {"username": username, "locked": False}
