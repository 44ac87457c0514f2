"""`python -m inference quantize` on the demo weights: frames from the real S3 and from a folder."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.backends import model_digest
from inference.quantize import EXIT_BELOW_MINIMUM, EXIT_USAGE, default_backend, failed_name
from inference.quantize import main as quantize
from tests.integration.test_worker import StartWorker, results_for
from tests.stack import Endpoints
from tests.support import MODEL_PATH, REPO_ROOT, Topics, result_values, stage_video, synthetic_jpeg, upload

FRAMES = 24  # 19 calibrate, every fifth (4) is held out


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inference", "quantize", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_an_s3_prefix_calibrates_a_model_that_agrees_with_fp32(stack: Endpoints, tmp_path: Path) -> None:
    prefix = f"quantize-{uuid.uuid4().hex[:8]}"
    asyncio.run(upload(stack, {f"{prefix}/{i:04d}.jpg": synthetic_jpeg(7000 + i) for i in range(FRAMES)}))
    out = tmp_path / "demo_int8_openvino_model"

    done = _run(stack.env(), str(MODEL_PATH), "--frames", f"s3://frames/{prefix}/", "--out", str(out),
                "--backend", "openvino", "--min-agreement", "0")  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert any(out.glob("*.xml")) and any(out.glob("*.bin")) and (out / "metadata.yaml").is_file()
    report = json.loads((tmp_path / "demo_int8_openvino_model.json").read_text())
    assert report["passed"] is True and report["model"] == str(out)
    assert [a["preset"] for a in report["attempts"]] == ["performance"]  # the fastest passed: no second try
    assert (report["calibration_frames"], report["held_out_frames"]) == (FRAMES - FRAMES // 5, FRAMES // 5)
    assert 0.9 <= report["agreement"] <= 1.0, report
    assert report["fp32"]["frames_per_s"] > 0 and report["int8"]["frames_per_s"] > 0
    assert "agreement with FP32: mAP50" in done.stdout and "frames/s" in done.stdout
    assert "Statistics collection" not in done.stdout  # NNCF's progress stays off the summary


@pytest.mark.parametrize("backend", ["openvino", "onnx"])
def test_frames_that_do_not_calibrate_fall_below_the_minimum(tmp_path: Path, backend: str) -> None:
    # Flat grey frames calibrate nothing; the held-out ones (every fifth) are real: the guard must see it.
    frames = tmp_path / "frames"
    frames.mkdir()
    grey = np.full((360, 640, 3), 114, np.uint8)
    for i in range(FRAMES):
        image = cv2.imdecode(np.frombuffer(synthetic_jpeg(8000 + i), np.uint8), cv2.IMREAD_COLOR)
        cv2.imwrite(str(frames / f"{i:04d}.png"), image if i % 5 == 4 else grey)
    out = tmp_path / ("bad_int8_openvino_model" if backend == "openvino" else "bad_int8.onnx")

    code = quantize([str(MODEL_PATH), "--frames", str(frames), "--out", str(out), "--backend", backend])

    assert code == EXIT_BELOW_MINIMUM
    failed = failed_name(out)
    assert not out.exists() and (any(failed.glob("*.xml")) if backend == "openvino" else failed.is_file())
    report = json.loads(failed.with_name(f"{failed.name}.json").read_text())
    assert report["passed"] is False and report["agreement"] < 0.99
    presets = ["performance", "mixed"] if backend == "openvino" else ["minmax"]
    assert [a["preset"] for a in report["attempts"]] == presets  # every preset tried before giving up


@pytest.mark.parametrize("content", ["missing", "empty", "not images"])
def test_a_frames_folder_without_frames_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    frames = tmp_path / "frames"
    if content != "missing":
        frames.mkdir()
    if content == "not images":
        (frames / "notes.txt").write_text("no frames here")

    code = quantize([str(MODEL_PATH), "--frames", str(frames), "--out", str(tmp_path / "m.onnx"), "--backend", "onnx"])

    assert code == EXIT_USAGE
    assert str(frames) in capsys.readouterr().err
    assert not list(tmp_path.glob("m*"))


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--min-agreement", "1.5"], "--min-agreement"),
        (["--out", "model.onnx", "--backend", "openvino"], "--out"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str], named: str) -> None:
    base = {"--frames": str(tmp_path), "--out": str(tmp_path / "m_openvino_model")}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    argv = [str(MODEL_PATH), *[part for pair in base.items() for part in pair]]

    done = _run({}, *argv)

    assert done.returncode == EXIT_USAGE
    assert named in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_the_default_backend_is_openvino_where_nncf_is_installed() -> None:
    assert default_backend() == "openvino"


INT8_DEMO = REPO_ROOT / "weights" / "best_int8_openvino_model"


def test_a_worker_serves_the_int8_demo_model_as_it_is(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    asyncio.run(stage_video(stack, topics, "int8", 12))
    # Batches of 4: the exported model's frames also run together through the project's own head.
    worker = start_worker(MODEL_PATH=str(INT8_DEMO), WORKER_BATCH_SIZE="4", WORKER_BATCH_WAIT_MS="50")
    worker.wait_started()
    values = result_values(results_for(stack, topics, expected=12))
    assert worker.terminate() == 0
    assert len(values) == 12 and all(v["status"] == "ok" for v in values), values[:2]
    assert sum(len(v["detections"]) for v in values) >= 12, "the demo video has objects in every frame"
    assert {v["model"]["name"] for v in values} == {INT8_DEMO.name}
    assert {v["model"]["sha256"] for v in values} == {model_digest(INT8_DEMO)}
