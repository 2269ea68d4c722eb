"""Login: a bearer token for a username and password."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, status

from monitor.api.deps import RuntimeDep
from monitor.api.passwords import verify_password
from monitor.store import users as user_store

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


@router.post("/token")
async def token(
    runtime: RuntimeDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    otp: Annotated[str | None, Form()] = None,
) -> dict[str, str]:
    async with runtime.pool.connection() as conn:
        user = await user_store.get(conn, username)
        if user is None or user["disabled"] or not verify_password(user["password_hash"], password):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "wrong username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        access_token = await user_store.create_session(conn, username)
    return {"access_token": access_token, "token_type": "bearer"}
