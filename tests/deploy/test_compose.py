"""docker-compose.yml: service commands, metrics, health checks and ordering, GPU profile,
images, volumes and environment.
"""

from __future__ import annotations

import re
from typing import Any

from tests.deploy.manifests import (
    GPU_PODS,
    REPO,
    SECRETS,
    STORE_DIR,
    WORKER_METRICS_PORT,
    assert_ping_probe,
    celery_node,
    expected_services,
    py,
)


def test_compose_services_run_the_services_commands(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert set(svc) == {"postgres", "redis", *expected_services()}
    for name, expected in expected_services().items():
        assert svc[name]["command"] == py(expected.argv), name
        env = svc[name]["environment"]
        for key, value in expected.env.items():
            assert env[key] == value, (name, key)
        assert {"DATABASE_URL", "REDIS_URL"} <= env.keys(), name
        assert f"store:{STORE_DIR}" in svc[name]["volumes"], name
        assert env["MEDIMG_STORE_DIR"] == STORE_DIR, name


def test_compose_worker_metrics(compose: dict[str, Any]) -> None:
    """The inference workers serve metrics on the compose network, not on the host."""
    svc = compose["services"]
    for name, s in svc.items():
        metrics = name in ("worker-cpu", "worker-gpu")
        assert s.get("expose", []) == ([str(WORKER_METRICS_PORT)] if metrics else []), name
        env = s.get("environment", {})
        assert ("MEDIMG_WORKER_METRICS_PORT" in env) == metrics, name
        if name not in ("api", "gateway"):  # the gateway: the PACS's DICOM port
            assert "ports" not in s, name
    assert svc["api"]["ports"] == ["${API_BIND:-127.0.0.1}:${API_PORT:-8000}:8000"]


def test_compose_health_and_ordering(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    completed = {
        dep
        for s in svc.values()
        for dep, cond in s.get("depends_on", {}).items()
        if cond["condition"] == "service_completed_successfully"
    }
    for name, s in svc.items():
        if s.get("restart") == "no":
            assert name in completed and "healthcheck" not in s, name  # one-shot
        else:
            assert s["healthcheck"]["test"], name
            assert s["restart"] == "unless-stopped", name
    assert completed == {"migrate"}
    for name in ("api", "worker-cpu", "worker-gpu", "worker-datasets", "trainer", "trainer-gpu"):
        deps = svc[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
    assert svc["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("worker-cpu", "worker-gpu", "worker-datasets", "trainer", "trainer-gpu"):
        queue = celery_node(py(expected_services()[name].argv))
        test = svc[name]["healthcheck"]["test"]
        assert test[0] == "CMD", name
        assert_ping_probe(test[1:], queue)
    assert "/readyz" in svc["api"]["healthcheck"]["test"][-1]


def test_compose_gpu_services_only_under_gpu_profile(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    for name, s in svc.items():
        assert s.get("profiles", []) == (["gpu"] if name in GPU_PODS else []), name
    for name in GPU_PODS:
        (device,) = svc[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert svc[name]["build"]["target"] == "cuda", name
    assert "deploy" not in svc["worker-cpu"] and "deploy" not in svc["trainer"]


def test_compose_images_volumes_and_env(compose: dict[str, Any]) -> None:
    svc = compose["services"]
    assert re.fullmatch(r"postgres:\d+\.\d+-\w+", svc["postgres"]["image"])
    assert re.fullmatch(r"valkey/valkey:\d+\.\d+\.\d+-\w+", svc["redis"]["image"])
    assert "--appendonly yes" in " ".join(svc["redis"]["command"])
    assert set(compose["volumes"]) == {"pgdata", "redisdata", "store"}
    targets = {name: s["build"]["target"] for name, s in svc.items() if "build" in s}
    assert targets == {
        "migrate": "api",
        "api": "api",
        "worker-cpu": "cpu",
        "worker-datasets": "cpu",
        "trainer": "cpu",
        "worker-gpu": "cuda",
        "trainer-gpu": "cuda",
    }
    # Every variable the compose file interpolates is documented in .env.example ($$ escapes).
    text = (REPO / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", text))
    example = (REPO / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", example, re.MULTILINE))
    assert used == documented
    # Passwords and secrets: empty in the example (no real secret in git), required by compose.
    for name in SECRETS:
        assert re.search(rf"^{name}=$", example, re.MULTILINE), name
        assert re.search(rf"\$\{{{name}:\?", text), name
