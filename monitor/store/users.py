"""Users and their sessions (opaque bearer tokens, stored hashed)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import DictRow

__all__ = ["create", "create_session", "get", "session_user", "token_hash"]

Conn = AsyncConnection[DictRow]


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


async def get(conn: Conn, username: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT username, password_hash, role, created_at, disabled FROM users WHERE username = %s",
        (username,),
    )
    return await cur.fetchone()


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
        " AND s.last_seen_at > %(now)s - make_interval(secs => %(idle)s)"
        " AND s.created_at > %(now)s - make_interval(secs => %(age)s)"
        " RETURNING u.username, u.role",
        {"h": token_hash(token), "now": now, "idle": idle_s, "age": max_age_s},
    )
    return await cur.fetchone()
