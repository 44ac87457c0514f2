"""Settings: the documented defaults, and one clear line naming a wrong variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inference import config
from inference.config import (
    ConfigError,
    Delivery,
    KafkaSettings,
    ModelSettings,
    S3Settings,
    WorkerSettings,
    available_cores,
    build,
)

ALL_VARS = [
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_TASKS_TOPIC", "KAFKA_RESULTS_TOPIC", "KAFKA_DLQ_TOPIC", "KAFKA_GROUP_ID",
    "S3_ENDPOINT_URL", "S3_FRAMES_BUCKET", "MODEL_PATH", "MODEL_CONF", "MODEL_IOU", "MODEL_IMGSZ",
    "MODEL_DEVICE", "MODEL_BACKEND", "WORKER_PROCESSES", "WORKER_MAX_IN_FLIGHT", "MAX_FRAME_BYTES", "MAX_FRAME_PIXELS",
    "METRICS_PORT", "KAFKA_DELIVERY", "KAFKA_TRANSACTION_INTERVAL_MS", "S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION",
]  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ALL_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "best.pt").write_bytes(b"x")


def test_defaults_match_the_design() -> None:
    kafka = build(KafkaSettings)
    assert (kafka.bootstrap_servers, kafka.tasks_topic, kafka.results_topic, kafka.dlq_topic, kafka.group_id) == (
        "localhost:9092",
        "inference_tasks",
        "inference_results",
        "inference_tasks.dlq",
        "inference-group",
    )
    assert (kafka.delivery, kafka.transaction_interval_ms) == (Delivery.AT_LEAST_ONCE, 100)
    s3 = build(S3Settings)
    assert s3.frames_bucket == "frames"
    assert s3.endpoint_url is None
    model = build(ModelSettings)
    assert (model.conf, model.iou, model.imgsz, model.device, model.backend) == (0.25, 0.45, None, "auto", "auto")
    assert build(WorkerSettings).processes >= 1


@pytest.mark.parametrize(
    ("batch_size", "max_in_flight", "limit"),
    [(1, None, 2 * 16), (8, None, 2 * 32), (32, None, 2 * 128), (8, "50", 50)],
)
def test_the_in_flight_bound_holds_four_of_the_batches_each_process_runs(
    monkeypatch: pytest.MonkeyPatch, batch_size: int, max_in_flight: str | None, limit: int
) -> None:
    # The batch size as resolved for the device: an accelerator runs 8 when WORKER_BATCH_SIZE is unset.
    monkeypatch.setenv("WORKER_PROCESSES", "2")
    if max_in_flight is not None:
        monkeypatch.setenv("WORKER_MAX_IN_FLIGHT", max_in_flight)
    assert build(WorkerSettings).in_flight_limit(batch_size) == limit


def test_unprefixed_limits_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_FRAME_BYTES", "1234")
    monkeypatch.setenv("MAX_FRAME_PIXELS", "5678")
    monkeypatch.setenv("METRICS_PORT", "9100")
    worker = build(WorkerSettings)
    assert (worker.max_frame_bytes, worker.max_frame_pixels, worker.metrics_port) == (1234, 5678, 9100)


def test_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("KAFKA_GROUP_ID=from-dotenv\n")
    assert build(KafkaSettings).group_id == "from-dotenv"


@pytest.mark.parametrize(
    ("cls", "var", "value"),
    [
        (WorkerSettings, "WORKER_PROCESSES", "zero"),
        (WorkerSettings, "WORKER_PROCESSES", "0"),
        (WorkerSettings, "WORKER_MAX_IN_FLIGHT", "-3"),
        (WorkerSettings, "MAX_FRAME_BYTES", "big"),
        (WorkerSettings, "MAX_FRAME_PIXELS", "0"),
        (WorkerSettings, "METRICS_PORT", "70000"),
        (ModelSettings, "MODEL_PATH", "/nonexistent/best.pt"),
        (ModelSettings, "MODEL_CONF", "1.5"),
        (ModelSettings, "MODEL_IOU", "abc"),
        (ModelSettings, "MODEL_DEVICE", "tpu"),
        (ModelSettings, "MODEL_BACKEND", "tensorrt"),
        (S3Settings, "S3_ENDPOINT_URL", "localhost:8333"),
        (KafkaSettings, "KAFKA_SECURITY_PROTOCOL", "CARRIER_PIGEON"),
        (KafkaSettings, "KAFKA_DELIVERY", "at_most_once"),
        (KafkaSettings, "KAFKA_TRANSACTION_INTERVAL_MS", "0"),
    ],
)
def test_a_wrong_setting_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, cls: type, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as caught:
        build(cls)
    message = str(caught.value)
    assert message.startswith(f"invalid setting {var}:")
    assert "\n" not in message


def test_the_cli_fails_with_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from inference.__main__ import main

    monkeypatch.setenv("WORKER_PROCESSES", "many")
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "WORKER_PROCESSES" in err[0]


def test_a_missing_model_file_names_model_path_without_pydantic_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODEL_PATH", "/nope.pt")
    with pytest.raises(ConfigError, match=r"^invalid setting MODEL_PATH: no model weights at /nope\.pt$"):
        build(ModelSettings)


def test_a_relative_model_path_missing_here_is_found_in_the_checkout(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "weights").mkdir(parents=True)
    (checkout / "weights" / "demo.pt").write_bytes(b"x")
    monkeypatch.setattr(config, "PROJECT_ROOT", checkout)
    monkeypatch.setenv("MODEL_PATH", "weights/demo.pt")
    assert build(ModelSettings).path == checkout / "weights" / "demo.pt"


def test_a_relative_model_path_in_the_working_directory_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    (checkout / "weights").mkdir(parents=True)
    (checkout / "weights" / "best.pt").write_bytes(b"x")
    monkeypatch.setattr(config, "PROJECT_ROOT", checkout)
    assert build(ModelSettings).path == Path("weights/best.pt")


def test_a_relative_model_path_found_nowhere_names_both_places(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path / "checkout")
    monkeypatch.setenv("MODEL_PATH", "weights/other.pt")
    with pytest.raises(ConfigError) as caught:
        build(ModelSettings)
    elsewhere = tmp_path / "checkout" / "weights" / "other.pt"
    assert str(caught.value) == f"invalid setting MODEL_PATH: no model weights at weights/other.pt (nor at {elsewhere})"


def test_an_absolute_model_path_is_used_as_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    monkeypatch.setenv("MODEL_PATH", "/weights/best.pt")
    with pytest.raises(ConfigError, match=r"no model weights at /weights/best\.pt$"):
        build(ModelSettings)


def test_the_default_model_path_finds_the_checkout_weights_from_anywhere(tmp_path: Path) -> None:
    (tmp_path / "weights" / "best.pt").unlink()
    assert build(ModelSettings).path == Path(__file__).resolve().parents[2] / "weights" / "best.pt"


@pytest.mark.parametrize(
    ("variables", "region"),
    [
        ({}, "us-east-1"),
        ({"AWS_DEFAULT_REGION": "eu-north-1"}, "eu-north-1"),
        ({"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-north-1"}, "eu-west-1"),
        ({"S3_REGION": "ap-south-1", "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-north-1"}, "ap-south-1"),
    ],
)
def test_s3_region_falls_back_to_the_aws_variables(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], region: str
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    s3 = build(S3Settings)
    assert s3.region == region
    assert s3.client_options()["region_name"] == region


@pytest.mark.parametrize(
    ("cpu_max", "cap"),
    [(None, None), ("max 100000\n", None), ("100000 100000\n", 1), ("150000 100000\n", 2), ("50000 100000\n", 1)],
)
def test_available_cores_honours_a_cgroup_quota(tmp_path: Path, cpu_max: str | None, cap: int | None) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    affinity = len(os.sched_getaffinity(0))
    assert available_cores(path) == (affinity if cap is None else min(affinity, cap))
