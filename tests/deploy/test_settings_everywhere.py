"""Settings agree everywhere: every shared.config field is documented in .env.example (or
listed with a reason), with its default, and passed alike by compose and Kubernetes.
"""

from __future__ import annotations

import re
from typing import Any

from shared.config import Settings
from tests.deploy.manifests import (
    ADVANCED,
    API_ONLY_PREFIXES,
    API_SECRETS,
    COMPOSE_ONLY,
    REPO,
    SECRETS,
    SET_BY_DEPLOYMENT,
    config_maps,
    env_example,
    env_name,
    example_settings,
    objects,
    workloads,
)


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
