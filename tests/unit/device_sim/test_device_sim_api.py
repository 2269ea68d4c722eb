"""The operator API client's requests, checked at urllib's door (no server)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from email.message import Message
from typing import Any

import pytest

from device_sim.api import ApiError, ConflictError, OperatorClient


class Recorder:
    def __init__(self) -> None:
        self.requests: list[urllib.request.Request] = []
        self.answers: list[tuple[int, object]] = []

    def __call__(self, request: urllib.request.Request, timeout: float) -> Any:
        self.requests.append(request)
        status, body = self.answers.pop(0)
        raw = json.dumps(body).encode()
        if status >= 400:
            raise urllib.error.HTTPError(request.full_url, status, "no", Message(), io.BytesIO(raw))
        return io.BytesIO(raw)


@pytest.fixture
def http(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    monkeypatch.setattr(urllib.request, "urlopen", recorder)
    return recorder


def _logged_in(http: Recorder) -> OperatorClient:
    http.answers.append((200, {"access_token": "tok", "token_type": "bearer"}))
    api = OperatorClient("http://127.0.0.1:8000/")
    api.login("admin", "p&w=1")
    return api


def test_login_posts_a_form_and_keeps_the_token(http: Recorder) -> None:
    api = _logged_in(http)
    request = http.requests[0]
    assert request.full_url == "http://127.0.0.1:8000/api/v1/auth/token"
    assert request.get_method() == "POST"
    assert request.get_header("Content-type") == "application/x-www-form-urlencoded"
    assert request.data == b"username=admin&password=p%26w%3D1"
    assert api.token == "tok"


def test_enrolment_sends_json_with_the_bearer_token(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers.append(
        (
            201,
            {
                "device_id": "BR-1",
                "mqtt_username": "BR-1",
                "mqtt_password": "pw",
                "signing_key": "k" * 43,
            },
        )
    )
    enrolment = api.enrol_device("BR-1", "subj-1")
    request = http.requests[1]
    assert request.full_url == "http://127.0.0.1:8000/api/v1/devices"
    assert request.get_header("Authorization") == "Bearer tok"
    assert json.loads(request.data) == {  # type: ignore[arg-type]
        "device_id": "BR-1",
        "subject_id": "subj-1",
        "kind": "bracelet",
        "signed": True,
    }
    assert enrolment.mqtt_password == "pw"
    assert enrolment.signing_key == "k" * 43


def test_status_puts_the_home_as_lon_lat(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers.append((200, {}))
    api.set_status("subj/1", "yellow", home=(76.89, 43.24))
    request = http.requests[1]
    assert request.get_method() == "PUT"
    assert request.full_url.endswith("/api/v1/subjects/subj%2F1/status")
    assert json.loads(request.data) == {"status": "yellow", "home": [76.89, 43.24]}  # type: ignore[arg-type]


def test_reads_of_a_subjects_data_carry_the_access_reason(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers += [(200, {}), (200, {"features": []}), (200, {"items": [], "next": None})]
    api.subject("subj-1", reason="case 2026/17")
    api.fixes("subj-1", reason="case 2026/17", limit=10)
    api.alerts(reason="case 2026/17", subject_id="subj-1", state="open")
    for request in http.requests[1:]:
        assert request.get_header("X-access-reason") == "case 2026/17"
    assert http.requests[2].full_url.endswith("/api/v1/subjects/subj-1/fixes?limit=10")
    assert http.requests[3].full_url.endswith("/api/v1/alerts?subject_id=subj-1&state=open")


def test_errors_carry_the_status_and_detail(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers += [(409, {"detail": "device BR-1 is enrolled"}), (422, {"detail": [1]})]
    with pytest.raises(ConflictError, match="enrolled") as conflict:
        api.enrol_device("BR-1", "subj-1")
    assert conflict.value.status == 409
    with pytest.raises(ApiError) as invalid:
        api.create_subject("x", "y", "Asia/Almaty")
    assert invalid.value.status == 422
    assert not isinstance(invalid.value, ConflictError)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="http"):
        OperatorClient("file:///etc/passwd")


class Flaky(Recorder):
    """Fails the first calls with the given exceptions, then answers."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__()
        self.failures = failures

    def __call__(self, request: urllib.request.Request, timeout: float) -> Any:
        if self.failures:
            self.requests.append(request)
            raise self.failures.pop(0)
        return super().__call__(request, timeout)


def _flaky(monkeypatch: pytest.MonkeyPatch, failures: list[BaseException]) -> Flaky:
    flaky = Flaky(failures)
    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    return flaky


def test_reads_are_tried_again_while_the_service_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = urllib.error.URLError(ConnectionRefusedError(111, "refused"))
    flaky = _flaky(monkeypatch, [refused, ConnectionResetError(104, "reset"), TimeoutError()])
    flaky.answers.append((200, {"device_id": "BR-1", "online": False}))
    pauses: list[float] = []
    api = OperatorClient("http://127.0.0.1:8000", retry_s=30, sleep=pauses.append)
    assert api.device("BR-1")["online"] is False
    assert len(flaky.requests) == 4
    assert len(pauses) == 3


def test_a_write_is_tried_again_only_when_it_never_arrived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = urllib.error.URLError(ConnectionRefusedError(111, "refused"))
    flaky = _flaky(monkeypatch, [refused])
    flaky.answers.append((201, {"id": "s-1"}))
    api = OperatorClient("http://127.0.0.1:8000", retry_s=30, sleep=lambda s: None)
    assert api.create_subject("x", "y", "Asia/Almaty") == {"id": "s-1"}
    # A reset may come after the service did the write: not repeated.
    _flaky(monkeypatch, [ConnectionResetError(104, "reset")])
    with pytest.raises(ConnectionResetError):
        api.create_subject("x", "y", "Asia/Almaty")


def test_unavailable_is_tried_again_and_then_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    http = Recorder()
    monkeypatch.setattr(urllib.request, "urlopen", http)
    http.answers += [(503, {"detail": "starting"}), (200, {"features": []})]
    api = OperatorClient("http://127.0.0.1:8000", retry_s=30, sleep=lambda s: None)
    assert api.fixes("s-1", reason="r") == {"features": []}
    http.answers.append((503, {"detail": "starting"}))
    with pytest.raises(ApiError) as unavailable:
        OperatorClient("http://127.0.0.1:8000").fixes("s-1", reason="r")
    assert unavailable.value.status == 503


def test_a_forgotten_token_is_renewed_once(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers += [
        (401, {"detail": "session ended"}),
        (200, {"access_token": "tok2", "token_type": "bearer"}),
        (200, {"device_id": "BR-1"}),
    ]
    assert api.device("BR-1") == {"device_id": "BR-1"}
    assert api.token == "tok2"
    assert http.requests[-1].get_header("Authorization") == "Bearer tok2"


def test_pages_are_followed(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers += [
        (200, {"features": [{"n": 1}, {"n": 2}], "next": "c1"}),
        (200, {"features": [{"n": 3}], "next": None}),
        (200, {"items": [{"id": "a"}], "next": "k1"}),
        (200, {"items": [{"id": "b"}], "next": None}),
    ]
    assert [f["n"] for f in api.all_fixes("s-1", "r", page=2)] == [1, 2, 3]
    assert http.requests[2].full_url.endswith("/fixes?limit=2&cursor=c1")
    assert [a["id"] for a in api.all_alerts("r", "s-1")] == ["a", "b"]
    assert http.requests[4].full_url.endswith("/alerts?subject_id=s-1&limit=1000&cursor=k1")


def test_enrolment_may_say_since_when_and_which_owntracks_topic(http: Recorder) -> None:
    api = _logged_in(http)
    http.answers.append(
        (
            201,
            {
                "device_id": "PH-1",
                "mqtt_username": "PH-1",
                "mqtt_password": "p",
                "signing_key": None,
            },
        )
    )
    api.enrol_device(
        "PH-1", "s-1", "owntracks", signed=False, assigned_at="2026-01-01T00:00:00Z",
        owntracks_topic="owntracks/a/phone",
    )  # fmt: skip
    assert json.loads(http.requests[1].data) == {  # type: ignore[arg-type]
        "device_id": "PH-1", "subject_id": "s-1", "kind": "owntracks", "signed": False,
        "assigned_at": "2026-01-01T00:00:00Z", "owntracks_topic": "owntracks/a/phone",
    }  # fmt: skip
