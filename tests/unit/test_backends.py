"""The ONNX Runtime and OpenVINO backends: cached exports, the thread budget, torch's detections.

Each backend is loaded and run as a pool process runs it (`detector.init_process`, `detector._predict`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from inference import detector
from inference.backends import (
    Backend,
    DetectorConfig,
    cache_path,
    configure_runtime,
    model_file,
    require_bf16,
    resolve_backend,
    resolve_detector,
)
from inference.config import ConfigError, ModelSettings, WorkerSettings
from inference.onnx_model import OnnxModel
from inference.openvino_model import OpenVinoModel
from scripts.synthetic import make_frame
from tests.support import MODEL_PATH

IMGSZ = 320
FRAMES = 20
EXPORTED: list[Backend] = ["onnx", "openvino"]

pytestmark = [
    # Both exporters trace the model with torch.jit, which torch deprecates; nothing for us to act on.
    pytest.mark.filterwarnings("ignore:.*torch.jit.trace:FutureWarning"),
    pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript-based ONNX export:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:The feature will be removed:DeprecationWarning"),
]

Image = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Detection:
    class_id: int
    confidence: float
    box: tuple[float, float, float, float]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo weights, so the exports go to a temporary cache and not weights/.cache."""
    path = tmp_path_factory.mktemp("weights") / "best.pt"
    shutil.copyfile(MODEL_PATH, path)
    return path


@pytest.fixture(scope="module")
def frames() -> list[Image]:
    return [make_frame(np.random.default_rng(seed), 640, 360)[0] for seed in range(FRAMES)]


@pytest.fixture(scope="module")
def torch_detections(weights: Path, frames: list[Image]) -> list[list[Detection]]:
    from ultralytics import YOLO

    model = YOLO(str(weights))
    return [detect(model, frame) for frame in frames]


@pytest.fixture
def restore_runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """configure_runtime changes process-wide state; put it back for the tests that follow."""
    import openvino
    import ultralytics.utils.torch_utils as torch_utils
    from ultralytics.nn.autobackend import AutoBackend

    monkeypatch.setattr(torch_utils, "NUM_THREADS", torch_utils.NUM_THREADS)
    monkeypatch.setitem(AutoBackend._BACKEND_MAP, "onnx", AutoBackend._BACKEND_MAP["onnx"])
    monkeypatch.setattr(openvino, "Core", openvino.Core)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def detect(model: Any, frame: Image) -> list[Detection]:
    boxes = model.predict(frame, conf=0.25, iou=0.45, imgsz=IMGSZ, device="cpu", verbose=False)[0].boxes
    return [
        Detection(int(c), float(s), (b[0], b[1], b[2], b[3]))
        for b, c, s in zip(boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True)
    ]


def load(weights: Path, backend: Backend, threads: int = 1) -> Any:
    """The model of a pool process for `backend`, loaded and warmed up by the pool's initializer."""
    path = str(model_file(weights, backend, IMGSZ))
    detector.init_process(DetectorConfig(path, backend, "cpu", IMGSZ, 0.25, 0.45, threads, 10**8, os.getppid()))
    return loaded().model


def loaded() -> Any:
    """The model the pool process's initializer loaded (its only one)."""
    (model,) = detector._State.models.values()
    return model


def pool_detect(frame: Image) -> list[Detection]:
    """What the pool process loaded last detects on the frame."""
    return [Detection(d.class_id, d.confidence, d.bbox) for d in detector._predict(loaded(), frame)]


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_torch_loads_the_weights_themselves(weights: Path) -> None:
    assert model_file(weights, "torch", IMGSZ) == weights


def test_the_export_is_cached_and_keyed_by_the_weight_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics import YOLO
    from ultralytics.engine.model import Model

    exports: list[str] = []
    export = Model.export

    def counting_export(self: Any, **kwargs: Any) -> Any:
        exports.append(kwargs["format"])
        return export(self, **kwargs)

    monkeypatch.setattr(Model, "export", counting_export)
    weights = tmp_path / "best.pt"
    shutil.copyfile(MODEL_PATH, weights)

    first = model_file(weights, "onnx", IMGSZ)
    assert first.is_file()
    assert model_file(weights, "onnx", IMGSZ) == first
    assert exports == ["onnx"]
    assert cache_path(weights, "onnx", 2 * IMGSZ) != first

    YOLO(str(MODEL_PATH)).save(weights)  # the same model in new bytes: the checkpoint records when it was saved
    assert weights.read_bytes() != MODEL_PATH.read_bytes()
    second = model_file(weights, "onnx", IMGSZ)
    assert second != first
    assert second.is_file()
    assert exports == ["onnx", "onnx"]


def test_a_missing_runtime_package_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else find_spec(name))
    with pytest.raises(RuntimeError, match="MODEL_BACKEND=onnx needs the Python packages onnxruntime"):
        model_file(tmp_path / "best.pt", "onnx", IMGSZ)


@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.usefixtures("restore_runtime")
def test_detections_match_torch(
    backend: Backend, weights: Path, frames: list[Image], torch_detections: list[list[Detection]]
) -> None:
    assert any(torch_detections), "the weights detect nothing on these frames, so agreeing with torch means nothing"
    load(weights, backend)
    for index, (expected, frame) in enumerate(zip(torch_detections, frames, strict=True)):
        unmatched = pool_detect(frame)
        assert len(unmatched) == len(expected), f"frame {index}"
        for want in expected:
            got = max(unmatched, key=lambda d: iou(d.box, want.box))
            unmatched.remove(got)
            assert iou(got.box, want.box) >= 0.95, f"frame {index}: {got} for {want}"
            assert got.class_id == want.class_id, f"frame {index}: {got} for {want}"
            assert got.confidence == pytest.approx(want.confidence, abs=0.02), f"frame {index}: {got} for {want}"


@pytest.mark.usefixtures("restore_runtime")
def test_onnx_runs_without_ultralytics_and_as_ultralytics_does(weights: Path, frames: list[Image]) -> None:
    from ultralytics import YOLO

    model = load(weights, "onnx")
    assert isinstance(model, OnnxModel)
    configure_runtime("onnx", 1)  # the same session options on both sides
    ultralytics_onnx = YOLO(str(model_file(weights, "onnx", IMGSZ)), task="detect")
    for index, frame in enumerate(frames):
        assert pool_detect(frame) == detect(ultralytics_onnx, frame), f"frame {index}: the same session, other numbers"


@pytest.mark.parametrize("architecture", ["yolo11n", "yolo26n"])
@pytest.mark.usefixtures("restore_runtime")
def test_other_architectures_run_as_ultralytics_runs_them(
    architecture: str, tmp_path: Path, frames: list[Image]
) -> None:
    """Weights a user brings: untrained models of newer families, their exports read the same way.

    Untrained, they score every box near zero: a threshold that low gives dozens to hundreds of
    detections a frame (up to the cap of 300), each to compare.
    """
    from ultralytics import YOLO

    weights = tmp_path / f"{architecture}.pt"
    YOLO(f"{architecture}.yaml").save(str(weights))
    path = str(model_file(weights, "onnx", IMGSZ))
    detector.init_process(DetectorConfig(path, "onnx", "cpu", IMGSZ, 1e-7, 0.45, 1, 10**8, os.getppid()))
    ours_loaded = loaded()
    assert isinstance(ours_loaded.model, OnnxModel)
    ours = [detector._predict(ours_loaded, frame) for frame in frames[:3]]
    configure_runtime("onnx", 1)
    theirs = dataclasses.replace(ours_loaded, model=YOLO(path, task="detect"))
    assert all(len(found) >= 20 for found in ours), "too few detections to compare"
    assert ours == [detector._predict(theirs, frame) for frame in frames[:3]]


@pytest.mark.parametrize("backend", EXPORTED)
@pytest.mark.usefixtures("restore_runtime")
def test_the_runtime_keeps_to_the_thread_budget(backend: Backend, weights: Path) -> None:
    model = load(weights, backend, threads=1)
    if backend == "onnx":
        threads = model.session.get_session_options().intra_op_num_threads
    else:
        threads = model.compiled.get_property("INFERENCE_NUM_THREADS")
        # Pinned, every pool process would put its thread on the same first core.
        assert model.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert threads == 1


@pytest.mark.usefixtures("restore_runtime")
def test_onnx_threads_wait_for_work_without_spinning(weights: Path) -> None:
    options = load(weights, "onnx", threads=2).session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.usefixtures("restore_runtime")
def test_torch_keeps_its_thread_count_through_the_first_predict(weights: Path) -> None:
    # select_device would set min(8, cpu_count - 1): 1 on a 2-core machine, 8 on a big one.
    load(weights, "torch", threads=2)  # the initializer's warm-up is the first predict
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("restore_runtime")
def test_openvino_computes_in_f32(weights: Path) -> None:
    import openvino

    model = load(weights, "openvino")
    assert isinstance(model, OpenVinoModel), "the project's own head around OpenVINO, not ultralytics' predictor"
    assert model.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.f32


@pytest.mark.usefixtures("restore_runtime")
def test_bf16_is_asked_for_on_openvino_alone(weights: Path) -> None:
    import openvino

    from inference.openvino_model import has_bf16

    with pytest.raises(ConfigError, match="MODEL_PRECISION=bf16 needs MODEL_BACKEND=openvino"):
        require_bf16("onnx")
    if not has_bf16():
        with pytest.raises(ConfigError, match="MODEL_PRECISION=bf16 needs a CPU with bf16 units"):
            require_bf16("openvino")
        return
    path = str(model_file(weights, "openvino", IMGSZ))
    config = DetectorConfig(path, "openvino", "cpu", IMGSZ, 0.25, 0.45, 1, 10**8, os.getppid(), precision="bf16")
    detector.init_process(config)
    assert loaded().model.compiled.get_property("INFERENCE_PRECISION_HINT") == openvino.Type.bf16


@pytest.mark.usefixtures("restore_runtime")
def test_openvino_runs_without_ultralytics_and_as_ultralytics_does(weights: Path, frames: list[Image]) -> None:
    from ultralytics import YOLO

    load(weights, "openvino")
    configure_runtime("openvino", 1)
    ultralytics_openvino = YOLO(str(model_file(weights, "openvino", IMGSZ)), task="detect")
    for index, frame in enumerate(frames):
        ours, theirs = pool_detect(frame), detect(ultralytics_openvino, frame)
        assert [d.class_id for d in ours] == [d.class_id for d in theirs], f"frame {index}"
        for mine, want in zip(ours, theirs, strict=True):
            assert mine.box == pytest.approx(want.box, abs=1e-3) and mine.confidence == pytest.approx(
                want.confidence, abs=1e-4
            )


@pytest.mark.parametrize("backend", ["torch", *EXPORTED])
@pytest.mark.usefixtures("restore_runtime")
def test_a_batch_detects_what_its_frames_detect_one_by_one(
    backend: Backend, weights: Path, frames: list[Image]
) -> None:
    load(weights, backend)
    # Two shapes in one batch: 16:9 frames and squares run as separate model calls, in the frames' order.
    mixed = [frame if index % 3 else np.ascontiguousarray(frame[:, :360]) for index, frame in enumerate(frames[:9])]
    singles = [pool_detect(frame) for frame in mixed]
    batched = [
        [Detection(d.class_id, d.confidence, d.bbox) for d in found]
        for found in detector._predict_batch(loaded(), mixed)
    ]
    assert any(singles), "nothing detected, so agreeing means nothing"
    for index, (one, many) in enumerate(zip(singles, batched, strict=True)):
        assert [d.class_id for d in many] == [d.class_id for d in one], f"frame {index}"
        for got, want in zip(many, one, strict=True):
            assert got.box == pytest.approx(want.box, abs=1e-2), f"frame {index}"
            assert got.confidence == pytest.approx(want.confidence, abs=1e-4), f"frame {index}"


@pytest.mark.parametrize("backend", EXPORTED)
def test_an_exported_model_path_is_served_as_it_is(backend: Backend, weights: Path) -> None:
    exported = model_file(weights, backend, IMGSZ)
    config = resolve_detector(ModelSettings(path=exported), WorkerSettings(processes=1))
    assert (config.model_path, config.backend, config.imgsz) == (str(exported), backend, IMGSZ)
    assert config.batch_size == 1, "a CPU runs frames one by one unless told otherwise"
    other: Backend = "onnx" if backend == "openvino" else "openvino"
    with pytest.raises(ConfigError, match=f"MODEL_BACKEND={other} cannot read MODEL_PATH"):
        resolve_detector(ModelSettings(path=exported, backend=other), WorkerSettings(processes=1))


def test_read_only_weights_export_to_the_temporary_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = tmp_path / "ro" / "best.pt"
    weights.parent.mkdir()
    shutil.copyfile(MODEL_PATH, weights)
    # chmod cannot make a directory read-only for root, who runs CI here: answer as a mount would.
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: access(path, mode) and Path(path) != weights.parent)
    target = cache_path(weights, "onnx", IMGSZ)
    assert target.parent == Path(tempfile.gettempdir()) / "inference-model-cache"
    assert target.name.startswith("best-") and target.name.endswith(f"-{IMGSZ}.onnx")


@pytest.mark.parametrize(
    ("backend", "device", "resolved"),
    [("auto", "cpu", "onnx"), ("auto", "cuda:0", "torch"), ("openvino", "cpu", "openvino"), ("torch", "cpu", "torch")],
)
def test_the_backend_resolves_per_device(backend: str, device: str, resolved: str) -> None:
    assert resolve_backend(backend, device) == resolved


@pytest.mark.usefixtures("restore_runtime")
def test_a_frame_that_does_not_decode_fails_alone_in_its_batch(weights: Path, frames: list[Image]) -> None:
    import cv2

    from inference.errors import InvalidImage

    load(weights, "onnx")
    jpeg = cv2.imencode(".jpg", frames[0])[1].tobytes()
    replies = detector.detect_batch([(jpeg, None), (b"not an image", None), (detector.WARM_ONLY, None), (jpeg, None)])
    assert [ok for ok, _ in replies] == [True, False, True, True]
    assert isinstance(replies[1][1], InvalidImage)
    first, warm, last = replies[0][1], replies[2][1], replies[3][1]
    assert first.detections and first.detections == last.detections and (first.width, first.height) == (640, 360)
    assert warm.detections == () and warm.width == 0
