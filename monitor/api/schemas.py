"""Request and response models (operator-api.md), one family per noun."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "AlertResolve",
    "CommandArgs",
    "CommandCreate",
    "DeviceCreate",
    "DeviceCredentials",
    "StatusSet",
    "SubjectCreate",
    "SubjectUpdate",
    "UserCreate",
    "UserPublic",
]

Role = Literal["administrator", "operator", "officer", "auditor", "venue"]


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("a time needs a UTC offset or Z")
    return value.astimezone(UTC)


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")
    password: str = Field(min_length=8, max_length=256)
    role: Role


class UserPublic(BaseModel):
    username: str
    role: str
    created_at: datetime


class SubjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    external_id: str = Field(min_length=1, max_length=64)
    timezone: str = "UTC"
    officer: str | None = None

    _tz = field_validator("timezone")(_timezone)


class SubjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    timezone: str | None = None
    officer: str | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        return _timezone(v) if v is not None else None


class DeviceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{3,64}$")
    subject_id: str
    kind: Literal["bracelet", "phone", "owntracks"]
    owntracks_topic: str | None = None
    signed: bool = False
    assigned_at: datetime | None = None

    _assigned = field_validator("assigned_at")(lambda v: _aware(v) if v is not None else None)

    @field_validator("owntracks_topic")
    @classmethod
    def _topic(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"owntracks/[^/#+]+/[^/#+]+", v):
            raise ValueError("expected owntracks/{user}/{device}")
        return v


class DeviceCredentials(BaseModel):
    device_id: str
    mqtt_username: str
    mqtt_password: str
    signing_key: str | None


class StatusSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["red", "yellow", "blue", "green"]
    home: list[float] | None = None
    radius_m: float | None = Field(default=None, gt=0, le=100_000)
    effective_at: datetime | None = None

    _effective = field_validator("effective_at")(lambda v: _aware(v) if v is not None else None)

    @field_validator("home")
    @classmethod
    def _home(cls, v: list[float] | None) -> list[float] | None:
        if v is None:
            return None
        if len(v) != 2:
            raise ValueError("home is [lon, lat]")
        lon, lat = v
        if not -180 <= lon <= 180:
            raise ValueError(f"home longitude {lon} is outside [-180, 180]")
        if not -90 <= lat <= 90:
            raise ValueError(
                f"home latitude {lat} is outside [-90, 90] (GeoJSON order is [lon, lat])"
            )
        return [float(lon), float(lat)]


class CommandArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fix_s: int = Field(ge=1, le=86_400)
    upload_s: int = Field(ge=1, le=86_400)


class CommandCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cmd: Literal["locate", "set_interval", "vibrate"]
    args: CommandArgs | None = None


class AlertResolve(BaseModel):
    note: str = Field(max_length=4000)

    @field_validator("note")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("a resolution needs a note")
        return v.strip()
