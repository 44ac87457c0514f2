"""Settings, one pydantic-settings class per concern, validated once at start-up.

Variable names are part of the contract (other programs and deployments set them). A
wrong value fails start-up with one line naming the variable (`load_settings`).
"""

from __future__ import annotations

import math
import os
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_COMMON = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True)


# MODEL_PRECISION: f32 everywhere; bf16 on OpenVINO with a CPU's bf16 units; fp16 on torch with CUDA.
Precision = Literal["f32", "bf16", "fp16"]


class ConfigError(ValueError):
    """A setting is wrong; the message names the environment variable."""


class Delivery(StrEnum):
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"


class KafkaSettings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON, env_prefix="KAFKA_")

    bootstrap_servers: str = Field("localhost:9092", min_length=1)
    tasks_topic: str = Field("inference_tasks", min_length=1)
    results_topic: str = Field("inference_results", min_length=1)
    dlq_topic: str = Field("inference_tasks.dlq", min_length=1)
    # The model registry: compacted, one record per model name (its current version).
    models_topic: str = Field("inference_models", min_length=1)
    # Each video's progress, compacted by video_id: published by whatever assembles the video.
    status_topic: str = Field("video_status", min_length=1)
    group_id: str = Field("inference-group", min_length=1)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    # The CA bundle to trust instead of the system's (a private CA), for SSL and SASL_SSL.
    ssl_cafile: Path | None = None
    # at_least_once by default, as in Kafka Streams: exactly_once holds each answer for its
    # transaction and a producer per partition.
    delivery: Delivery = Delivery.AT_LEAST_ONCE
    # exactly_once: how often each partition's finished prefix is committed in a transaction; the
    # results become visible to read_committed consumers only then (100 ms: Kafka Streams' value).
    transaction_interval_ms: int = Field(100, ge=10, le=60_000)
    # How long the group waits for a member to rejoin after a rebalance began: above the member's
    # revocation (drain, then last commit), or a slow member is evicted mid-drain. None: derived
    # from WORKER_DRAIN_TIMEOUT_S (`rebalance_timeout_ms` below).
    rebalance_timeout_ms: int | None = Field(None, ge=1000, le=3_600_000)

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by every aiokafka client of the project."""
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_plain_username
            if self.sasl_plain_password is not None:
                options["sasl_plain_password"] = self.sasl_plain_password.get_secret_value()
        if self.security_protocol in {"SSL", "SASL_SSL"}:
            from aiokafka.helpers import create_ssl_context

            cafile = str(self.ssl_cafile) if self.ssl_cafile else None
            options["ssl_context"] = create_ssl_context(cafile=cafile)
        return options

    @field_validator("ssl_cafile")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no CA bundle at {value}")
        return value


class S3Settings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON, env_prefix="S3_")

    endpoint_url: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    # S3_REGION first, then the AWS SDKs' standard variables, so one AWS_REGION serves every client.
    region: str = Field("us-east-1", validation_alias=AliasChoices("S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"))
    frames_bucket: str = Field("frames", min_length=3, max_length=63)
    models_bucket: str = Field("models", min_length=3, max_length=63)
    results_bucket: str = Field("results", min_length=3, max_length=63)
    # The buckets a task may name, comma-separated, `*` for any; unset: the frames bucket alone.
    # A task is a request from whoever may write the topic: it must not reach every bucket the worker can.
    allowed_buckets: str | None = None
    max_connections: int = Field(32, ge=1, le=1024)

    @field_validator("allowed_buckets")
    @classmethod
    def _bucket_names(cls, value: str | None) -> str | None:
        if value is not None and not [name for name in value.split(",") if name.strip()]:
            raise ValueError("must name at least one bucket, or `*`")
        return value

    @cached_property
    def allowed_names(self) -> frozenset[str]:
        # Parsed once, not for every frame a task names a bucket in.
        if self.allowed_buckets is None:
            return frozenset({self.frames_bucket})
        return frozenset(name.strip() for name in self.allowed_buckets.split(","))

    def allows(self, bucket: str | None) -> bool:
        """Whether a task may name this bucket (None: the frames bucket)."""
        names = self.allowed_names
        return "*" in names or (bucket or self.frames_bucket) in names

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value or None

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"region_name": self.region}
        if self.endpoint_url:
            options["endpoint_url"] = self.endpoint_url
        if self.access_key_id:
            options["aws_access_key_id"] = self.access_key_id
        if self.secret_access_key is not None:
            options["aws_secret_access_key"] = self.secret_access_key.get_secret_value()
        return options


# The checkout holding the `inference` package, where weights/ lives beside it.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ModelSettings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON, env_prefix="MODEL_", protected_namespaces=())

    # Relative: the working directory, else the checkout, so the demo weights are found from anywhere.
    path: Path = Path("weights/best.pt")
    conf: float = Field(0.25, ge=0.0, le=1.0)
    iou: float = Field(0.45, ge=0.0, le=1.0)
    # None: the imgsz the weights were trained at, read from the checkpoint.
    imgsz: int | None = Field(None, ge=32, le=4096)
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+|mps)$")
    # auto: ONNX Runtime on the CPU, where it is the fastest backend, torch on a GPU; an exported
    # MODEL_PATH (.onnx, *_openvino_model) picks the backend that reads it.
    backend: Literal["auto", "torch", "onnx", "openvino"] = "auto"
    # bf16: OpenVINO computes in bfloat16 on CPUs with bf16 units (AVX512-BF16, AMX); fp16: torch
    # computes in half precision on a CUDA GPU.
    precision: Precision = "f32"
    # Registry models are downloaded here, verified by sha256, and exported beside their weights.
    cache_dir: Path = Field(default_factory=lambda: Path.home() / ".cache" / "inference" / "models")

    @field_validator("path")
    @classmethod
    def _exists(cls, value: Path) -> Path:
        if _model_at(value):
            return value
        if not value.is_absolute() and _model_at(PROJECT_ROOT / value):
            return PROJECT_ROOT / value
        elsewhere = "" if value.is_absolute() else f" (nor at {PROJECT_ROOT / value})"
        raise ValueError(f"no model weights at {value}{elsewhere}")


def _model_at(path: Path) -> bool:
    """Weights or an ONNX file, or an OpenVINO export: a directory holding its .xml."""
    return path.is_file() or (path.is_dir() and any(path.glob("*.xml")))


CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 CPU quota.

    A container limited to 2 CPUs on a 16-core node still sees 16 cores in its affinity mask;
    sizing threads from that oversubscribes the quota and the kernel throttles the pod.
    """
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return max(1, cores)
    if quota != "max" and int(period) > 0:
        cores = min(cores, math.ceil(int(quota) / int(period)))
    return max(1, cores)


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON, env_prefix="WORKER_")

    processes: int = Field(default_factory=available_cores, ge=1, le=256)
    max_in_flight: int | None = Field(None, ge=1, le=10000)
    frame_timeout_s: float = Field(60.0, gt=0)
    frame_attempts: int = Field(3, ge=1, le=10)
    drain_timeout_s: float = Field(30.0, gt=0)
    # Models a pool process keeps loaded at once; the least recently used is unloaded for another.
    max_models: int = Field(4, ge=1, le=64)
    # While a higher priority has tasks waiting, the lower ones get at most this share of the slots.
    low_priority_share: float = Field(0.1, gt=0.0, le=1.0)
    # Stop taking work when more than this share of the last `dlq_window` tasks went to the DLQ.
    dlq_max_ratio: float = Field(0.5, gt=0.0, le=1.0)
    dlq_window: int = Field(200, ge=1, le=1_000_000)
    # Frames a pool process runs as one batch, waiting at most batch_wait_ms for the batch to fill.
    # None: 1 on a CPU, where a batch is no faster than its frames one by one, 8 on an accelerator.
    batch_size: int | None = Field(None, ge=1, le=256)
    batch_wait_ms: float = Field(5.0, ge=0.0, le=1000.0)
    max_frame_bytes: int = Field(
        20 * 1024 * 1024, ge=1, validation_alias=AliasChoices("MAX_FRAME_BYTES", "WORKER_MAX_FRAME_BYTES")
    )
    max_frame_pixels: int = Field(
        40_000_000, ge=1, validation_alias=AliasChoices("MAX_FRAME_PIXELS", "WORKER_MAX_FRAME_PIXELS")
    )
    metrics_port: int | None = Field(
        None, ge=0, le=65535, validation_alias=AliasChoices("METRICS_PORT", "WORKER_METRICS_PORT")
    )

    def in_flight_limit(self, batch_size: int) -> int:
        """WORKER_MAX_IN_FLIGHT, else per process 4 of the batches it runs (`batch_size`, as resolved
        for the device) and at least 16 frames."""
        # A frame spends several times its detection in flight (fetch, queue, publish until acked):
        # 16 per process keep the pool busy where fewer leave it idle (docs/performance.md).
        return self.max_in_flight or max(16, 4 * batch_size) * self.processes


class LogSettings(BaseSettings):
    model_config = SettingsConfigDict(**_COMMON, env_prefix="LOG_")

    format: Literal["json", "console"] = "json"
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


# A revocation's last commit after its drain: four Kafka steps of commit.STEP_TIMEOUT_S at most
# (a recovery's producer start and committed read, the transaction, the producer's stop).
REVOCATION_COMMIT_S = 20.0
# Room above the revocation for the JoinGroup round trip and a busy event loop.
REBALANCE_MARGIN_S = 10.0


def rebalance_timeout_ms(kafka: KafkaSettings, worker: WorkerSettings) -> int:
    """The consumer's rebalance timeout: KAFKA_REBALANCE_TIMEOUT_MS, or the revocation's bound plus a margin.

    aiokafka's default is the session timeout (10 s), and revocation drains for up to
    WORKER_DRAIN_TIMEOUT_S before it commits: a shorter timeout evicts a member mid-drain, its
    last commit fails, and its frames are answered twice.
    """
    revocation_s = worker.drain_timeout_s + REVOCATION_COMMIT_S
    if kafka.rebalance_timeout_ms is None:
        return math.ceil((revocation_s + REBALANCE_MARGIN_S) * 1000)
    if kafka.rebalance_timeout_ms <= revocation_s * 1000:
        raise ConfigError(
            f"invalid setting KAFKA_REBALANCE_TIMEOUT_MS: {kafka.rebalance_timeout_ms} ms does not cover a "
            f"revocation, WORKER_DRAIN_TIMEOUT_S ({worker.drain_timeout_s:g} s) plus its last commit "
            f"({REVOCATION_COMMIT_S:g} s); set it above {revocation_s * 1000:.0f} or lower the drain timeout"
        )
    return kafka.rebalance_timeout_ms


class Settings:
    """Every concern of the worker, built once in __main__ and passed down."""

    def __init__(
        self,
        kafka: KafkaSettings,
        s3: S3Settings,
        model: ModelSettings,
        worker: WorkerSettings,
        log: LogSettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.s3 = s3
        self.model = model
        self.worker = worker
        self.log = log or LogSettings()
        # Checked here: the relation spans two concerns, so no single class can validate it.
        self.rebalance_timeout_ms = rebalance_timeout_ms(kafka, worker)


T = TypeVar("T", bound=BaseSettings)


def _variable_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    field_name = str(loc[0]) if loc else "?"
    field = cls.model_fields.get(field_name)
    if field is None:
        return field_name.upper()
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    if isinstance(alias, str):
        return alias
    prefix = str(cls.model_config.get("env_prefix", ""))
    return f"{prefix}{field_name}".upper()


def build(cls: type[T], **overrides: Any) -> T:
    """Instantiate one settings class, turning a validation error into a ConfigError."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = _variable_name(cls, tuple(first["loc"]))
        # pydantic prefixes a validator's own message with the exception's kind; the message says it all.
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {name}: {message}") from None


def load_settings() -> Settings:
    return Settings(
        kafka=build(KafkaSettings),
        s3=build(S3Settings),
        model=build(ModelSettings),
        worker=build(WorkerSettings),
        log=build(LogSettings),
    )
