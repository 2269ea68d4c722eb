"""Users (administrators only)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from monitor.api.deps import CurrentUser, RuntimeDep, require_roles
from monitor.api.passwords import hash_password
from monitor.api.schemas import UserCreate, UserPublic
from monitor.store import audit
from monitor.store import users as user_store

router = APIRouter(prefix="/api/v1/users", tags=["users"])


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, user: CurrentUser, runtime: RuntimeDep) -> UserPublic:
    require_roles(user, "administrator")
    async with runtime.pool.connection() as conn:
        row = await user_store.create(conn, body.username, hash_password(body.password), body.role)
        if row is not None:
            await audit.record(
                conn,
                user.username,
                "create",
                "user",
                body.username,
                after={"username": body.username, "role": body.role},
            )
    if row is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"user {body.username!r} exists")
    return UserPublic(username=row["username"], role=row["role"], created_at=row["created_at"])
