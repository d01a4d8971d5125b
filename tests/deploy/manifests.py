"""Shared by the deployment-file tests: paths, expectations and helpers that read the
Dockerfile, docker-compose.yml, .env.example and the rendered k8s overlays.

No Docker engine and no cluster are needed: kustomize renders the overlays,
kubernetes-validate checks every rendered object against the Kubernetes OpenAPI schema,
hadolint and checkov lint, and every service command is compared with `cli.services`,
the commands `make run` and the test suite start on the host.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from cli import services
from shared.config import Settings

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
    "learning_interval_seconds": "learning-loop scheduler pass period, see docs/learning-loop.md",
    "infer_soft_time_limit": "must stay below the broker visibility timeout (code constant)",
    "infer_hard_time_limit": "must stay below the broker visibility timeout (code constant)",
    "import_soft_time_limit": "must stay below the broker visibility timeout (code constant)",
    "import_hard_time_limit": "must stay below the broker visibility timeout (code constant)",
    "callback_ca_file": "a PEM file the operator mounts into the API pod for an internal CA "
    "of callback receivers (docs/security.md); public CAs need nothing",
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


WORKER_PODS = {"worker-cpu", "worker-gpu", "worker-datasets", "trainer", "trainer-gpu"}


PRIVATE_DATABASE = "10.20.30.40"  # a managed PostgreSQL/Redis private endpoint


def gib(quantity: str) -> float:
    units = {"Mi": 1 / 1024, "Gi": 1, "Ti": 1024}
    return float(quantity[:-2]) * units[quantity[-2:]]
