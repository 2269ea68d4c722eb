"""Opaque paging cursors: the position after the last row of a page."""

from __future__ import annotations

import base64
import json
from typing import Any

from fastapi import HTTPException

__all__ = ["decode", "encode"]


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
