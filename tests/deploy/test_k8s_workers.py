"""Workers and trainers in k8s: the dataset-import worker, trainer resources, KEDA on
training jobs, the read-only ImageNet cache.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from shared.db.models import JobStatus, TrainingJob
from tests.deploy.manifests import (
    STORE_DIR,
    TORCH_HOME,
    dockerfile_stages,
    gib,
    instruction,
    objects,
    workloads,
)


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
