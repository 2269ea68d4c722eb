"""A small client for the operator API (operator-api.md), on the standard library only
so that the simulator runs without the development extras."""

from __future__ import annotations

import copy
import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["ApiError", "ConflictError", "Enrolment", "OperatorClient"]

log = logging.getLogger(__name__)

# Answers that say "not now" rather than "no": worth asking again while retrying.
_RETRY_STATUS = frozenset({502, 503, 504})


class ApiError(Exception):
    """An answer outside 2xx, with the API's `detail`."""

    def __init__(self, method: str, path: str, status: int, detail: object) -> None:
        super().__init__(f"{method} {path}: {status} {detail}")
        self.status = status
        self.detail = detail


class ConflictError(ApiError):
    """409: the thing exists already (an enrolled device_id, for one)."""


@dataclass(frozen=True, slots=True)
class Enrolment:
    """What `POST /api/v1/devices` answers: the secrets are shown only once."""

    device_id: str
    mqtt_username: str
    mqtt_password: str
    signing_key: str | None


class OperatorClient:
    """Calls `base_url`/api/v1/... with a bearer token once `login()` has run.

    With `retry_s` > 0 a call that meets a service being restarted is tried again for up
    to that long: reads (GET) on any connection error, timeout or 502/503/504; writes
    only when the connection was refused (the request never reached the service), since
    a write whose answer was lost may have been done. A token the service no longer
    knows (401) is renewed once with the credentials `login()` was given.
    """

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        retry_s: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        # urlopen would also open file:// and ftp:// URLs.
        if urllib.parse.urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"the API URL must be http:// or https://, not {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._sleep = sleep
        self.token: str | None = None
        self._credentials: tuple[str, str] | None = None

    def with_retry(self, retry_s: float, timeout_s: float | None = None) -> OperatorClient:
        """The same client (token, credentials) with another retry budget: reads made
        from inside a loop that must keep going want none."""
        other = copy.copy(self)
        other.retry_s = retry_s
        if timeout_s is not None:
            other.timeout_s = timeout_s
        return other

    def login(self, username: str, password: str) -> None:
        form = urllib.parse.urlencode({"username": username, "password": password}).encode()
        answer = self._call(
            "POST",
            "/api/v1/auth/token",
            form,
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.token = str(answer["access_token"])
        self._credentials = (username, password)

    def create_subject(
        self, name: str, external_id: str, timezone: str, officer: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, object] = {"name": name, "external_id": external_id, "timezone": timezone}
        if officer is not None:
            body["officer"] = officer
        return self._json("POST", "/api/v1/subjects", body)

    def set_status(
        self,
        subject_id: str,
        status: str,
        home: tuple[float, float] | None = None,
        effective_at: str | None = None,
    ) -> dict[str, Any]:
        """`home` is (lon, lat), required for red and yellow."""
        body: dict[str, object] = {"status": status}
        if home is not None:
            body["home"] = [home[0], home[1]]
        if effective_at is not None:
            body["effective_at"] = effective_at
        return self._json("PUT", f"/api/v1/subjects/{_q(subject_id)}/status", body)

    def create_zone(self, subject_id: str, feature: Mapping[str, object]) -> dict[str, Any]:
        """A GeoJSON Feature with `properties.kind` home, inclusion or exclusion (and
        optionally `schedule`, `valid_from`); answers the zone with its `id`."""
        return self._json("POST", f"/api/v1/subjects/{_q(subject_id)}/zones", dict(feature))

    def enrol_device(
        self,
        device_id: str,
        subject_id: str,
        kind: str = "bracelet",
        signed: bool = True,
        *,
        assigned_at: str | None = None,
        owntracks_topic: str | None = None,
    ) -> Enrolment:
        """Raises ConflictError when `device_id` is enrolled already. `assigned_at` (ISO
        8601) says since when the device is the subject's: fixes stamped earlier belong to
        no one."""
        body: dict[str, object] = {
            "device_id": device_id,
            "subject_id": subject_id,
            "kind": kind,
            "signed": signed,
        }
        if assigned_at is not None:
            body["assigned_at"] = assigned_at
        if owntracks_topic is not None:
            body["owntracks_topic"] = owntracks_topic
        answer = self._json("POST", "/api/v1/devices", body)
        key = answer.get("signing_key")
        return Enrolment(
            device_id=str(answer["device_id"]),
            mqtt_username=str(answer["mqtt_username"]),
            mqtt_password=str(answer["mqtt_password"]),
            signing_key=None if key is None else str(key),
        )

    # Reads of a subject's data carry their justification (the consultation log).

    def subject(self, subject_id: str, reason: str) -> dict[str, Any]:
        return self._json("GET", f"/api/v1/subjects/{_q(subject_id)}", reason=reason)

    def device(self, device_id: str) -> dict[str, Any]:
        """The device: its subject, `assigned_at`, and whether it is `online`."""
        return self._json("GET", f"/api/v1/devices/{_q(device_id)}")

    def fixes(
        self,
        subject_id: str,
        reason: str,
        since: str | None = None,
        limit: int | None = None,
        *,
        until: str | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = _query(since=since, until=until, limit=limit, cursor=cursor)
        path = f"/api/v1/subjects/{_q(subject_id)}/fixes{query}"
        return self._json("GET", path, reason=reason)

    def all_fixes(
        self, subject_id: str, reason: str, page: int = 10_000
    ) -> Iterator[dict[str, Any]]:
        """Every fix of the subject (GeoJSON Features, oldest first), page after page."""
        cursor: str | None = None
        while True:
            answer = self.fixes(subject_id, reason, limit=page, cursor=cursor)
            yield from answer.get("features", [])
            cursor = answer.get("next")
            if not cursor:
                return

    def alerts(
        self,
        reason: str,
        subject_id: str | None = None,
        state: str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        query = _query(subject_id=subject_id, state=state, limit=limit, cursor=cursor)
        return self._json("GET", f"/api/v1/alerts{query}", reason=reason)

    def all_alerts(
        self, reason: str, subject_id: str | None = None, page: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every alert (of the subject), newest first, page after page."""
        cursor: str | None = None
        while True:
            answer = self.alerts(reason, subject_id, limit=page, cursor=cursor)
            yield from answer.get("items", [])
            cursor = answer.get("next")
            if not cursor:
                return

    # -- plumbing ------------------------------------------------------------------

    def _json(
        self, method: str, path: str, body: object = None, reason: str | None = None
    ) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if reason is not None:
            headers["X-Access-Reason"] = reason
        return self._call(method, path, data, headers)

    def _call(
        self, method: str, path: str, data: bytes | None, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        deadline = time.monotonic() + self.retry_s
        pause = 0.2
        renewed = False
        while True:
            try:
                return self._call_once(method, path, data, headers)
            except ApiError as exc:
                if (
                    exc.status == 401
                    and not renewed
                    and self._credentials is not None
                    and path != "/api/v1/auth/token"
                ):
                    renewed = True
                    self.login(*self._credentials)
                    continue
                if exc.status not in _RETRY_STATUS or time.monotonic() >= deadline:
                    raise
                problem: object = exc
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                refused = isinstance(reason, ConnectionRefusedError)
                if not (refused or method == "GET") or time.monotonic() >= deadline:
                    raise
                problem = reason
            log.info("%s %s: %s; trying again", method, path, problem)
            self._sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, 2.0)

    def _call_once(
        self, method: str, path: str, data: bytes | None, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        all_headers = dict(headers)
        if self.token is not None:
            all_headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=all_headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw_error = exc.read()
            try:
                detail = json.loads(raw_error).get("detail", raw_error.decode(errors="replace"))
            except (ValueError, AttributeError):
                detail = raw_error.decode(errors="replace")[:500]
            error = ConflictError if exc.code == 409 else ApiError
            raise error(method, path, exc.code, detail) from None
        answer = json.loads(raw) if raw else {}
        if not isinstance(answer, dict):
            raise ApiError(method, path, 200, f"expected a JSON object, got {answer!r:.200}")
        return answer


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def _query(**params: object) -> str:
    given = {k: str(v) for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(given) if given else ""
