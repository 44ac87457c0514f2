"""The console's deployment files (`runner serve`): Kubernetes Deployment + Service, the compose
service; they agree with ApiSettings and with the worker's manifests they share settings with."""

from __future__ import annotations

from typing import Any

import pytest

from inference.config import build
from runner.serve.settings import ApiSettings
from tests.unit.test_deploy import K8S, _built, _documents, _service

PORT = 8000


def _console(kind: str) -> dict[str, Any]:
    found = [doc for path in sorted(K8S.glob("console-*.yaml")) for doc in _documents(path) if doc["kind"] == kind]
    assert len(found) == 1, f"expected one console {kind}, found {len(found)}"
    return found[0]


def _container() -> dict[str, Any]:
    (container,) = _console("Deployment")["spec"]["template"]["spec"]["containers"]
    found: dict[str, Any] = container
    return found


def _api_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> ApiSettings:
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    return build(ApiSettings)


def test_the_console_runs_runner_serve_on_all_interfaces_with_keys_from_a_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployment = _console("Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate", "two servers at once would split the results"
    container = _container()
    assert container["command"] == ["python", "-m", "runner", "serve"]
    env = {item["name"]: item["value"] for item in container["env"]}
    sources = container["envFrom"]
    assert {"configMapRef": {"name": "inference-worker-config"}} in sources
    (keys,) = (s["secretRef"] for s in sources if s.get("secretRef", {}).get("name") == "runner-console-secrets")
    assert keys.get("optional", False) is False, "without keys the pod must not start"
    example = _console("Secret")
    assert example["metadata"]["name"] == "runner-console-secrets"
    settings = _api_settings({**env, **example["stringData"]}, monkeypatch)
    assert (settings.host, settings.port) == ("0.0.0.0", PORT)
    assert settings.key_set
    assert {name for name in env if name.startswith("API_")} <= {f"API_{f}".upper() for f in ApiSettings.model_fields}


def test_the_console_probes_and_service_use_its_http_port() -> None:
    container = _container()
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("http", PORT)
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    service = _console("Service")["spec"]
    pod_labels = _console("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    (exposed,) = service["ports"]
    assert (exposed["port"], exposed["targetPort"]) == (PORT, "http")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    assert "/tmp" in mounts, "uploads spool to /tmp"


def test_kustomize_gives_the_console_the_workers_image() -> None:
    images = {
        doc["metadata"]["name"]: doc["spec"]["template"]["spec"]["containers"][0]["image"]
        for doc in _built(K8S)
        if doc["kind"] == "Deployment"
    }
    assert images["runner-console"] == images["inference-worker"]


def test_the_compose_console_serves_on_port_8000_with_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    console = _service("console")
    assert console["entrypoint"] == ["python", "-m", "runner", "serve"]
    assert any(
        str(mapping).endswith(f":{PORT}") and str(mapping).startswith("127.0.0.1:") for mapping in console["ports"]
    )
    env = {name: str(value) for name, value in console["environment"].items()}
    env["API_KEYS"] = env["API_KEYS"].replace("${API_KEYS:-", "").rstrip("}")
    settings = _api_settings(env, monkeypatch)
    assert settings.port == PORT and settings.key_set
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == _service("worker")["environment"]["KAFKA_BOOTSTRAP_SERVERS"]
    assert "/healthz" in " ".join(console["healthcheck"]["test"])
