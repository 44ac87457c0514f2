"""What runs inside a pool process: the model loaded once, then detections for each frame.

A pool process runs `serve`: `init_process` loads the model once and warms it up, then
`detect` answers each frame read from the replica's socket (framing.py). It takes encoded
image bytes and returns plain Python data, so no numpy array crosses the process boundary.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from inference import onnx_model
from inference.backends import DetectorConfig, configure_runtime
from inference.framing import read_frame, send_reply
from inference.heap import freeze_startup_heap
from inference.image import decode


@dataclass(frozen=True)
class RawDetection:
    class_id: int
    class_name: str
    confidence: float
    bbox: tuple[float, float, float, float]


@dataclass(frozen=True)
class DetectOutput:
    width: int
    height: int
    detections: tuple[RawDetection, ...]
    detect_ms: float


class _State:
    model: Any = None
    config: DetectorConfig | None = None


def init_process(config: DetectorConfig) -> None:
    """Pool initializer: pin the thread count, load the model once, warm it up."""
    import cv2

    _die_with_parent(config.parent_pid)
    # processes x threads <= cores: oversubscribed BLAS threads are the classic CPU slowdown.
    os.environ["OMP_NUM_THREADS"] = str(config.threads)
    cv2.setNumThreads(1)
    _State.model = _load(config)
    _State.config = config
    warmup = np.zeros((config.imgsz, config.imgsz, 3), dtype=np.uint8)
    _predict(warmup)
    freeze_startup_heap()


def _load(config: DetectorConfig) -> Any:
    """An OnnxModel for an ONNX export it reads (no torch in this process); ultralytics' YOLO otherwise."""
    if config.backend == "onnx":
        model = onnx_model.load(config.model_path, config.imgsz, config.threads, config.device)
        if model is not None:
            return model
    configure_runtime(config.backend, config.threads)
    from ultralytics import YOLO

    return YOLO(config.model_path, task="detect")


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


def _predict(image: npt.NDArray[np.uint8]) -> list[RawDetection]:
    config, model = _State.config, _State.model
    assert config is not None and model is not None, "init_process has not run in this process"
    if isinstance(model, onnx_model.OnnxModel):
        xyxy, classes, scores = model.predict(image, config.conf, config.iou)
        names = model.names
    else:
        result = model.predict(image, conf=config.conf, iou=config.iou, imgsz=config.imgsz, device=config.device,
                               verbose=False)[0]  # fmt: skip
        xyxy, names = result.boxes.xyxy.cpu().tolist(), result.names
        classes, scores = result.boxes.cls.cpu().tolist(), result.boxes.conf.cpu().tolist()
    return [
        RawDetection(int(c), str(names[int(c)]), float(s), (b[0], b[1], b[2], b[3]))
        for b, c, s in zip(xyxy, classes, scores, strict=True)
    ]


def detect(data: bytes) -> DetectOutput:
    """Pool entry point: encoded image bytes in, detections in original pixel coordinates out."""
    config = _State.config
    assert config is not None, "init_process has not run in this process"
    started = time.perf_counter()
    image = decode(data, config.max_pixels)
    detections = _predict(image)
    height, width = image.shape[:2]
    elapsed_ms = (time.perf_counter() - started) * 1000
    return DetectOutput(int(width), int(height), tuple(detections), elapsed_ms)


Init = Callable[[DetectorConfig], None]
Entry = Callable[[bytes], DetectOutput]


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
    while (data := read_frame(frames)) is not None:
        try:
            reply: tuple[bool, object] = (True, entry(data))
        except Exception as exc:  # noqa: BLE001 - the frame's caller decides what the error means
            reply = (False, exc)
        send_reply(sock, reply)
