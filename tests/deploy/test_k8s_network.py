"""k8s NetworkPolicies and Ingress: who may reach whom (callback receivers, databases,
metrics) and which public paths the Ingress routes.
"""

from __future__ import annotations

import re
from typing import Any

from tests.deploy.manifests import (
    API_PORT,
    METRICS_PATH,
    MONITORING_LABEL,
    NAMESPACE,
    NOT_PUBLIC,
    PRIVATE_DATABASE,
    PUBLIC,
    WORKER_METRICS_PORT,
    WORKER_PODS,
    admitted,
    egress_allows,
    ingress_routes,
    objects,
    templates,
)


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
