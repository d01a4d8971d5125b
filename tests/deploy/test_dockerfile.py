"""The Dockerfile: hadolint, base images and stages, a torch-free API image, .dockerignore."""

from __future__ import annotations

import json
import re
import subprocess

from cli import services
from tests.deploy.manifests import (
    HADOLINT,
    REPO,
    STORE_DIR,
    dockerfile_stages,
    dockerignored,
    instruction,
    lock_closure,
    py,
)


def test_hadolint_reports_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--format", "json", str(REPO / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_dockerfile_images() -> None:
    stages = dockerfile_stages()
    assert {"api", "cpu", "cuda"} <= stages.keys()
    for line in (s[0] for s in stages.values()):
        image = line.split()[1]
        if image not in stages:  # an external base image: pinned to a version
            assert re.fullmatch(r"[\w./-]+:\d[\w.-]*", image), line
    runtime = stages["runtime"]
    assert instruction(runtime, "USER") == ["10001:10001"]
    env = " ".join(instruction(runtime, "ENV"))
    assert "MEDIMG_BUNDLED_MODELS_DIR=/app/models" in env
    assert f"MEDIMG_STORE_DIR={STORE_DIR}" in env
    assert "models/ /app/models/" in instruction(runtime, "COPY")
    syncs = {
        name: [r for r in instruction(stage, "RUN") if "uv sync" in r]
        for name, stage in stages.items()
    }
    for name in ("build-api", "build-ml"):
        assert syncs[name] and all("--frozen --no-dev" in r for r in syncs[name]), name
    assert all("--package medimg-api" in r and "medimg-worker" not in r for r in syncs["build-api"])
    expected = {
        "api": ("build-api", py(services.api(host="0.0.0.0", port=8000).argv)),
        "cpu": ("build-ml", py(services.worker("cpu", 2).argv)),
        "cuda": ("build-ml", py(services.worker("gpu", 2).argv)),
    }
    for name, (build, argv) in expected.items():
        stage = stages[name]
        assert stage[0] == f"FROM runtime AS {name}"
        assert instruction(stage, "COPY") == [f"--from={build} /opt/venv /opt/venv"], name
        assert json.loads(instruction(stage, "CMD")[-1]) == argv, name
        (healthcheck,) = instruction(stage, "HEALTHCHECK")
        probe = json.loads(healthcheck[healthcheck.index("CMD ") + 4 :])
        if name == "api":
            assert "http://127.0.0.1:8000/healthz" in probe[-1]
        else:
            compile(probe[-1], "<healthcheck>", "exec")
            assert probe[:2] == ["python", "-c"] and "control.ping(" in probe[-1]
    # No build tooling in the final stages: uv and the source tree stay in the build stages.
    for name in ("runtime", "api", "cpu", "cuda"):
        assert not any("uv" in line.split() for line in stages[name]), name
        assert not any("apt-get" in line for line in stages[name]), name


def test_api_image_installs_no_torch() -> None:
    api = lock_closure("medimg-api")
    assert {"fastapi", "uvicorn", "medimg-shared"} <= api
    assert not {"torch", "torchvision", "triton"} & api
    assert "torch" in lock_closure("medimg-worker")


def test_dockerignore_keeps_the_context_to_what_the_build_copies() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".tools/checkov/bin/checkov",
        "var/store/blob",
        "tests/fixtures/README.md",
        "bench/results/run.json",
        ".env",
        "shared/src/shared/__pycache__/config.cpython-311.pyc",
    ):
        assert dockerignored(path), path
    for path in (
        "pyproject.toml",
        "uv.lock",
        "shared/pyproject.toml",
        "shared/src/shared/config.py",
        "services/api/src/api/main.py",
        "models/README.md",
    ):
        assert not dockerignored(path), path
