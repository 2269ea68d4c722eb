"""The venue check: a status colour by ID number or by a short-lived code the subject's
phone shows (a QR code), and nothing else: no name, no location."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections import defaultdict, deque
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, HTTPException

from monitor.api.deps import CurrentUser, RuntimeDep, require_roles, visible_subject
from monitor.domain import Status, iso
from monitor.store import audit, secrets
from monitor.store import subjects as subject_store
from monitor.store import zones as zone_store

router = APIRouter(prefix="/api/v1", tags=["venue"])

CODE_TTL_S = 300  # a status code shown at a door is good for five minutes
RATE_PER_MINUTE = 60  # checks per venue user per minute (per service process)
_CODE_PREFIX = "sc1."

_recent: dict[str, deque[float]] = defaultdict(deque)


def _rate_limited(username: str, now: float) -> bool:
    window = _recent[username]
    while window and window[0] <= now - 60:
        window.popleft()
    if len(window) >= RATE_PER_MINUTE:
        return True
    window.append(now)
    return False


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_code(key: bytes, external_id: str, expires: int) -> str:
    body = _b64(json.dumps({"x": external_id, "e": expires}, separators=(",", ":")).encode())
    mac = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:16])
    return f"{_CODE_PREFIX}{body}.{mac}"


def read_code(key: bytes, code: str, now: float) -> str:
    """The external_id a valid, unexpired code names; HTTPException otherwise."""
    try:
        body, mac = code.removeprefix(_CODE_PREFIX).split(".")
        expected = _b64(hmac.new(key, body.encode(), hashlib.sha256).digest()[:16])
        if not hmac.compare_digest(mac, expected):
            raise ValueError("signature")
        doc = json.loads(_unb64(body))
        external_id, expires = str(doc["x"]), int(doc["e"])
    except (ValueError, KeyError, TypeError):
        raise HTTPException(404, "not a valid status code") from None
    if now > expires:
        raise HTTPException(404, "the status code has expired; ask for a new one")
    return external_id


@router.post("/subjects/{subject_id}/status-code")
async def status_code(subject_id: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    """A short-lived signed code for the subject's phone to show (as a QR code)."""
    require_roles(user, "administrator", "operator", "officer")
    subject = await visible_subject(runtime, user, subject_id)
    expires = int(time.time()) + CODE_TTL_S
    async with runtime.pool.connection() as conn:
        key = await secrets.get_or_create(conn, "status_code")
        await audit.record(
            conn, user.username, "issue_status_code", "subject", subject_id, subject_id=subject_id
        )
    return {
        "code": make_code(key, subject["external_id"], expires),
        "expires_at": iso(datetime.fromtimestamp(expires, UTC)),
    }


@router.get("/status/{external_id}")
async def venue_check(external_id: str, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    require_roles(user, "venue", "administrator")
    now = time.time()
    if _rate_limited(user.username, now):
        raise HTTPException(429, "too many checks; wait a minute", headers={"Retry-After": "60"})
    moment = datetime.fromtimestamp(now, UTC)
    async with runtime.pool.connection() as conn:
        if external_id.startswith(_CODE_PREFIX):
            key = await secrets.get_or_create(conn, "status_code")
            external_id = read_code(key, external_id, now)
        subject = await subject_store.get_by_external_id(conn, external_id)
        book = await zone_store.load_rulebook(conn, str(subject["id"])) if subject else None
        order = book.status_at(moment) if book else None
        await subject_store.log_consultation(
            conn,
            user.username,
            "venue check",
            str(subject["id"]) if subject else None,
            "status",
            moment,
            moment,
        )
    # No subject, or no status on record: without restriction, and answered exactly as
    # such, so the check never tells the door staff who is monitored.
    status = order.status.value if order is not None else Status.GREEN.value
    return {"status": status, "valid_at": iso(moment)}
