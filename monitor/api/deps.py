"""Dependencies of the routes: the runtime, the current user, the access reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Header, HTTPException, Request, status
from fastapi.security import OAuth2PasswordBearer

from monitor.alerts.hub import Hub
from monitor.cluster import Coordinator
from monitor.config import Settings
from monitor.ingest.stream import Stream
from monitor.service import Ingest
from monitor.store import subjects as subject_store
from monitor.store import users as user_store
from monitor.store.pool import Pool

__all__ = [
    "AccessReason",
    "CurrentUser",
    "Runtime",
    "RuntimeDep",
    "User",
    "authenticate",
    "require_roles",
    "visible_subject",
]

# CJIS: a session locks after 30 minutes idle and ends after 12 hours in all.
SESSION_IDLE_S = 30 * 60
SESSION_MAX_S = 12 * 3600


@dataclass
class Runtime:
    settings: Settings
    pool: Pool
    ingest: Ingest
    hub: Hub
    subscribed: Any  # threading.Event: set while subscribed to the broker
    # Each subject's supervising officer, kept current (in this process at once, in the
    # others by NOTIFY), so a transfer takes a subject out of the old officer's live feed
    # at once.
    officers: dict[str, str | None] = field(default_factory=dict)
    # Cluster mode: this process's partition claims and its NATS connection.
    cluster: Coordinator | None = None
    stream: Stream | None = None
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(_runtime)]


@dataclass(frozen=True, slots=True)
class User:
    username: str
    role: str

    @property
    def sees_everyone(self) -> bool:
        return self.role in ("administrator", "operator")


_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)


async def authenticate(runtime: Runtime, token: str | None) -> User | None:
    if not token:
        return None
    async with runtime.pool.connection() as conn:
        row = await user_store.session_user(
            conn, token, SESSION_IDLE_S, SESSION_MAX_S, datetime.now(UTC)
        )
    return User(row["username"], row["role"]) if row else None


async def _current_user(
    runtime: RuntimeDep, token: Annotated[str | None, Depends(_bearer)]
) -> User:
    user = await authenticate(runtime, token)
    if user is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing, invalid or expired bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return user


CurrentUser = Annotated[User, Depends(_current_user)]


def require_roles(user: User, *roles: str) -> None:
    if user.role not in roles:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the {user.role} role may not do this")


async def _access_reason(
    x_access_reason: Annotated[str | None, Header(alias="X-Access-Reason")] = None,
) -> str:
    if x_access_reason is None or not x_access_reason.strip():
        raise HTTPException(
            status.HTTP_428_PRECONDITION_REQUIRED,
            "reading a subject's data needs the header X-Access-Reason"
            " (a case reference or purpose); it is written to the consultation log",
        )
    return x_access_reason.strip()[:500]


AccessReason = Annotated[str, Depends(_access_reason)]


async def visible_subject(
    runtime: Runtime, user: User, subject_id: str, for_update: bool = False
) -> dict[str, Any]:
    """The subject if the user may see it; 404 otherwise (hiding that it exists)."""
    if user.role in ("auditor", "venue"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"the {user.role} role may not do this")
    async with runtime.pool.connection() as conn:
        row = await subject_store.get(conn, subject_id, for_update)
    if row is None or not (user.sees_everyone or row["officer"] == user.username):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no subject {subject_id}")
    return row
