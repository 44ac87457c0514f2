"""What runs inside a pool process: models loaded once each, then detections for each frame.

A pool process runs `serve`: `init_process` loads the replica's own model and warms it up, then
`detect` answers each frame read from the replica's socket (framing.py) on the model the frame
names, loading it on first use and keeping at most `max_models` (least recently used out). It
takes encoded image bytes and returns plain Python data, so no numpy array crosses the process
boundary.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from inference import onnx_model
from inference.backends import DetectorConfig, ModelTarget, configure_runtime
from inference.errors import ModelUnavailable
from inference.framing import read_frame, send_reply
from inference.heap import freeze_startup_heap
from inference.image import decode


@dataclass(frozen=True)
class RawDetection:
    class_id: int
    class_name: str
    confidence: float
    bbox: tuple[float, float, float, float]


# A rollout's warm-up: load and warm the model, detect nothing. It crosses the socket as a mark before
# the model part (a pickle never starts with it), never as frame bytes: an empty object is a bad frame.
WARM_ONLY = None
WARM_MARK = b"W"


@dataclass(frozen=True)
class DetectOutput:
    width: int
    height: int
    detections: tuple[RawDetection, ...]
    detect_ms: float
    # Set when this frame had to load its model first: the time it took and the models it pushed out.
    load_ms: float = 0.0
    evicted: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Loaded:
    target: ModelTarget
    model: Any


class _State:
    config: DetectorConfig | None = None
    # Least recently used first.
    models: ClassVar[OrderedDict[tuple[str, int], _Loaded]] = OrderedDict()


def init_process(config: DetectorConfig) -> None:
    """Pool initializer: pin the thread count, load the replica's own model, warm it up."""
    import cv2

    _die_with_parent(config.parent_pid)
    # processes x threads <= cores: oversubscribed BLAS threads are the classic CPU slowdown.
    os.environ["OMP_NUM_THREADS"] = str(config.threads)
    cv2.setNumThreads(1)
    _State.config = config
    _State.models = OrderedDict()
    _State.models[(config.model_path, config.imgsz)] = _warmed(config, config.local)
    freeze_startup_heap()


def _warmed(config: DetectorConfig, target: ModelTarget) -> _Loaded:
    loaded = _Loaded(target, _load(config, target))
    _predict(loaded, np.zeros((target.imgsz, target.imgsz, 3), dtype=np.uint8))
    return loaded


def _load(config: DetectorConfig, target: ModelTarget) -> Any:
    """An OnnxModel for an ONNX export it reads (no torch in this process); ultralytics' YOLO otherwise."""
    if config.backend == "onnx":
        model = onnx_model.load(target.path, target.imgsz, config.threads, config.device)
        if model is not None:
            return model
    configure_runtime(config.backend, config.threads)
    from ultralytics import YOLO

    return YOLO(target.path, task="detect")


def _model_for(target: ModelTarget) -> tuple[_Loaded, float, tuple[str, ...]]:
    """The loaded model for `target`, loading it (and evicting the least recently used) when it is not."""
    config = _State.config
    assert config is not None, "init_process has not run in this process"
    key = (target.path, target.imgsz)
    loaded = _State.models.get(key)
    if loaded is not None:
        _State.models.move_to_end(key)
        return loaded, 0.0, ()
    started = time.perf_counter()
    try:
        loaded = _warmed(config, target)
    except Exception as exc:  # noqa: BLE001 - weights that do not load are the model's failure, not the frame's
        raise ModelUnavailable(f"model {target.label} does not load: {type(exc).__name__}: {exc}"[:500]) from None
    _State.models[key] = loaded
    evicted = []
    while len(_State.models) > config.max_models:
        _, old = _State.models.popitem(last=False)
        evicted.append(old.target.label)
    return loaded, (time.perf_counter() - started) * 1000, tuple(evicted)


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the replica dies, even by SIGKILL.

    Otherwise pool processes of a killed replica live on, each holding a loaded model,
    until the host runs out of memory.
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the replica died before the line above took effect
        os._exit(1)


def _predict(loaded: _Loaded, image: npt.NDArray[np.uint8]) -> list[RawDetection]:
    config, model = _State.config, loaded.model
    assert config is not None, "init_process has not run in this process"
    if isinstance(model, onnx_model.OnnxModel):
        xyxy, classes, scores = model.predict(image, config.conf, config.iou)
        names = model.names
    else:
        result = model.predict(image, conf=config.conf, iou=config.iou, imgsz=loaded.target.imgsz,
                               device=config.device, verbose=False)[0]  # fmt: skip
        xyxy, names = result.boxes.xyxy.cpu().tolist(), result.names
        classes, scores = result.boxes.cls.cpu().tolist(), result.boxes.conf.cpu().tolist()
    return [
        RawDetection(int(c), str(names[int(c)]), float(s), (b[0], b[1], b[2], b[3]))
        for b, c, s in zip(xyxy, classes, scores, strict=True)
    ]


def detect(data: bytes | None, target: ModelTarget | None) -> DetectOutput:
    """Pool entry point: encoded image bytes in, detections in original pixel coordinates out.

    `target` None is the replica's own model; WARM_ONLY bytes load the model and detect nothing.
    """
    config = _State.config
    assert config is not None, "init_process has not run in this process"
    loaded, load_ms, evicted = _model_for(target or config.local)
    if data is WARM_ONLY:
        return DetectOutput(0, 0, (), 0.0, load_ms, evicted)
    started = time.perf_counter()
    image = decode(data, config.max_pixels)
    detections = _predict(loaded, image)
    height, width = image.shape[:2]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return DetectOutput(int(width), int(height), tuple(detections), elapsed_ms, load_ms, evicted)


Init = Callable[[DetectorConfig], None]
Entry = Callable[[bytes | None, ModelTarget | None], DetectOutput]


def serve(sock: socket.socket, config: DetectorConfig, init: Init, entry: Entry) -> None:
    """A pool process: load the model, then answer frames from the socket in order until it closes."""
    # The replica drains on SIGTERM/SIGINT and then closes the lanes: a signal to the whole process
    # group must not kill the frames it is draining. A dying replica takes its lanes along (init).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        init(config)
    except Exception as exc:  # noqa: BLE001 - the replica reports why the model did not load
        send_reply(sock, (False, f"{type(exc).__name__}: {exc}"))
        return
    send_reply(sock, (True, None))
    frames = sock.makefile("rb")
    targets: dict[bytes, ModelTarget] = {}
    while (message := read_frame(frames)) is not None:
        model, data = message
        warm = model.startswith(WARM_MARK)
        try:
            target = _target(model.removeprefix(WARM_MARK) if warm else model, targets)
            reply: tuple[bool, object] = (True, entry(WARM_ONLY if warm else data, target))
        except Exception as exc:  # noqa: BLE001 - the frame's caller decides what the error means
            reply = (False, exc)
        send_reply(sock, reply)


def _target(model: bytes, seen: dict[bytes, ModelTarget]) -> ModelTarget | None:
    """The frame's model, unpickled once per distinct model (the replica's own is sent as nothing)."""
    if not model:
        return None
    target = seen.get(model)
    if target is None:
        target = seen[model] = pickle.loads(model)  # noqa: S301 - written by our own replica
    return target
