"""Officer review and evidence: violations with their context, exports, court reports."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api/v1", tags=["reports"])
