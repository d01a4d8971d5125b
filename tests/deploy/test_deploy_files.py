"""Static checks of the deployment files: Dockerfile, docker-compose.yml and k8s/.

No Docker engine and no cluster are needed: kustomize renders the overlays, kubernetes-validate
checks every rendered object against the Kubernetes OpenAPI schema, hadolint and checkov lint,
and every service command is compared with `cli.services`, the commands `make run` and the
test suite start on the host.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cli import services
from shared.config import Settings
from shared.db.models import JobStatus, TrainingJob
from shared.queueing import PRIORITY_STEPS, make_celery

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"
HADOLINT = BIN / "hadolint"
CHECKOV = REPO / ".tools" / "checkov" / "bin" / "checkov"
K8S = REPO / "k8s"
STORE_DIR = "/data/store"
NAMESPACE = "medimg"
API_PORT = 8000
WORKER_METRICS_PORT = 9101
METRICS_PATH = "/metrics"
# The namespace label that admits Prometheus (README "Deploy": a one-time cluster step).
MONITORING_LABEL = {"medimg.io/monitoring": "true"}
# What each scraped pod serves its metrics on: container port name and number.
SCRAPED = {
    "api": ("http", API_PORT),
    "worker-cpu": ("metrics", WORKER_METRICS_PORT),
    "worker-gpu": ("metrics", WORKER_METRICS_PORT),
    "gateway": ("metrics", 9102),  # MEDIMG_GATEWAY_HTTP_PORT
}

# Schemas are checked for the oldest Kubernetes the manifests target and the newest that
# kubernetes-validate ships.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.utils.latest_version()]
# Custom resources have no schema in kubernetes-validate; KEDA's and the Prometheus
# Operator's are skipped.
CRD_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}

# Checkov 3 open source reports no severities offline, so the gate is stricter than "no
# HIGH/CRITICAL": no failed check at all, except these, each for a stated reason.
CHECKOV_ALLOWED = {
    "CKV_K8S_43": (
        "Image should use digest: the images are built by the operator, so no digest exists "
        "in git; the prod overlay's `images:` is where the pushed digest is pinned"
    ),
    "CKV_K8S_35": (
        "Secrets as files rather than env: shared.config (pydantic-settings) reads "
        "DATABASE_URL/REDIS_URL from the environment, as do the postgres/valkey images; "
        "the values come from a Secret, never from the manifests"
    ),
}
CHECKOV_ALLOWED_DEV = {
    "CKV_K8S_15": (
        "imagePullPolicy Always: the dev overlay runs images loaded into the node "
        "(kind load, minikube image load), which a forced pull would not find"
    ),
}

PLATFORM_DEPLOYMENTS = {"api", "worker-cpu", "worker-gpu", "worker-datasets", "trainer", "gateway"}
# With components/gpu-training, trainer-gpu takes the `train` queue instead of trainer.
GPU_TRAINING_DEPLOYMENTS = PLATFORM_DEPLOYMENTS - {"trainer"} | {"trainer-gpu"}
GPU_PODS = {"worker-gpu", "trainer-gpu"}
# Rendered variants that include components/gpu-training.
GPU_TRAINING_VARIANTS = {"prod-gpu", "prod-gpu-hpa"}
TORCH_HOME = "/opt/torch-cache"


# Empty in .env.example, required by docker-compose.yml (`${NAME:?...}`).
SECRETS = (
    "POSTGRES_PASSWORD",
    "REDIS_PASSWORD",
    "MEDIMG_CALLBACK_SECRET",
    "MEDIMG_DEIDENTIFY_UID_SALT",
)
# Settings only the API process is given (compose x-api-env, ConfigMap medimg-api-config,
# Secret medimg-api-secrets); the callback ones must stay there, since shared.config refuses an
# allow-list in a process that has no MEDIMG_CALLBACK_SECRET.
API_SECRETS = {"MEDIMG_CALLBACK_SECRET", "MEDIMG_DEIDENTIFY_UID_SALT"}
API_ONLY_PREFIXES = ("MEDIMG_CALLBACK_",)
# .env.example variables that configure compose itself rather than a Settings field the same way
# everywhere (Kubernetes sets these per Deployment or not at all).
COMPOSE_ONLY = {"MEDIMG_VERSION", "MEDIMG_GPU_DEVICE", "MEDIMG_TRAINER_GPU_DEVICE"}
COMPOSE_ONLY |= {"MEDIMG_TORCH_THREADS"}  # per Deployment in k8s: its CPU limit
# Settings fields deliberately absent from .env.example, each for a reason. A new setting must
# be documented in .env.example (and passed by compose and k8s) or be listed here.
SET_BY_DEPLOYMENT = {
    "environment": "production, by the images, compose and the ConfigMap",
    "database_url": "built from the passwords (compose) or Secret medimg-connections",
    "redis_url": "built from the passwords (compose) or Secret medimg-connections",
    "data_dir": "/data in the images; only the embedded launcher writes under it",
    "store_dir": "/data/store, the store volume's mount point",
    "bundled_models_dir": "/app/models in the images",
    "worker_metrics_port": "9101 on the inference workers, per service",
}
ADVANCED = {
    "json_logs": "JSON lines are what log shippers want; plain text is for a terminal",
    "cross_job_batching": "a switch for bench comparisons and latency debugging; on",
    "zip_ratio_min_bytes": "bomb-ratio floor; internal tuning of the zip checks",
    "callback_timeout_seconds": "delivery tuning, see docs/security.md",
    "callback_max_attempts": "delivery tuning, see docs/security.md",
    "callback_backoff_seconds": "delivery tuning, see docs/security.md",
    "callback_backoff_max_seconds": "delivery tuning, see docs/security.md",
    "callback_poll_seconds": "delivery tuning, see docs/security.md",
    "idempotency_cleanup_seconds": "how often expired records are deleted, not how long kept",
    "reconcile_grace_seconds": "tied to broker latency, see docs/reliability.md",
    "infer_soft_time_limit": "must stay below the broker visibility timeout (code constant)",
    "infer_hard_time_limit": "must stay below the broker visibility timeout (code constant)",
    "import_soft_time_limit": "must stay below the broker visibility timeout (code constant)",
    "import_hard_time_limit": "must stay below the broker visibility timeout (code constant)",
    "metrics_token": "a secret: set it in the API's Secret when /metrics is reachable beyond "
    "the NetworkPolicies, and give Prometheus the same bearer token (docs/security.md)",
}


def deployments_of(overlay: str) -> set[str]:
    return GPU_TRAINING_DEPLOYMENTS if overlay in GPU_TRAINING_VARIANTS else PLATFORM_DEPLOYMENTS


def py(argv: list[str]) -> list[str]:
    """A cli.services argv as a container runs it: `python` instead of this interpreter."""
    assert argv[0] == sys.executable
    return ["python", *argv[1:]]


def expected_services() -> dict[str, services.Service]:
    """Each deployed service and the cli.services call it must equal."""
    return {
        "migrate": services.migrate(),
        # In a container the API listens on every interface of its own network namespace.
        "api": services.api(host="0.0.0.0", port=API_PORT),
        # The deployments turn the workers' metrics endpoint on (MEDIMG_WORKER_METRICS_PORT).
        "worker-cpu": services.worker("cpu", 2, WORKER_METRICS_PORT),
        "worker-gpu": services.worker("gpu", 2, WORKER_METRICS_PORT),
        "worker-datasets": services.dataset_worker(),
        "trainer": services.trainer(),
        # The same trainer command from the cuda image, on a GPU.
        "trainer-gpu": services.trainer(),
        # The DICOM node listens on every interface of its network namespace.
        "gateway": services.gateway(bind="0.0.0.0", dicom_port=11112, http_port=9102),
    }


def celery_node(argv: list[str]) -> str:
    """The queue part of the node name the command gives itself (`-n cpu@%h` -> `cpu`)."""
    name = argv[argv.index("-n") + 1]
    queue, host = name.split("@")
    assert host == "%h"
    return queue


PROBE_NODE = re.compile(r"destination=\['(?P<queue>[a-z]+)@' \+ socket\.gethostname\(\)\]")


def assert_ping_probe(argv: list[str], queue: str) -> None:
    """A `celery inspect ping` of exactly the node `-n <queue>@%h` names.

    Celery expands %h to socket.gethostname(), which the probe uses too; the app comes from
    shared.queueing so that the broker transport options match the workers'.
    """
    assert argv[:2] == ["python", "-c"], argv
    code = argv[2]
    compile(code, "<probe>", "exec")
    match = PROBE_NODE.search(code)
    assert match and match["queue"] == queue, code
    assert "from shared.queueing import make_celery" in code
    assert "os.environ['REDIS_URL']" in code and "control.ping(" in code
    assert "worker.celery_app" not in code, "importing the worker app loads torch per probe"


# --------------------------------------------------------------------------------------------
# Kubernetes
# --------------------------------------------------------------------------------------------


def config_maps(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ConfigMaps medimg-config (every platform pod) and medimg-api-config (the API)."""
    by_base = {name.rsplit("-", 1)[0]: cm for name, cm in objects(docs, "ConfigMap").items()}
    return by_base["medimg-config"], by_base["medimg-api-config"]


def kustomize(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run(
        [str(KUBECTL), "kustomize", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
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


def objects(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def templates(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each workload's pod template (metadata and spec)."""
    for d in docs:
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}:
            yield d["metadata"]["name"], d["spec"]["template"]


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, template in templates(docs):
        yield name, template["spec"]


def test_overlays_render_the_platform(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        assert set(objects(docs, "Deployment")) == deployments_of(overlay), overlay
        assert set(objects(docs, "Job")) == {"migrate"}, overlay
        assert set(objects(docs, "Service")) >= {"api"}, overlay
        assert set(objects(docs, "Ingress")) == {"api"}, overlay
        assert set(objects(docs, "PodDisruptionBudget")) == deployments_of(overlay), overlay
        assert set(objects(docs, "Namespace")) == {NAMESPACE}, overlay
        for d in docs:
            if d["kind"] != "Namespace":
                assert d["metadata"].get("namespace") == NAMESPACE, (overlay, d["metadata"])
    dev, prod = rendered["dev"], rendered["prod"]
    assert set(objects(dev, "StatefulSet")) == {"postgres", "redis"}
    for statefulset in objects(dev, "StatefulSet").values():
        assert statefulset["spec"]["volumeClaimTemplates"], "in-cluster data needs a PVC"
    assert not objects(prod, "StatefulSet"), "prod uses managed PostgreSQL and Redis"
    assert set(objects(prod, "ScaledObject")) == {"worker-cpu", "worker-gpu"}
    assert objects(prod, "Ingress")["api"]["spec"]["tls"] == [{"secretName": "medimg-tls"}]
    assert set(objects(rendered["prod-gpu"], "ScaledObject")) == {
        "worker-cpu",
        "worker-gpu",
        "trainer-gpu",
    }
    for overlay in ("prod-hpa", "prod-gpu-hpa"):
        docs = rendered[overlay]
        assert not objects(docs, "ScaledObject") and not objects(docs, "TriggerAuthentication")
        assert set(objects(docs, "HorizontalPodAutoscaler")) == {"worker-cpu"}
    for overlay, docs in rendered.items():
        expected = {"api", "workers", "gateway"} if overlay == "prod-podmonitor" else set()
        assert set(objects(docs, "PodMonitor")) == expected, overlay


def test_rendered_objects_match_the_kubernetes_schema(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    checked = 0
    for overlay, docs in rendered.items():
        for doc in docs:
            if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
                continue
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    name = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
                    at = "/".join(map(str, exc.path))
                    pytest.fail(f"{name} invalid for Kubernetes {version} at {at}: {exc.message}")
                checked += 1
    assert checked > 50


def test_k8s_commands_are_the_services_commands(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    expected = expected_services()
    for overlay, docs in rendered.items():
        for name, pod in workloads(docs):
            if name not in expected:
                continue  # dev's postgres and redis run their images' own commands
            (container,) = pod["containers"]
            argv = container.get("command", []) + container.get("args", [])
            assert argv == py(expected[name].argv), (overlay, name)
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            for key, value in expected[name].env.items():
                assert env.get(key) == value, (overlay, name, key)
            assert {"DATABASE_URL", "REDIS_URL"} <= env.keys(), (overlay, name)


def test_k8s_probes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    expected = expected_services()
    for docs in rendered.values():
        for name, pod in workloads(docs):
            if name == "migrate":
                continue  # one-shot
            (container,) = pod["containers"]
            assert "readinessProbe" in container and "livenessProbe" in container, name
            if name == "api":
                assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
                assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
            elif name == "gateway":
                continue  # HTTP probes on its metrics port: tests/deploy/test_gateway_deploy.py
            elif name in expected:
                queue = celery_node(expected[name].argv)
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    assert_ping_probe(container[probe]["exec"]["command"], queue)


def test_k8s_pods_are_hardened(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        for name, pod in workloads(docs):
            where = (overlay, name)
            assert pod["automountServiceAccountToken"] is False, where
            psc = pod["securityContext"]
            assert psc["runAsNonRoot"] is True and psc["runAsUser"] >= 10000, where
            assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False, where
                assert sc["readOnlyRootFilesystem"] is True, where
                assert sc["capabilities"] == {"drop": ["ALL"]}, where
                for section in ("requests", "limits"):
                    assert {"cpu", "memory"} <= c["resources"][section].keys(), where
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                if name in deployments_of(overlay) | {"migrate"}:
                    assert "emptyDir" in volumes[mounts["/tmp"]], where


def test_k8s_store_is_one_shared_volume(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        config, api_config = config_maps(docs)
        assert config["data"]["MEDIMG_STORE_DIR"] == STORE_DIR
        for name, pod in workloads(docs):
            if name not in deployments_of(overlay) | {"migrate"}:
                continue
            volumes = {v["name"]: v for v in pod["volumes"]}
            (container,) = pod["containers"]
            expected = [config] + ([api_config] if name == "api" else [])
            assert [e["configMapRef"]["name"] for e in container["envFrom"]] == [
                c["metadata"]["name"] for c in expected
            ], (overlay, name)
            (store,) = [m for m in container["volumeMounts"] if m["mountPath"] == STORE_DIR]
            claim = volumes[store["name"]]["persistentVolumeClaim"]["claimName"]
            assert claim == "medimg-store", (overlay, name)
    pvc = objects(rendered["prod"], "PersistentVolumeClaim")["medimg-store"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "workers on other nodes read it"


def test_k8s_gpu_pods_land_on_gpu_nodes(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        deployments = objects(docs, "Deployment")
        for name in deployments.keys() & GPU_PODS:
            pod = deployments[name]["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            assert container["image"].startswith("medimg-cuda:"), (overlay, name)
            assert container["resources"]["limits"]["nvidia.com/gpu"] == "1", (overlay, name)
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod[
                "tolerations"
            ], (overlay, name)
            assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}, (overlay, name)
        for other in deployments.keys() - GPU_PODS:
            spec = deployments[other]["spec"]["template"]["spec"]
            assert "nvidia.com/gpu" not in str(spec), (overlay, other)


def test_keda_scales_each_worker_on_all_its_priority_lists(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    # The Redis list names come from the broker config the workers use.
    sep = make_celery("probe", "redis://unused").conf.broker_transport_options["sep"]
    for overlay in ("dev", "prod", "prod-gpu"):
        docs = rendered[overlay]
        deployments = objects(docs, "Deployment")
        auth = objects(docs, "TriggerAuthentication")["medimg-redis"]
        assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {
            "address",
            "password",
            "tls",
        }
        for name, scaled in objects(docs, "ScaledObject").items():
            if name == "trainer-gpu":
                continue  # on the job table: test_keda_scales_the_gpu_trainer_on_training_jobs
            target = scaled["spec"]["scaleTargetRef"]["name"]
            assert target == name and "replicas" not in deployments[target]["spec"]
            queue = celery_node(expected_services()[name].argv)
            lists = {queue if p == 0 else f"{queue}{sep}{p}" for p in PRIORITY_STEPS}
            triggers = scaled["spec"]["triggers"]
            assert {t["metadata"]["listName"] for t in triggers} == lists, name
            assert all(t["type"] == "redis" for t in triggers)
            assert all(t["authenticationRef"]["name"] == "medimg-redis" for t in triggers)
            # The HPA takes the largest of several metrics; the formula makes it the sum.
            formula = scaled["spec"]["advanced"]["scalingModifiers"]["formula"]
            assert sorted(formula.replace(" ", "").split("+")) == sorted(
                t["name"] for t in triggers
            )


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches `labels` ({} matches everything)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def admitted(
    policies: dict[str, dict[str, Any]],
    pod: dict[str, str],
    namespace: dict[str, str],
    source: dict[str, str],
) -> set[tuple[str, int | str]]:
    """The (protocol, port) pairs a pod labelled `pod` in NAMESPACE accepts from a pod labelled
    `source` in a namespace labelled `namespace`, under default deny plus these policies.
    ("*", "*") stands for every port."""
    same_namespace = namespace.get("kubernetes.io/metadata.name") == NAMESPACE
    ports: set[tuple[str, int | str]] = set()
    for policy in policies.values():
        spec = policy["spec"]
        if "Ingress" not in spec["policyTypes"] or not selects(spec["podSelector"], pod):
            continue
        for rule in spec.get("ingress", []):
            peers = rule.get("from")
            match = peers is None or any(
                "ipBlock" in peer  # an address range may contain the source
                or (
                    (
                        selects(peer["namespaceSelector"], namespace)
                        if "namespaceSelector" in peer
                        else same_namespace
                    )
                    and selects(peer.get("podSelector"), source)
                )
                for peer in peers
            )
            if match:
                if "ports" not in rule:
                    ports.add(("*", "*"))
                ports |= {(p.get("protocol", "TCP"), p["port"]) for p in rule.get("ports", [])}
    return ports


def test_k8s_network_policies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    platform = {
        "api",
        "worker-cpu",
        "worker-gpu",
        "worker-datasets",
        "trainer",
        "trainer-gpu",
        "migrate",
        "gateway",
    }
    # Namespaces outside medimg, and a pod in each; what each may open in medimg.
    ingress_controller = ({"medimg.io/ingress-controller": "true"}, {})
    monitoring = ({"kubernetes.io/metadata.name": "monitoring", **MONITORING_LABEL}, {})
    keda = ({"kubernetes.io/metadata.name": "keda"}, {"app.kubernetes.io/name": "keda-operator"})
    unlabelled_monitoring = ({"kubernetes.io/metadata.name": "monitoring"}, {})
    elsewhere = ({"kubernetes.io/metadata.name": "default"}, {})
    inside = (
        {"kubernetes.io/metadata.name": NAMESPACE},
        {"app.kubernetes.io/name": "medimg", "app.kubernetes.io/component": "api"},
    )
    api, metrics = ("TCP", API_PORT), ("TCP", WORKER_METRICS_PORT)
    for overlay, docs in rendered.items():
        policies = objects(docs, "NetworkPolicy")
        deny = policies["default-deny"]["spec"]
        assert deny["podSelector"] == {} and sorted(deny["policyTypes"]) == ["Egress", "Ingress"]
        for name, template in templates(docs):
            if name == "gateway":
                continue  # admits PACS addresses (ipBlock): tests/deploy/test_gateway_deploy.py
            pod = template["metadata"]["labels"]
            where = (overlay, name)
            # From outside: the API from the ingress controller; /metrics from Prometheus,
            # exactly the ports the metrics are served on.
            assert admitted(policies, pod, *ingress_controller) == (
                {api} if name == "api" else set()
            ), where
            assert admitted(policies, pod, *monitoring) == {
                "api": {api},
                "worker-cpu": {metrics},
                "worker-gpu": {metrics},
            }.get(name, set()), where
            # Dev's Redis: KEDA reads the queue lengths.
            assert admitted(policies, pod, *keda) == (
                {("TCP", 6379)} if name == "redis" else set()
            ), where
            assert admitted(policies, pod, *unlabelled_monitoring) == set(), where
            assert admitted(policies, pod, *elsewhere) == set(), where
            # Inside the namespace only dev's PostgreSQL and Redis take connections.
            assert admitted(policies, pod, *inside) == {
                "postgres": {("TCP", 5432)},
                "redis": {("TCP", 6379)},
            }.get(name, set()), where
    dev = objects(rendered["dev"], "NetworkPolicy")
    for name in ("postgres-from-platform", "redis-from-platform"):
        selector = dev[name]["spec"]["ingress"][0]["from"][0]["podSelector"]
        (expr,) = selector["matchExpressions"]
        assert expr["operator"] == "In" and set(expr["values"]) == platform, name


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


def ingress_routes(ingress: dict[str, Any], path: str) -> bool:
    """Whether a request path reaches a backend, per the Ingress API's Exact/Prefix rules
    (Prefix: whole `/`-separated elements; a trailing slash is ignored)."""
    elements = [e for e in path.split("/") if e]
    for rule in ingress["spec"]["rules"]:
        for route in rule["http"]["paths"]:
            if route["pathType"] == "Exact" and path == route["path"]:
                return True
            prefix = [e for e in route["path"].split("/") if e]
            if route["pathType"] == "Prefix" and elements[: len(prefix)] == prefix:
                return True
    return False


def test_ingress_routes_the_public_paths_and_not_metrics(
    rendered: dict[str, list[dict[str, Any]]], api_paths: dict[str, Any]
) -> None:
    metrics = api_paths["metrics"]
    assert metrics == METRICS_PATH
    public = [re.sub(r"\{[^}]+\}", "x", p) for p in api_paths["public"]]
    assert {"/v1/jobs", "/healthz", "/readyz", "/docs", "/openapi.json"} <= set(public)
    for overlay, docs in rendered.items():
        ingress = objects(docs, "Ingress")["api"]
        # No catch-all: unmatched paths get the controller's default backend (404).
        assert "defaultBackend" not in ingress["spec"], overlay
        for rule in ingress["spec"]["rules"]:
            for route in rule["http"]["paths"]:
                assert route["pathType"] in {"Exact", "Prefix"}, (overlay, route)
                assert route["path"] != "/", (overlay, route)
                assert route["backend"] == {"service": {"name": "api", "port": {"name": "http"}}}, (
                    overlay,
                    route,
                )
        for path in public:
            assert ingress_routes(ingress, path), (overlay, path)
        for path in (metrics, metrics + "/", "/", "/v1x", "/metricsx", "/docsx"):
            assert not ingress_routes(ingress, path), (overlay, path)


def test_k8s_metrics_endpoints(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """api and inference workers: a named port, the env that turns the endpoint on and the
    prometheus.io annotations; nothing of it on the trainer and the migrate Job."""
    for overlay, docs in rendered.items():
        for name, template in templates(docs):
            where = (overlay, name)
            (container,) = template["spec"]["containers"]
            ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            annotations = template["metadata"].get("annotations", {})
            if name in SCRAPED:
                port_name, port = SCRAPED[name]
                assert ports[port_name] == port, where
                assert annotations["prometheus.io/scrape"] == "true", where
                assert annotations["prometheus.io/port"] == str(port), where
                assert annotations["prometheus.io/path"] == METRICS_PATH, where
            else:
                assert not any(a.startswith("prometheus.io/") for a in annotations), where
                assert WORKER_METRICS_PORT not in ports.values(), where
            if name in ("worker-cpu", "worker-gpu"):  # worker-datasets runs no model
                assert env["MEDIMG_WORKER_METRICS_PORT"] == str(WORKER_METRICS_PORT), where
            else:
                assert "MEDIMG_WORKER_METRICS_PORT" not in env, where


def test_k8s_podmonitors_scrape_the_metrics_ports(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["prod-podmonitor"]
    pods = dict(templates(docs))
    scraped = {}
    for name, monitor in objects(docs, "PodMonitor").items():
        assert monitor["metadata"]["namespace"] == NAMESPACE
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["path"] == METRICS_PATH, name
        for pod_name, template in pods.items():
            if selects(monitor["spec"]["selector"], template["metadata"]["labels"]):
                assert pod_name not in scraped, f"{pod_name} scraped twice"
                scraped[pod_name] = endpoint["port"]
    assert scraped == {name: port_name for name, (port_name, _) in SCRAPED.items()}


def test_k8s_images_come_from_kustomize_images(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        for name, pod in workloads(docs):
            for c in pod["containers"]:
                repo, _, tag = c["image"].rpartition(":")
                assert repo and tag and tag != "latest", (overlay, name, c["image"])
    for path in (K8S / "base", K8S / "overlays" / "prod"):
        images = yaml.safe_load((path / "kustomization.yaml").read_text())["images"]
        assert {i["name"] for i in images} == {"medimg-api", "medimg-cpu", "medimg-cuda"}


def test_checkov_finds_nothing_unexplained(
    rendered: dict[str, list[dict[str, Any]]], tmp_path: Path
) -> None:
    if not CHECKOV.exists():
        pytest.skip(f"{CHECKOV.relative_to(REPO)} is not installed: run `make deploy-check`")
    files = []
    for overlay, docs in rendered.items():
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        files += ["-f", str(path)]
    result = subprocess.run(
        [str(CHECKOV), *files, "-f", str(REPO / "Dockerfile")]
        + ["--framework", "kubernetes", "dockerfile", "--output", "json", "--quiet"]
        + ["--skip-download"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true"},
    )
    assert result.returncode in (0, 1), result.stderr  # 1: some check failed
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, result.stdout
    unexplained = []
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["summary"]
        for failed in report["results"]["failed_checks"]:
            allowed = dict(CHECKOV_ALLOWED)
            if Path(failed["file_path"]).name == "dev.yaml":
                allowed |= CHECKOV_ALLOWED_DEV
            if failed["check_id"] not in allowed:
                unexplained.append(
                    f"{failed['check_id']} {failed['check_name']}: {failed['resource']} "
                    f"({failed['file_path']})"
                )
    assert not unexplained, "\n".join(unexplained)


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def dockerfile_stages() -> dict[str, list[str]]:
    """Instructions per stage name, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            name = line.split()[-1] if " AS " in line.upper() else f"stage{len(stages)}"
            current = stages.setdefault(name, [])
        current.append(line)
    return stages


def instruction(stage: list[str], keyword: str) -> list[str]:
    return [line[len(keyword) + 1 :] for line in stage if line.startswith(keyword + " ")]


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


def lock_closure(package: str) -> set[str]:
    """Names of every package `package` installs per uv.lock (extras followed)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in lock["package"]:
        by_name.setdefault(p["name"], []).append(p)
    seen: set[str] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [(package, ())]
    while todo:
        name, extras = todo.pop()
        key = name + "[" + ",".join(extras) + "]"
        if key in seen:
            continue
        seen.add(key)
        for entry in by_name[name]:
            deps = list(entry.get("dependencies", []))
            for extra in extras:
                deps += entry.get("optional-dependencies", {}).get(extra, [])
            todo += [(d["name"], tuple(d.get("extra", []))) for d in deps]
    return {k.split("[")[0] for k in seen}


def test_api_image_installs_no_torch() -> None:
    api = lock_closure("medimg-api")
    assert {"fastapi", "uvicorn", "medimg-shared"} <= api
    assert not {"torch", "torchvision", "triton"} & api
    assert "torch" in lock_closure("medimg-worker")


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    ignored = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = prefixes if not pattern.startswith("**/") else parts
        bare = pattern.removeprefix("**/")
        if any(fnmatch(c, bare) for c in candidates):
            ignored = not negate
    return ignored


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


# --------------------------------------------------------------------------------------------
# docker-compose.yml
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


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


# --------------------------------------------------------------------------------------------
# Settings: .env.example, compose and Kubernetes agree with shared.config
# --------------------------------------------------------------------------------------------


def env_name(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    return alias.choices[0] if alias is not None else f"MEDIMG_{field.upper()}"  # type: ignore[union-attr]


def env_example() -> dict[str, str]:
    text = (REPO / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z_][A-Z0-9_]*)=(.*)$", text, re.MULTILINE))


def example_settings() -> dict[str, str]:
    """.env.example's MEDIMG_* values that are Settings fields, by field name."""
    example = env_example()
    fields = {env_name(f): f for f in Settings.model_fields}
    return {fields[k]: v for k, v in example.items() if k in fields}


def test_every_setting_is_documented_or_deliberately_left_out() -> None:
    documented = set(example_settings())
    left_out = SET_BY_DEPLOYMENT.keys() | ADVANCED.keys()
    assert not documented & left_out, documented & left_out
    missing = set(Settings.model_fields) - documented - left_out
    assert not missing, (
        f"document in .env.example (and compose, k8s) or list with a reason: {missing}"
    )
    assert not left_out - set(Settings.model_fields), "stale entries"
    unknown = {k for k in env_example() if k.startswith("MEDIMG_")} - {
        env_name(f) for f in documented
    }
    assert unknown == COMPOSE_ONLY - {"MEDIMG_TORCH_THREADS"}, unknown


def test_example_values_are_the_settings_defaults() -> None:
    """What .env.example documents is what the code does without it (secrets excepted)."""
    for field, value in example_settings().items():
        if env_name(field) in SECRETS:
            continue
        default = Settings.model_fields[field].default
        parsed = getattr(Settings(**{field: value}), field)
        # An empty value and 0 threads mean "unset" in those fields.
        if default is None and parsed in ("", 0):
            continue
        assert parsed == default, (field, value, default)


def test_compose_defaults_and_k8s_config_match_the_example(
    compose: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    example = env_example()
    text = (REPO / "docker-compose.yml").read_text()
    for name, default in re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}", text):
        assert example[name] == default, (name, default, example[name])
    settings = {env_name(f) for f in example_settings()}
    # The same split as Kubernetes': the API gets every setting, the others the shared ones.
    config, api_config = config_maps(rendered["prod"])
    api_only = api_config["data"].keys() | API_SECRETS
    svc = compose["services"]
    for name in settings - COMPOSE_ONLY:
        for service in ("api", "migrate", "worker-cpu", "worker-gpu", "trainer", "trainer-gpu"):
            passed = name in svc[service]["environment"]
            assert passed == (service == "api" or name not in api_only), (service, name)
    for overlay, docs in rendered.items():
        config, api_config = config_maps(docs)
        shared, api = config["data"], api_config["data"]
        assert not shared.keys() & api.keys(), overlay
        assert not any(k.startswith(API_ONLY_PREFIXES) for k in shared), overlay
        assert shared.keys() | api.keys() | API_SECRETS == settings - COMPOSE_ONLY | {
            "MEDIMG_ENVIRONMENT",
            "MEDIMG_STORE_DIR",
        }, overlay
        for key, value in (shared | api).items():
            assert value == example.get(key, value), (overlay, key)
        (api_container,) = objects(docs, "Deployment")["api"]["spec"]["template"]["spec"][
            "containers"
        ]
        refs = {
            e["name"]: e["valueFrom"]["secretKeyRef"]
            for e in api_container["env"]
            if "valueFrom" in e
        }
        for key in API_SECRETS:
            assert refs[key] == {"name": refs[key]["name"], "key": key}, (overlay, key)
            assert refs[key]["name"].startswith("medimg-api-secrets"), (overlay, key)
        for name, pod in workloads(docs):
            if name != "api":
                # The gateway de-identifies received studies with the API's salt, nothing more.
                allowed = {"MEDIMG_DEIDENTIFY_UID_SALT"} if name == "gateway" else set()
                env = {e["name"] for e in pod["containers"][0].get("env", [])}
                assert not (API_SECRETS - allowed) & env, (overlay, name)


# --------------------------------------------------------------------------------------------
# Egress, trainers, ImageNet cache
# --------------------------------------------------------------------------------------------


def egress_allows(
    policies: dict[str, dict[str, Any]], pod: dict[str, str], ip: str, port: int
) -> bool:
    """Whether a pod labelled `pod` may open TCP `ip:port` outside the cluster."""
    address = ipaddress.ip_address(ip)
    for policy in policies.values():
        spec = policy["spec"]
        if "Egress" not in spec["policyTypes"] or not selects(spec["podSelector"], pod):
            continue
        for rule in spec.get("egress", []):
            ports = rule.get("ports")
            if ports is not None and not any(
                p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports
            ):
                continue
            peers = rule.get("to")
            if peers is None:
                return True
            for peer in peers:
                block = peer.get("ipBlock")
                if block is None:
                    continue  # pod and namespace selectors match pods, not outside addresses
                network = ipaddress.ip_network(block["cidr"])
                if address.version != network.version or address not in network:
                    continue
                if not any(
                    address in ipaddress.ip_network(e)
                    for e in block.get("except", [])
                    if ipaddress.ip_network(e).version == address.version
                ):
                    return True
    return False


PUBLIC = ["8.8.8.8", "203.0.113.7", "2001:4860:4860::8888"]
NOT_PUBLIC = [
    "169.254.169.254",  # cloud metadata (AWS, GCP, Azure)
    "fd00:ec2::254",  # AWS metadata over IPv6
    "100.100.100.200",  # Alibaba metadata, carrier-grade NAT range (also common pod ranges)
    "10.96.0.1",  # a typical Service range
    "172.17.0.1",
    "192.168.1.10",
    "127.0.0.1",
    "::1",
    "fe80::1",
    "::ffff:10.0.0.1",  # IPv4-mapped private address
    "::10.0.0.1",  # IPv4-compatible
    # NAT64 and 6to4 forms of the metadata service, a pod range and loopback, and Teredo.
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::a00:1",
    "64:ff9b::7f00:1",
    "64:ff9b:1::a00:1",
    "2002:a9fe:a9fe::1",
    "2002:c0a8:101::1",
    "2002:ac11:1::1",
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",
]
# Translated/tunnelled forms of public IPv4 addresses stay reachable for callbacks.
PUBLIC += ["64:ff9b::808:808", "2002:808:808::1"]


def test_k8s_only_the_api_reaches_callback_receivers(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for overlay, docs in rendered.items():
        policies = objects(docs, "NetworkPolicy")
        for name, template in templates(docs):
            pod = template["metadata"]["labels"]
            where = (overlay, name)
            for ip in PUBLIC:
                # Callbacks are HTTPS: the API may POST to public addresses, nothing else may
                # open a web connection to the internet.
                assert egress_allows(policies, pod, ip, 443) == (name == "api"), (where, ip)
                assert not egress_allows(policies, pod, ip, 80), (where, ip)
            for ip in NOT_PUBLIC:
                assert not egress_allows(policies, pod, ip, 443), (where, ip)


WORKER_PODS = {"worker-cpu", "worker-gpu", "worker-datasets", "trainer", "trainer-gpu"}
PRIVATE_DATABASE = "10.20.30.40"  # a managed PostgreSQL/Redis private endpoint


def test_k8s_prod_workers_reach_only_the_database_and_redis(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """Workers and trainers run tenant archives, patterns and weights: in prod they may open
    PostgreSQL and Redis on private addresses, and nothing else (no internet, no metadata
    service); the store is a kubelet-mounted volume and needs no egress."""
    checked = 0
    for overlay, docs in rendered.items():
        if not overlay.startswith("prod"):
            continue  # dev: the in-cluster servers, selected by pod labels
        policies = objects(docs, "NetworkPolicy")
        for name, template in templates(docs):
            if name not in WORKER_PODS:
                continue
            pod, where = template["metadata"]["labels"], (overlay, name)
            for port in (5432, 6379, 6380):
                assert egress_allows(policies, pod, PRIVATE_DATABASE, port), (where, port)
                for ip in PUBLIC + NOT_PUBLIC[:2]:  # internet, cloud metadata
                    assert not egress_allows(policies, pod, ip, port), (where, ip, port)
            for port in (22, 80, 443, 2049, 8080, 11112):
                assert not egress_allows(policies, pod, PRIVATE_DATABASE, port), (where, port)
            checked += 1
    assert checked >= 5 * 4


def test_dataset_imports_have_their_own_worker(
    rendered: dict[str, list[dict[str, Any]]], compose: dict[str, Any]
) -> None:
    """Imports (`datasets` queue) never share the inference workers' processes."""
    from api import enqueue

    assert "queue=Queue.DATASETS" in Path(enqueue.__file__).read_text()

    def queues(argv: list[str]) -> list[str]:
        return argv[argv.index("-Q") + 1].split(",") if "-Q" in argv else []

    compose_queues = {n: queues(s.get("command", [])) for n, s in compose["services"].items()}
    assert compose_queues["worker-datasets"] == ["datasets"]
    assert [n for n, q in compose_queues.items() if "datasets" in q] == ["worker-datasets"]
    for overlay, docs in rendered.items():
        consumers = {
            name: queues(pod["containers"][0].get("command", [])) for name, pod in workloads(docs)
        }
        assert consumers["worker-datasets"] == ["datasets"], overlay
        assert [n for n, q in consumers.items() if "datasets" in q] == ["worker-datasets"]
        assert consumers["worker-cpu"] == ["cpu"], overlay


def test_k8s_trainers_have_room_to_train(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        deployments = objects(docs, "Deployment")
        for name in deployments.keys() & {"trainer", "trainer-gpu"}:
            where = (overlay, name)
            pod = deployments[name]["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            # Checkpoints and the registered model go to the shared (RWX) store; weights,
            # TensorBoard events and plots are staged in /tmp on a read-only root filesystem.
            assert "persistentVolumeClaim" in volumes[mounts[STORE_DIR]["name"]], where
            assert not mounts[STORE_DIR].get("readOnly"), where
            tmp = volumes[mounts["/tmp"]["name"]]["emptyDir"]
            assert gib(tmp["sizeLimit"]) >= 4, where
            limits = container["resources"]["limits"]
            assert gib(limits["ephemeral-storage"]) >= gib(tmp["sizeLimit"]), where
            shm = volumes[mounts["/dev/shm"]["name"]]["emptyDir"]
            assert shm["medium"] == "Memory" and gib(limits["memory"]) > gib(shm["sizeLimit"])
            env = {e["name"]: e.get("value") for e in container["env"]}
            # os.cpu_count() sees the node: threads follow the CPU limit instead.
            assert env["MEDIMG_TORCH_THREADS"] == limits["cpu"], where


def gib(quantity: str) -> float:
    units = {"Mi": 1 / 1024, "Gi": 1, "Ti": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]


def test_keda_scales_the_gpu_trainer_on_training_jobs(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The Redis list empties as soon as a trainer takes a job that then runs for hours: the
    count comes from the job table, queued and running, so KEDA never scales a pod away from
    a job in progress."""
    docs = rendered["prod-gpu"]
    scaled = objects(docs, "ScaledObject")["trainer-gpu"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "trainer-gpu"
    assert "replicas" not in objects(docs, "Deployment")["trainer-gpu"]["spec"]
    assert scaled["minReplicaCount"] == 0
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "postgresql"
    query = trigger["metadata"]["query"]
    assert f"FROM {TrainingJob.__tablename__} " in query
    statuses = set(re.findall(r"'([a-z]+)'", query))
    assert statuses == {JobStatus.QUEUED.value, JobStatus.RUNNING.value}
    assert trigger["metadata"]["targetQueryValue"] == "1"  # one job per trainer (concurrency 1)
    auth = objects(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "connection", "name": "medimg-connections", "key": "KEDA_DATABASE_URL"}
    ]


def test_imagenet_cache_is_mounted_read_only_where_it_is_read(
    compose: dict[str, Any], rendered: dict[str, list[dict[str, Any]]]
) -> None:
    env = " ".join(instruction(dockerfile_stages()["runtime"], "ENV"))
    assert f"TORCH_HOME={TORCH_HOME}" in env
    readers = {"api", "trainer", "trainer-gpu"}
    for name, s in compose["services"].items():
        mounted = [v for v in s.get("volumes", []) if f":{TORCH_HOME}" in v]
        assert mounted == (
            ["${TORCH_CACHE_DIR:-./var/torch-cache}:" + TORCH_HOME + ":ro"]
            if name in readers
            else []
        ), name
    for overlay in ("prod-gpu", "prod-gpu-hpa"):
        for name, pod in workloads(rendered[overlay]):
            (container,) = pod["containers"]
            mounts = [m for m in container.get("volumeMounts", []) if m["mountPath"] == TORCH_HOME]
            assert len(mounts) == (name in readers), (overlay, name)
            for mount in mounts:
                volume = {v["name"]: v for v in pod["volumes"]}[mount["name"]]
                assert mount["readOnly"] is True and volume["persistentVolumeClaim"] == {
                    "claimName": "medimg-torch-cache",
                    "readOnly": True,
                }, (overlay, name)
    for name, pod in workloads(rendered["prod"]):
        assert TORCH_HOME not in str(pod), name  # optional: only with the component
