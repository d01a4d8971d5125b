"""Fixtures of the deployment-file tests: the rendered overlays (once per session), the
parsed docker-compose.yml and the API's public paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    K8S,
    NAMESPACE,
    REPO,
    kustomize,
)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """The dev and prod overlays; prod with the HPA component instead of KEDA; prod with the
    Prometheus Operator's PodMonitors; prod training on GPUs with the ImageNet cache, with KEDA
    and with the HPA component (components in the order their comments prescribe)."""

    def prod_with(*components: str) -> list[dict[str, Any]]:
        overlay = tmp_path_factory.mktemp("prod-" + "-".join(components))
        k8s = os.path.relpath(K8S, overlay)  # kustomize refuses absolute paths to bases
        (overlay / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": NAMESPACE,
                    "resources": [f"{k8s}/overlays/prod"],
                    "components": [f"{k8s}/components/{c}" for c in components],
                }
            )
        )
        return kustomize(overlay)

    return {
        "dev": kustomize(K8S / "overlays" / "dev"),
        "prod": kustomize(K8S / "overlays" / "prod"),
        "prod-hpa": prod_with("hpa"),
        "prod-podmonitor": prod_with("podmonitor"),
        "prod-gpu": prod_with("gpu-training", "torch-cache"),
        "prod-gpu-hpa": prod_with("gpu-training", "hpa", "torch-cache"),
    }


@pytest.fixture(scope="module")
def api_paths() -> dict[str, Any]:
    """The API app's public paths (its OpenAPI paths and docs pages) and its metrics path.

    In a subprocess: create_app() replaces the root logger's handlers.
    """
    code = (
        "import json; from api.main import create_app; app = create_app(); "
        # The docs pages are the platform's own routes (offline assets), not FastAPI's.
        "public = [*app.openapi()['paths'], app.openapi_url, '/docs', '/redoc']; "
        "print(json.dumps({'public': public, 'metrics': app.url_path_for('metrics')}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())
