"""Static checks of the DICOM gateway's deployment: k8s Deployment, Service, NetworkPolicies,
spool volume and scraping; compose and `make run` start the same command.

What every platform pod must satisfy (hardening, schema, checkov, commands) is checked for
the gateway too by tests/deploy/test_deploy_files.py; this module checks what only the
gateway has: the DICOM port, its HTTP probe port, its spool, and who may reach it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from cli import services
from cli.stack import free_port
from gateway import metrics
from gateway.settings import GatewaySettings
from tests.deploy.manifests import (
    K8S,
    MONITORING_LABEL,
    NAMESPACE,
    REPO,
    STORE_DIR,
    config_maps,
    egress_allows,
    kustomize,
    objects,
    py,
    selects,
)

DEFAULTS = GatewaySettings()
DICOM_PORT = DEFAULTS.dicom_port  # 11112
HTTP_PORT = DEFAULTS.gateway_http_port  # 9102
SPOOL = "/data/spool"
POLICIES = K8S / "base" / "gateway-networkpolicies.yaml"
# The base's placeholder: TEST-NET-1 (RFC 5737) matches no real PACS, so it fails closed.
PLACEHOLDER = "192.0.2.0/24"
# Addresses of a hospital network with a PACS (outside the cluster) and the cluster's own pod
# and Service ranges, which must not be admitted by the documented example.
EXAMPLE_PACS = ["10.20.30.0/24", "10.40.0.5/32"]
METADATA = ["169.254.169.254", "fd00:ec2::254"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """dev, prod, prod with PodMonitors, and prod with the PACS ranges set as the policy
    file's comment tells an operator to (the patches are taken from that comment)."""

    def prod_with(name: str, components: tuple[str, ...] = (), **extra: Any) -> Any:
        path = tmp_path_factory.mktemp(name)
        k8s = os.path.relpath(K8S, path)  # kustomize refuses absolute paths to bases
        (path / "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "namespace": NAMESPACE,
                    "resources": [f"{k8s}/overlays/prod"],
                    "components": [f"{k8s}/components/{c}" for c in components],
                    **extra,
                }
            )
        )
        return kustomize(path)

    return {
        "dev": kustomize(K8S / "overlays" / "dev"),
        "prod": kustomize(K8S / "overlays" / "prod"),
        "prod-podmonitor": prod_with("podmonitor", ("podmonitor",)),
        "prod-pacs": prod_with("pacs", patches=documented_patches()),
    }


def documented_patches() -> list[dict[str, Any]]:
    """The `patches:` example in gateway-networkpolicies.yaml's header comment, parsed."""
    lines = POLICIES.read_text().splitlines()
    start = lines.index("#   patches:")
    block = []
    for line in lines[start + 1 :]:
        if not line.startswith("#     "):
            break
        block.append(line[len("#   ") :])
    patches = yaml.safe_load("\n".join(block))
    assert isinstance(patches, list) and len(patches) == 3, block
    return patches


def gateway_pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return objects(docs, "Deployment")["gateway"]["spec"]["template"]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_gateway_deployment_runs_the_service_command(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    expected = services.gateway(bind="0.0.0.0", dicom_port=DICOM_PORT, http_port=HTTP_PORT)
    for overlay, docs in rendered.items():
        deployment = objects(docs, "Deployment")["gateway"]
        # One spool, one process: study grouping is per pod, the spool volume ReadWriteOnce.
        assert deployment["spec"]["replicas"] == 1, overlay
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}, overlay
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        assert container["image"].startswith("medimg-api:"), overlay  # no torch needed
        assert container["command"] + container.get("args", []) == py(expected.argv)
        env = container_env(container)
        for key, value in expected.env.items():
            assert env[key]["value"] == value, (overlay, key)
        assert env["MEDIMG_DICOM_AE_TITLE"]["value"] == DEFAULTS.dicom_ae_title, overlay
        ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in container["ports"]}
        assert ports == {"dicom": (DICOM_PORT, "TCP"), "metrics": (HTTP_PORT, "TCP")}, overlay


def test_gateway_settings_come_from_the_platform_config(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """The gateway reads the API's DICOMweb and de-identification settings from the API's
    ConfigMap and Secret (one place), and nothing of the callbacks."""
    for overlay, docs in rendered.items():
        config, api_config = config_maps(docs)
        (container,) = gateway_pod(docs)["spec"]["containers"]
        assert [e["configMapRef"]["name"] for e in container["envFrom"]] == [
            config["metadata"]["name"]
        ], overlay
        env = container_env(container)
        for key in (
            "MEDIMG_DICOMWEB_ALLOWED_HOSTS",
            "MEDIMG_DICOMWEB_ALLOW_HTTP",
            "MEDIMG_DEIDENTIFY_UPLOADS",
        ):
            ref = env[key]["valueFrom"]["configMapKeyRef"]
            assert ref == {"name": api_config["metadata"]["name"], "key": key}, (overlay, key)
            assert key in api_config["data"], (overlay, key)
        salt = env["MEDIMG_DEIDENTIFY_UID_SALT"]["valueFrom"]["secretKeyRef"]
        assert salt["key"] == "MEDIMG_DEIDENTIFY_UID_SALT", overlay
        assert salt["name"].startswith("medimg-api-secrets"), overlay
        assert not [k for k in env if k.startswith("MEDIMG_CALLBACK_")], overlay
        assert {"DATABASE_URL", "REDIS_URL"} <= env.keys(), overlay


def test_gateway_spool_is_a_volume_of_its_own(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        pod = gateway_pod(docs)["spec"]
        (container,) = pod["containers"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        env = container_env(container)
        # Instances are acknowledged to the PACS once spooled: the spool survives restarts.
        assert env["MEDIMG_DICOM_SPOOL_DIR"]["value"] == SPOOL, overlay
        claim = volumes[mounts[SPOOL]["name"]]["persistentVolumeClaim"]["claimName"]
        pvc = objects(docs, "PersistentVolumeClaim")[claim]
        assert pvc["spec"]["accessModes"] == ["ReadWriteOnce"], overlay
        assert not mounts[SPOOL].get("readOnly"), overlay
        assert not SPOOL.startswith(STORE_DIR + "/"), "the spool is not part of the store"
        store = volumes[mounts[STORE_DIR]["name"]]["persistentVolumeClaim"]["claimName"]
        assert store == "medimg-store", overlay
        assert "emptyDir" in volumes[mounts["/tmp"]["name"]], overlay


def test_gateway_probes_use_its_http_port(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        (container,) = gateway_pod(docs)["spec"]["containers"]
        ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
        assert ready == {"path": "/readyz", "port": "metrics"}, overlay
        assert live == {"path": "/metrics", "port": "metrics"}, overlay


def test_probe_paths_are_what_the_gateway_serves() -> None:
    """The gateway's own HTTP server (gateway.metrics.serve): /readyz follows the checks,
    /metrics (liveness) answers whatever the database does."""
    checks = {"listener": "ok", "loops": "ok", "database": "ok"}
    port = free_port()
    server = metrics.serve("127.0.0.1", port, lambda: dict(checks))
    try:

        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return int(r.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status("/readyz") == 200 and status("/metrics") == 200
        checks["database"] = "OperationalError"
        assert status("/readyz") == 503
        assert status("/metrics") == 200, "a database outage must not restart the listener"
        assert status("/nope") == 404
    finally:
        server.shutdown()
        server.server_close()


def test_gateway_service_is_dicom_on_11112(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        service = objects(docs, "Service")["gateway"]["spec"]
        pod = gateway_pod(docs)["metadata"]["labels"]
        assert selects({"matchLabels": service["selector"]}, pod), overlay
        assert service["ports"] == [
            {"name": "dicom", "port": DICOM_PORT, "targetPort": "dicom", "protocol": "TCP"}
        ], overlay
        # The PACS is outside the cluster; its own address must reach the pod (the ingress
        # policy matches on it), hence Local rather than the default SNAT-ing Cluster.
        assert service["type"] == "LoadBalancer" and service["externalTrafficPolicy"] == "Local"
        assert service["loadBalancerSourceRanges"] == pacs_ranges(docs), overlay
    for other in objects(rendered["prod"], "Service").values():
        if other["metadata"]["name"] != "gateway":
            assert DICOM_PORT not in [p["port"] for p in other["spec"]["ports"]]


def pacs_ranges(docs: list[dict[str, Any]]) -> list[str]:
    (rule,) = objects(docs, "NetworkPolicy")["gateway-from-pacs"]["spec"]["ingress"]
    return [peer["ipBlock"]["cidr"] for peer in rule["from"]]


def ingress_from(
    policies: dict[str, dict[str, Any]],
    pod: dict[str, str],
    *,
    ip: str | None = None,
    namespace: dict[str, str] | None = None,
    source: dict[str, str] | None = None,
) -> set[int]:
    """TCP ports of `pod` open to a peer: an address outside the cluster (`ip`) or a pod
    (`source` labels) in a namespace (`namespace` labels), under default deny."""
    ports: set[int] = set()
    for policy in policies.values():
        spec = policy["spec"]
        if "Ingress" not in spec["policyTypes"] or not selects(spec["podSelector"], pod):
            continue
        for rule in spec.get("ingress", []):
            matched = False
            for peer in rule.get("from", [{}]):
                if "ipBlock" in peer:
                    block = peer["ipBlock"]
                    matched |= ip is not None and ipaddress.ip_address(ip) in (
                        ipaddress.ip_network(block["cidr"])
                    )
                elif namespace is not None:
                    in_namespace = (
                        selects(peer["namespaceSelector"], namespace)
                        if "namespaceSelector" in peer
                        else namespace.get("kubernetes.io/metadata.name") == NAMESPACE
                    )
                    matched |= in_namespace and selects(peer.get("podSelector"), source or {})
            if matched:
                assert "ports" in rule, "every gateway rule names its ports"
                ports |= {p["port"] for p in rule["ports"] if p.get("protocol", "TCP") == "TCP"}
    return ports


def test_gateway_network_policies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    monitoring = {"kubernetes.io/metadata.name": "monitoring", **MONITORING_LABEL}
    inside = {"kubernetes.io/metadata.name": NAMESPACE}
    for overlay, docs in rendered.items():
        policies = objects(docs, "NetworkPolicy")
        pod = gateway_pod(docs)["metadata"]["labels"]
        ranges = pacs_ranges(docs)
        expected = EXAMPLE_PACS if overlay == "prod-pacs" else [PLACEHOLDER]
        assert ranges == expected, overlay
        hosts = [str(next(iter(ipaddress.ip_network(r)))) for r in ranges]
        # The DICOM port: from the PACS addresses, and from nothing else.
        for host in hosts:
            assert ingress_from(policies, pod, ip=host) == {DICOM_PORT}, (overlay, host)
        for ip in ("10.20.31.1", "10.244.0.7", "172.17.0.1", "203.0.113.7", *METADATA):
            assert ingress_from(policies, pod, ip=ip) == set(), (overlay, ip)
        for namespace, source in (
            (monitoring, {}),
            ({"kubernetes.io/metadata.name": "monitoring"}, {}),
            ({"kubernetes.io/metadata.name": "default"}, {}),
            (inside, {"app.kubernetes.io/name": "medimg", "app.kubernetes.io/component": "api"}),
        ):
            allowed = {HTTP_PORT} if namespace == monitoring else set()
            got = ingress_from(policies, pod, namespace=namespace, source=source)
            assert got == allowed, (overlay, namespace)
        # Out: the PACS addresses on the DICOM and DICOMweb ports, nothing public.
        for host in hosts:
            for port in (104, 11112, 443):
                assert egress_allows(policies, pod, host, port), (overlay, host, port)
            assert not egress_allows(policies, pod, host, 80), (overlay, host)
        for ip in ("8.8.8.8", "203.0.113.7", "2001:4860:4860::8888", "10.96.0.1", *METADATA):
            for port in (80, 104, 443, 11112):
                assert not egress_allows(policies, pod, ip, port), (overlay, ip, port)
        # PostgreSQL and Redis through the overlay's platform policy; DNS through allow-dns.
        platform = policies["platform-to-postgres-redis"]["spec"]["podSelector"]
        assert selects(platform, pod), overlay
        assert selects(policies["allow-dns"]["spec"]["podSelector"], pod), overlay
    dev = objects(rendered["dev"], "NetworkPolicy")
    for name in ("postgres-from-platform", "redis-from-platform"):
        (expr,) = dev[name]["spec"]["ingress"][0]["from"][0]["podSelector"]["matchExpressions"]
        assert "gateway" in expr["values"], name


def test_gateway_is_scraped(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for overlay, docs in rendered.items():
        annotations = gateway_pod(docs)["metadata"]["annotations"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(HTTP_PORT),
            "prometheus.io/path": "/metrics",
        }, overlay
    monitors = objects(rendered["prod-podmonitor"], "PodMonitor")
    pod = gateway_pod(rendered["prod-podmonitor"])["metadata"]["labels"]
    (selecting,) = [m for m in monitors.values() if selects(m["spec"]["selector"], pod)]
    assert selecting["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"


def test_compose_and_make_run_start_the_gateway() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["gateway"]
    assert compose["command"] == py(services.gateway("0.0.0.0", DICOM_PORT, HTTP_PORT).argv)
    assert compose["ports"] == ["${DICOM_BIND:-127.0.0.1}:${DICOM_PORT:-11112}:11112"]
    assert f"127.0.0.1:{HTTP_PORT}/healthz" in compose["healthcheck"]["test"][-1]
    # `make run` is `medimg run`, whose --dicom-port defaults to the listener's port (0: off).
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^run: .*\n\t\$\(VENV\)/bin/medimg run$", makefile, re.MULTILINE)
    result = subprocess.run(
        [sys.executable, "-m", "cli", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "--dicom-port" in result.stdout
