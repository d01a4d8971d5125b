"""Idempotency-Key and request-size limits: retries never make a second job."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from cli.stack import Stack
from tests.conftest import MAX_REQUEST_BYTES, KeyFactory, client_for, wait_for_job
from tests.factories import MODEL, assert_problem, image_files, labelled_pngs


def _post(client: httpx.Client, key: str, *paths, model: str = MODEL) -> httpx.Response:  # type: ignore[no-untyped-def]
    return client.post(
        "/v1/jobs",
        data={"model": model},
        files=image_files(*paths),
        headers={"Idempotency-Key": key},
    )


def test_a_retry_gets_the_original_response(stack: Stack, make_key: KeyFactory) -> None:
    path, _ = labelled_pngs()[0]
    key = str(uuid.uuid4())
    with client_for(stack, make_key(tenant=f"idem-{key[:8]}")) as c:
        first = _post(c, key, path)
        second = _post(c, key, path)  # new multipart boundary, same request
        assert first.status_code == second.status_code == 202
        assert second.json() == first.json()
        assert second.headers["location"] == first.headers["location"]
        assert second.headers["idempotent-replayed"] == "true"
        assert len(c.get("/v1/jobs").json()["items"]) == 1
        wait_for_job(c, first.json()["id"])


def test_same_key_with_a_different_request_is_422(api: httpx.Client) -> None:
    (a, _), (b, _) = labelled_pngs()[:2]
    key = str(uuid.uuid4())
    assert _post(api, key, a).status_code == 202
    body = assert_problem(_post(api, key, b), 422, "idempotency-key-reused")
    assert "different request" in body["detail"]
    assert_problem(_post(api, "bad key with spaces", a), 422, "invalid-idempotency-key")


def test_failed_requests_are_not_stored(api: httpx.Client) -> None:
    path, _ = labelled_pngs()[0]
    key = str(uuid.uuid4())
    assert_problem(_post(api, key, path, model="no-such-model"), 404, "model-not-found")
    # A 4xx that is the client's final answer is replayed, not re-run.
    replay = _post(api, key, path, model="no-such-model")
    assert replay.status_code == 404 and replay.headers["idempotent-replayed"] == "true"


def test_two_hundred_concurrent_identical_requests_make_one_job(
    stack: Stack, make_key: KeyFactory
) -> None:
    path, _ = labelled_pngs()[0]
    tenant, key = f"burst-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    secret = make_key(tenant=tenant)

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        headers = {"Authorization": f"Bearer {secret}", "Idempotency-Key": key}
        async with httpx.AsyncClient(
            base_url=stack.api_url, headers=headers, limits=limits, timeout=120
        ) as c:
            return await asyncio.gather(
                *(
                    c.post("/v1/jobs", data={"model": MODEL}, files=image_files(path))
                    for _ in range(200)
                )
            )

    responses = asyncio.run(burst())
    statuses = {r.status_code for r in responses}
    ids = {r.json()["id"] for r in responses if r.status_code == 202}
    print(f"200 concurrent requests: statuses {statuses}, distinct job ids {len(ids)}")
    assert statuses == {202} and len(ids) == 1
    with client_for(stack, secret) as c:
        assert [j["id"] for j in c.get("/v1/jobs").json()["items"]] == list(ids)


def test_oversized_request_is_413_problem(api: httpx.Client) -> None:
    path, _ = labelled_pngs()[0]
    big = ("files", ("big.png", b"\0" * (MAX_REQUEST_BYTES + 1024), "image/png"))
    response = api.post("/v1/jobs", data={"model": MODEL}, files=[*image_files(path), big])
    assert response.status_code == 413, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert api.get("/healthz").status_code == 200


def test_oversized_streamed_request_is_413_with_or_without_idempotency_key(
    api: httpx.Client,
) -> None:
    def chunks():  # type: ignore[no-untyped-def]  # no Content-Length: counted while read
        yield (
            b'--x\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
        )
        for _ in range(MAX_REQUEST_BYTES // (1 << 20) + 2):
            yield b"\0" * (1 << 20)

    headers = {"Content-Type": "multipart/form-data; boundary=x"}
    for extra in ({}, {"Idempotency-Key": str(uuid.uuid4())}):
        response = api.post("/v1/jobs", content=chunks(), headers={**headers, **extra})
        assert_problem(response, 413, "payload-too-large")
