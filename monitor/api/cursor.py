"""Opaque paging cursors: the position after the last row of a page."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from fastapi import HTTPException

__all__ = ["decode", "decode_position", "encode", "position_after"]


def encode(value: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def decode(cursor: str) -> list[Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(value, list):
            raise TypeError
        return value
    except (ValueError, TypeError):
        raise HTTPException(422, "cursor: not a cursor this API gave out") from None


def position_after(row: dict[str, Any]) -> str:
    """The cursor after a row of a time-ordered page (fixes, events)."""
    return encode([row["t"].isoformat(), row["device_id"], row["seq"] or 0])


def decode_position(cursor: str) -> tuple[datetime, str, int]:
    raw = decode(cursor)
    try:
        return datetime.fromisoformat(raw[0]), str(raw[1]), int(raw[2])
    except (ValueError, IndexError, TypeError):
        raise HTTPException(422, "cursor: not a cursor this API gave out") from None
