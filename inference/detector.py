"""Everything that runs inside pool processes: the per-process model, decode, predict.

A pool process runs `serve`: `init_process` loads the model once and warms it up, then
`detect` answers each frame read from the replica's socket. It takes encoded image bytes
and returns plain Python data, so no numpy array crosses the process boundary.
"""

from __future__ import annotations

import ctypes
import gc
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from inference import onnx_model
from inference.backends import Backend, configure_runtime
from inference.errors import InvalidImage

# Each message between a replica and a pool process: its length, then the bytes.
FRAME_HEADER = struct.Struct("<Q")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the image size (all SOFn but DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class DetectorConfig:
    """What a pool process needs to build its model; picklable for the spawn context."""

    model_path: str  # what `backend` loads: the .pt itself or its export
    backend: Backend
    device: str
    imgsz: int
    conf: float
    iou: float
    threads: int
    max_pixels: int
    # The replica's pid, taken where the config is built: pool processes die with it.
    parent_pid: int = field(default_factory=os.getpid)


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


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def resolve_backend(backend: str, device: str) -> Backend:
    """`auto` is ONNX Runtime on the CPU, where it beats torch, and torch on an accelerator."""
    if backend == "auto":
        return "onnx" if device == "cpu" else "torch"
    if backend in ("torch", "onnx", "openvino"):
        return backend  # type: ignore[return-value]
    raise ValueError(f"unknown model backend {backend!r}")


def checkpoint_imgsz(model_path: str | Path) -> int:
    """The imgsz the weights were trained at (ultralytics keeps it in train_args); 640 when unknown."""
    from ultralytics import YOLO

    args = getattr(YOLO(str(model_path)).model, "args", None) or {}
    imgsz = args.get("imgsz") if isinstance(args, dict) else None
    if isinstance(imgsz, int):
        return imgsz
    if isinstance(imgsz, (list, tuple)) and imgsz and isinstance(imgsz[0], int):
        return max(int(v) for v in imgsz)
    return 640


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


def freeze_startup_heap() -> None:
    """Move everything allocated at start-up out of the garbage collector's sight.

    A full collection scans every tracked object: ~350k after loading the model here (~130 ms),
    ~100 ms in the replica's main process (botocore's service models, aiokafka), where each
    one blocked the event loop and every frame in flight waited it out (the p99 at half load).
    Frozen objects are never scanned; what the start-up heap holds lives as long as the process.
    """
    gc.collect()
    gc.freeze()


def _die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when the replica dies, even by SIGKILL.

    Otherwise pool processes of a killed replica live on, each holding a loaded model (~0.4 GB),
    until the host runs out of memory.
    """
    if sys.platform != "linux":
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the replica died before the line above took effect
        os._exit(1)


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG or PNG header, without decoding the pixels."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise InvalidImage("truncated PNG header")
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    raise InvalidImage("not a JPEG or PNG image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidImage("corrupt JPEG marker stream")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if length < 2:
            raise InvalidImage("corrupt JPEG segment length")
        pos += 2 + length
    raise InvalidImage("truncated JPEG: no frame header")


def decode(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Check the declared size first (a small file can declare a huge image), then decode."""
    import cv2

    if not data:
        raise InvalidImage("empty object")
    width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image declares size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidImage(f"image is {width}x{height}, over the limit of {max_pixels} pixels")
    if _looks_truncated(data):
        raise InvalidImage("truncated JPEG: no end-of-image marker")
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InvalidImage("image could not be decoded")
    return np.asarray(decoded, dtype=np.uint8)


def _looks_truncated(data: bytes) -> bool:
    # libjpeg pads a cut-off stream with grey and succeeds; the missing EOI marker gives it away.
    return data.startswith(b"\xff\xd8") and b"\xff\xd9" not in data[-64:]


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
        _send(sock, (False, f"{type(exc).__name__}: {exc}"))
        return
    _send(sock, (True, None))
    frames = sock.makefile("rb")
    while (data := _read(frames)) is not None:
        try:
            reply: tuple[bool, object] = (True, entry(data))
        except Exception as exc:  # noqa: BLE001 - the frame's caller decides what the error means
            reply = (False, exc)
        _send(sock, reply)


def _send(sock: socket.socket, reply: tuple[bool, object]) -> None:
    try:
        payload = pickle.dumps(reply)
    except Exception:  # noqa: BLE001 - an error that does not pickle still answers its frame
        payload = pickle.dumps((False, RuntimeError(f"{type(reply[1]).__name__} (not picklable): {reply[1]!r}"[:1000])))
    sock.sendall(FRAME_HEADER.pack(len(payload)) + payload)


def _read(stream: BinaryIO) -> bytes | None:
    """One frame from the replica; None when it closed the socket."""
    header = stream.read(FRAME_HEADER.size)
    if len(header) < FRAME_HEADER.size:
        return None
    (size,) = FRAME_HEADER.unpack(header)
    data = stream.read(size)
    return data if len(data) == size else None
