"""Job-completion callbacks: URL policy, signed delivery, retries, no blocking."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from shared.callbacks import (
    CallbackPolicy,
    check_addresses,
    parse_callback_url,
    sign,
    validate_callback_url,
    verify,
)
from shared.config import Settings
from shared.errors import InvalidRequest
from tests.conftest import CALLBACK_SECRET, FIXTURES, wait_for_job
from tests.fixtures.datasets import pneumonia_tiny_zip

PNG = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"
RECEIVER_HOST = "127.0.0.2"  # allow-listed by address in tests/conftest.py


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    port: int
    requests: list[Received] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)  # path -> 500s to answer

    def url(self, path: str) -> str:
        return f"http://{RECEIVER_HOST}:{self.port}{path}"

    def wait_for(self, path: str, count: int = 1, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = [r for r in self.requests if r.path == path]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{count} callback(s) to {path} not received in {timeout}s")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.startswith("/slow"):
                time.sleep(4)  # longer than the sender's 2 s timeout
            state.requests.append(Received(self.path, dict(self.headers), body, time.time()))
            failing = state.failures_left.get(self.path, 0)
            state.failures_left[self.path] = max(failing - 1, 0)
            self.send_response(500 if failing else 204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((RECEIVER_HOST, 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()


def _submit(api: httpx.Client, callback_url: str | None = None) -> httpx.Response:
    data = {"model": "pneumonia-resnet18"}
    if callback_url is not None:
        data["callback_url"] = callback_url
    files = [("files", (PNG.name, PNG.read_bytes(), "image/png"))]
    return api.post("/v1/jobs", data=data, files=files)


def _wait_callback_status(api: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        callback: dict = api.get(f"/v1/jobs/{job_id}").json()["callback"]
        if callback["status"] in ("delivered", "failed"):
            return callback
        time.sleep(0.1)
    raise AssertionError(f"callback of {job_id} still {callback} after {timeout}s")


def _policy(*hosts: str, allow_http: bool = False, blocked: tuple[str, ...] = ()) -> Settings:
    return Settings(
        callback_allowed_hosts=list(hosts),
        callback_allow_http=allow_http,
        callback_blocked_cidrs=list(blocked),
        callback_secret="s" * 32,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.org/x", "must use https"),
        ("https://user:pw@hooks.example.org/x", "credentials"),
        ("https://evil.example.com/x", "allow-list"),
        ("https://example.org.evil.com/x", "allow-list"),
        ("https://169.254.169.254/latest/meta-data", "allow-list"),
        ("https://[::ffff:10.0.0.1]/x", "allow-list"),
        ("https:///x", "no host"),
    ],
)
def test_policy_refuses_urls_outside_the_allow_list(url: str, message: str) -> None:
    policy = CallbackPolicy.from_settings(_policy("hooks.example.org", "*.example.org"))
    with pytest.raises(InvalidRequest, match=message):
        parse_callback_url(url, policy)


def test_policy_allows_listed_names_wildcards_and_cidrs() -> None:
    policy = CallbackPolicy.from_settings(
        _policy("hooks.example.org", "*.example.org", "10.2.0.0/16")
    )
    for url in (
        "https://hooks.example.org/a",
        "https://a.b.example.org:8443/",
        "https://10.2.3.4/",
    ):
        assert parse_callback_url(url, policy).url == url
    target = parse_callback_url("https://a.example.org/", policy)
    assert check_addresses(target, ["93.184.215.14"], policy)
    assert check_addresses(target, ["10.2.0.9"], policy)  # private, but allow-listed by CIDR
    for internal in ("10.3.0.1", "127.0.0.1", "169.254.169.254", "::1", "fd00::1", "100.64.0.1"):
        with pytest.raises(InvalidRequest, match="internal address"):
            check_addresses(target, ["93.184.215.14", internal], policy)  # any one refuses
    blocked = CallbackPolicy.from_settings(_policy("*.example.org", blocked=("93.184.0.0/16",)))
    with pytest.raises(InvalidRequest, match="internal address"):
        check_addresses(target, ["93.184.215.14"], blocked)


def test_callbacks_are_refused_when_no_host_is_allowed() -> None:
    with pytest.raises(InvalidRequest, match="disabled"):
        validate_callback_url("https://hooks.example.org/", Settings(callback_allowed_hosts=[]))


def test_signature_verifies_and_rejects_tampering_and_replays() -> None:
    body, now = b'{"id":"1"}', 1_900_000_000
    signature = sign("k", now, body)
    assert signature.startswith("v1=") and verify("k", str(now), signature, body, now=now + 10)
    assert not verify("k", str(now), signature, b'{"id":"2"}', now=now)
    assert not verify("other", str(now), signature, body, now=now)
    assert not verify("k", str(now), signature, body, now=now + 301)
    assert not verify("k", "not-a-time", signature, body, now=now)


def test_finished_job_posts_a_signed_summary_without_results(
    api: httpx.Client, receiver: Receiver
) -> None:
    created = _submit(api, receiver.url("/ok"))
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert created.json()["callback"] == {
        "url": receiver.url("/ok"),
        "status": "waiting",
        "attempts": 0,
        "last_error": None,
        "next_attempt_at": None,
        "delivered_at": None,
    }
    job = wait_for_job(api, job_id)
    (request,) = receiver.wait_for("/ok")
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify(
        CALLBACK_SECRET, headers["x-medimg-timestamp"], headers["x-medimg-signature"], request.body
    )
    body = json.loads(request.body)
    assert body["id"] == job_id and body["status"] == job["status"] == "succeeded"
    assert body["event"] == "job.finished" and body["model"] == job["model"]["ref"]
    assert body["result_path"] == f"/v1/jobs/{job_id}" and body["delivery_id"]
    assert not {"images", "output", "probabilities", "filename"} & set(body)
    callback = _wait_callback_status(api, job_id)
    assert callback["status"] == "delivered" and callback["attempts"] == 1


def test_a_failed_attempt_is_retried_with_backoff(api: httpx.Client, receiver: Receiver) -> None:
    receiver.failures_left["/flaky"] = 1
    job_id = _submit(api, receiver.url("/flaky")).json()["id"]
    first, second = receiver.wait_for("/flaky", count=2)
    assert second.at - first.at >= 0.15  # backoff 0.3 s x jitter 0.5..1
    callback = _wait_callback_status(api, job_id)
    assert callback["status"] == "delivered" and callback["attempts"] == 2
    assert callback["last_error"] is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://evil.example.com/hook", "allow-list"),
        ("http://10.0.0.5/hook", "allow-list"),
        ("http://169.254.169.254/latest/meta-data/", "allow-list"),
        ("ftp://127.0.0.2/hook", "must use"),
    ],
)
def test_disallowed_callback_url_is_a_422(api: httpx.Client, url: str, message: str) -> None:
    response = _submit(api, url)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert message in response.json()["detail"]


def test_allowed_name_resolving_to_a_private_address_is_a_422(
    api: httpx.Client, receiver: Receiver
) -> None:
    # `localhost` is allow-listed by name, but 127.0.0.1 is not an allowed address.
    response = _submit(api, f"http://localhost:{receiver.port}/hook")
    assert response.status_code == 422, response.text
    assert "internal address" in response.json()["detail"]


def test_a_slow_receiver_delays_neither_workers_nor_other_callbacks(
    api: httpx.Client, receiver: Receiver
) -> None:
    slow = _submit(api, receiver.url("/slow")).json()["id"]
    wait_for_job(api, slow)
    started = time.monotonic()
    fast = _submit(api, receiver.url("/fast")).json()["id"]
    wait_for_job(api, fast)
    assert time.monotonic() - started < 3  # the worker went on while /slow hangs
    (fast_request,) = receiver.wait_for("/fast", timeout=10)
    first_slow = receiver.wait_for("/slow", timeout=15)[0]
    assert fast_request.at < first_slow.at  # delivered while the slow one was still hanging
    callback = api.get(f"/v1/jobs/{slow}").json()["callback"]
    assert callback["status"] == "pending" and "Timeout" in callback["last_error"]


def test_training_job_callback_on_cancel_and_policy(api: httpx.Client, receiver: Receiver) -> None:
    upload = api.post(
        "/v1/datasets",
        data={"name": "callback-training"},
        files={"file": ("data.zip", pneumonia_tiny_zip(), "application/zip")},
    )
    assert upload.status_code == 202, upload.text
    deadline = time.monotonic() + 90
    while (version := api.get(upload.headers["Location"]).json())["status"] == "importing":
        assert time.monotonic() < deadline, "dataset import did not finish"
        time.sleep(0.2)
    assert version["status"] == "ready", version
    body = {"dataset": "callback-training", "params": {"epochs": 1, "image_size": 32}}

    refused = api.post("/v1/training-jobs", json={**body, "callback_url": "http://10.0.0.7/hook"})
    assert refused.status_code == 422
    assert refused.headers["content-type"].startswith("application/problem+json")

    created = api.post(
        "/v1/training-jobs", json={**body, "callback_url": receiver.url("/training")}
    )
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert api.post(f"/v1/training-jobs/{job_id}/cancel").status_code == 200

    (request,) = receiver.wait_for("/training")
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert verify(
        CALLBACK_SECRET, headers["x-medimg-timestamp"], headers["x-medimg-signature"], request.body
    )
    payload = json.loads(request.body)
    assert payload["kind"] == "training_job" and payload["id"] == job_id
    assert payload["status"] == "cancelled"
    assert payload["result_path"] == f"/v1/training-jobs/{job_id}"
