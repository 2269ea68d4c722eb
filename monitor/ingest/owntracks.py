"""OwnTracks JSON (the phone app's own format) mapped onto fixes and device events.

A `location` is a fix without a seq, deduplicated on (device, tst) since the app
publishes retained messages that are seen again after a resubscription. `lwt` marks the
phone offline; `status` and `transition` are kept as events.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from monitor.domain import DeviceEvent, Fix, from_epoch_ms

__all__ = ["decode_owntracks", "status_warnings"]


def status_warnings(doc: dict[str, Any]) -> list[str]:
    """What in an OwnTracks `status` message puts location reporting at risk.

    Android reports flags under `android`: `ps` 1 power saving on, `bo` 1 battery
    optimisation applied to the app, `hib` 1 app hibernation allowed, `loc` the location
    permission (0 or less: not granted for background use). iOS reports
    `iOS.locationManagerAuthorizationStatus` (anything but always-authorised stops
    background fixes) and `iOS.backgroundRefreshStatus`. Unknown fields are ignored.
    """
    warnings: list[str] = []
    android = doc.get("android")
    if isinstance(android, dict):
        if android.get("ps") == 1:
            warnings.append("power saving is on")
        if android.get("bo") == 1:
            warnings.append("battery optimisation is on for the app")
        if android.get("hib") == 1:
            warnings.append("app hibernation is allowed")
        loc = android.get("loc")
        if isinstance(loc, int) and not isinstance(loc, bool) and loc <= 0:
            warnings.append("location permission is not granted for background use")
    ios = doc.get("iOS")
    if isinstance(ios, dict):
        auth = ios.get("locationManagerAuthorizationStatus")
        if isinstance(auth, str) and "always" not in auth.lower():
            warnings.append(f"location permission is {auth}")
        refresh = ios.get("backgroundRefreshStatus")
        if isinstance(refresh, str) and refresh.lower() != "available":
            warnings.append(f"background refresh is {refresh}")
    return warnings


def _number(doc: dict[str, Any], name: str, required: bool = True) -> float | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise ValueError(f"field '{name}' is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"'{name}' must be a number, got {value!r}")
    try:
        result = float(value)
    except OverflowError:
        raise ValueError(f"'{name}' is out of range") from None
    if not math.isfinite(result):
        raise ValueError(f"'{name}' must be a finite number")
    return result


# Plausible epoch seconds: 2000-01-01 .. 2100-01-01.
_TST_MIN, _TST_MAX = 946_684_800, 4_102_444_800


def _tst(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    if not _TST_MIN <= value <= _TST_MAX:
        raise ValueError(f"'tst' {value} is outside 2000..2100 (epoch seconds)")
    return value


def decode_owntracks(
    device_id: str, payload: bytes, received_at: datetime
) -> tuple[Fix | None, DeviceEvent | None]:
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ValueError(f"not JSON ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    kind = doc.get("_type")
    if kind == "location":
        lat, lon = _number(doc, "lat"), _number(doc, "lon")
        tst = _tst(doc.get("tst"))
        if tst is None:
            raise ValueError(f"'tst' must be an integer (epoch seconds), got {doc.get('tst')!r}")
        assert lat is not None
        assert lon is not None
        if not -90 <= lat <= 90 or not -180 <= lon <= 180:
            raise ValueError(f"coordinates out of range: lat {lat}, lon {lon}")
        acc = _number(doc, "acc", required=False)
        batt = doc.get("batt")
        vel = _number(doc, "vel", required=False)  # km/h in OwnTracks
        fix = Fix(
            device_id=device_id,
            seq=None,
            t=from_epoch_ms(tst * 1000),
            lat=lat,
            lon=lon,
            acc=acc if acc is not None and acc >= 0 else 100.0,
            src="wifi" if doc.get("conn") == "w" and (acc or 0) > 50 else "gnss",
            received_at=received_at,
            spd=vel / 3.6 if vel is not None and vel >= 0 else None,
            batt=batt
            if isinstance(batt, int) and not isinstance(batt, bool) and 0 <= batt <= 100
            else None,
        )
        return fix, None
    if kind == "status":
        t = received_at
        detail = {"warnings": status_warnings(doc), "status": doc}
        return None, DeviceEvent(device_id, None, t, "phone_status", received_at, detail)
    if kind in ("lwt", "transition"):
        tst = _tst(doc.get("tst"))
        t = from_epoch_ms(tst * 1000) if tst is not None else received_at
        name = {"lwt": "offline", "transition": "transition"}[kind]
        return None, DeviceEvent(device_id, None, t, name, received_at, doc)
    raise ValueError(f"unsupported _type {kind!r}")
