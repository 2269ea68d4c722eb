"""A small operator-API client for tests, speaking only the contract."""

from __future__ import annotations

import json
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

REASON = {"X-Access-Reason": "test case 2026/001"}


@dataclass
class Api:
    base_url: str
    token: str = ""
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(base_url=self.base_url, timeout=30)

    @classmethod
    def login(cls, base_url: str, username: str, password: str) -> Api:
        api = cls(base_url)
        r = api.http.post("/api/v1/auth/token", data={"username": username, "password": password})
        r.raise_for_status()
        api.token = r.json()["access_token"]
        api.http.headers["Authorization"] = f"Bearer {api.token}"
        return api

    def post(self, path: str, body: Any, expect: int = 201) -> Any:
        r = self.http.post(path, json=body)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def put(self, path: str, body: Any, expect: int = 200) -> Any:
        r = self.http.put(path, json=body)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def get(self, path: str, expect: int = 200, **params: Any) -> Any:
        r = self.http.get(path, params=params, headers=REASON)
        assert r.status_code == expect, (r.status_code, r.text)
        return r.json()

    def subject(self, external_id: str, name: str = "Test Subject", tz: str = "Asia/Almaty") -> str:
        body = {"name": name, "external_id": external_id, "timezone": tz}
        return str(self.post("/api/v1/subjects", body)["id"])

    def enrol(self, device_id: str, subject_id: str, signed: bool = True, **extra: Any) -> Any:
        body = {
            "device_id": device_id,
            "subject_id": subject_id,
            "kind": "bracelet",
            "signed": signed,
            **extra,
        }
        return self.post("/api/v1/devices", body)


class LiveAlerts:
    """A websocket client of /api/v1/alerts/live, reading in a thread."""

    def __init__(self, base_url: str, token: str, after: int | None = None) -> None:
        url = base_url.replace("http://", "ws://") + f"/api/v1/alerts/live?token={token}"
        if after is not None:
            url += f"&after={after}"
        self.ws: ClientConnection = connect(url, open_timeout=10)
        self.messages: queue.Queue[dict[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for raw in self.ws:
                self.messages.put(json.loads(raw))
        except Exception:  # the connection closed: the reader ends
            return

    def next(self, timeout: float = 30) -> dict[str, Any]:
        return self.messages.get(timeout=timeout)

    def wait_for(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        import time

        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no matching message on the live websocket")
            msg = self.messages.get(timeout=remaining)
            if predicate(msg):
                return msg

    def close(self) -> None:
        self.ws.close()
