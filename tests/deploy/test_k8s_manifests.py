"""Rendered k8s overlays: schema, commands, probes, hardening, volumes, GPU placement,
KEDA, metrics endpoints, images and the checkov gate.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.queueing import PRIORITY_STEPS, make_celery
from tests.deploy.manifests import (
    CHECKOV,
    CHECKOV_ALLOWED,
    CHECKOV_ALLOWED_DEV,
    CRD_KINDS,
    GPU_PODS,
    K8S,
    K8S_VERSIONS,
    METRICS_PATH,
    NAMESPACE,
    REPO,
    SCRAPED,
    STORE_DIR,
    WORKER_METRICS_PORT,
    assert_ping_probe,
    celery_node,
    config_maps,
    deployments_of,
    expected_services,
    objects,
    py,
    selects,
    templates,
    workloads,
)


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
