"""Users and their sessions (opaque bearer tokens, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = [
    "create",
    "create_session",
    "end_session",
    "end_sessions",
    "failed_login",
    "get",
    "session_user",
    "set_totp",
    "token_hash",
    "unlock",
    "use_totp_step",
]

Conn = AsyncConnection[DictRow]


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def get(conn: Conn, username: str, for_update: bool = False) -> dict[str, Any] | None:
    lock = " FOR UPDATE" if for_update else ""
    cur = await conn.execute(
        "SELECT username, password_hash, role, created_at, disabled, totp_secret, totp_enabled,"
        f" totp_last_step, locked_at FROM users WHERE username = %s{lock}",
        (username,),
    )
    return await cur.fetchone()


async def failed_login(
    conn: Conn, username: str, source: str | None, window_s: float, limit: int
) -> bool:
    """Count a failed login; lock the account at `limit` failures within the window.
    True when this failure locked it."""
    await conn.execute(
        "INSERT INTO login_failures (username, source) VALUES (%s, %s)", (username, source)
    )
    cur = await conn.execute(
        "SELECT count(*) AS n FROM login_failures WHERE username = %s"
        " AND at > clock_timestamp() - make_interval(secs => %s)",
        (username, window_s),
    )
    row = await cur.fetchone()
    if row is None or int(row["n"]) < limit:
        return False
    cur = await conn.execute(
        "UPDATE users SET locked_at = clock_timestamp() WHERE username = %s"
        " AND locked_at IS NULL RETURNING username",
        (username,),
    )
    return await cur.fetchone() is not None


async def unlock(conn: Conn, username: str) -> bool:
    cur = await conn.execute(
        "UPDATE users SET locked_at = NULL WHERE username = %s RETURNING username", (username,)
    )
    await conn.execute("DELETE FROM login_failures WHERE username = %s", (username,))
    return await cur.fetchone() is not None


async def set_totp(conn: Conn, username: str, secret: str | None, enabled: bool) -> None:
    await conn.execute(
        "UPDATE users SET totp_secret = %s, totp_enabled = %s, totp_last_step = NULL"
        " WHERE username = %s",
        (secret, enabled, username),
    )


async def use_totp_step(conn: Conn, username: str, step: int) -> None:
    await conn.execute("UPDATE users SET totp_last_step = %s WHERE username = %s", (step, username))


async def end_sessions(conn: Conn, username: str) -> None:
    await conn.execute("DELETE FROM sessions WHERE username = %s", (username,))


async def create(conn: Conn, username: str, password_hash: str, role: str) -> dict[str, Any] | None:
    """None when the username is taken."""
    cur = await conn.execute(
        "INSERT INTO users (username, password_hash, role) VALUES (%s, %s, %s)"
        " ON CONFLICT (username) DO NOTHING RETURNING username, role, created_at, disabled",
        (username, password_hash, role),
    )
    return await cur.fetchone()


async def create_session(conn: Conn, username: str) -> str:
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO sessions (token_hash, username) VALUES (%s, %s)", (token_hash(token), username)
    )
    return token


async def session_user(
    conn: Conn, token: str, idle_s: float, max_age_s: float, now: datetime
) -> dict[str, Any] | None:
    """The user behind a token, if the session is alive; touches the session."""
    cur = await conn.execute(
        "UPDATE sessions s SET last_seen_at = %(now)s FROM users u"
        " WHERE s.token_hash = %(h)s AND u.username = s.username AND NOT u.disabled"
        " AND u.locked_at IS NULL"
        " AND s.last_seen_at > %(now)s - make_interval(secs => %(idle)s)"
        " AND s.created_at > %(now)s - make_interval(secs => %(age)s)"
        " RETURNING u.username, u.role",
        {"h": token_hash(token), "now": now, "idle": idle_s, "age": max_age_s},
    )
    return await cur.fetchone()


async def end_session(conn: Conn, token: str) -> None:
    """End the session behind a bearer token (a logout); the user's others stay."""
    await conn.execute("DELETE FROM sessions WHERE token_hash = %s", (token_hash(token),))
