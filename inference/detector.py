"""What runs inside a pool process: models loaded once each, then detections for each frame.

A pool process runs `serve`: `init_process` loads the replica's own model and warms it up, then
`detect_batch` answers the frames read from the replica's socket (framing.py), each on the model
it names, loading a model on first use and keeping at most `max_models` (least recently used
out). It takes encoded image bytes and returns plain Python data, so no numpy array crosses the
process boundary. With WORKER_BATCH_SIZE over 1 the frames waiting in the socket run together,
one model call per model and frame shape, with the detections each would have alone.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from inference.backends import DetectorConfig, ModelTarget, configure_runtime, load_exported
from inference.errors import ModelUnavailable
from inference.framing import FrameReader, Reply, send_reply
from inference.head import Detections, ExportedModel, by_shape, grouped
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
    """The project's own head around an export it reads (no torch in this process); ultralytics' YOLO otherwise."""
    exported = load_exported(config.backend, target.path, target.imgsz, config.threads, config.device, config.precision)
    if exported is not None:
        return exported
    configure_runtime(config.backend, config.threads, config.precision)
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
    return _predict_batch(loaded, [image])[0]


def _predict_batch(loaded: _Loaded, images: Sequence[npt.NDArray[np.uint8]]) -> list[list[RawDetection]]:
    config, model = _State.config, loaded.model
    assert config is not None, "init_process has not run in this process"
    if isinstance(model, ExportedModel):
        return [_raw(found, model.names) for found in model.predict_batch(images, config.conf, config.iou)]
    half = 16 if config.precision == "fp16" else None
    # ultralytics pads a batch of mixed shapes to squares, which a frame alone is not: one shape per call.
    answers: dict[int, list[RawDetection]] = {}
    for indices in by_shape(images):
        batch = [images[i] for i in indices]
        results = model.predict(batch, conf=config.conf, iou=config.iou, imgsz=loaded.target.imgsz,
                                device=config.device, quantize=half, verbose=False)  # fmt: skip
        for index, result in zip(indices, results, strict=True):
            boxes = result.boxes
            found = (boxes.xyxy.cpu().tolist(), boxes.cls.cpu().tolist(), boxes.conf.cpu().tolist())
            answers[index] = _raw(found, result.names)
    return [answers[index] for index in range(len(images))]


def _raw(
    found: Detections | tuple[list[list[float]], list[float], list[float]], names: dict[int, str]
) -> list[RawDetection]:
    xyxy, classes, scores = found
    return [
        RawDetection(int(c), str(names[int(c)]), float(s), (b[0], b[1], b[2], b[3]))
        for b, c, s in zip(xyxy, classes, scores, strict=True)
    ]


def detect_batch(frames: Sequence[tuple[bytes | None, ModelTarget | None]]) -> list[Reply]:
    """The pool's entry point: for each frame, in order, `(True, DetectOutput)` with its detections
    in original pixel coordinates, or `(False, exception)`.

    A frame's target None is the replica's own model; WARM_ONLY bytes load the model and detect
    nothing. The frames of one model run together; a frame that does not decode fails alone.
    detect_ms is the batch's time (decoding included) shared evenly among its frames.
    """
    config = _State.config
    assert config is not None, "init_process has not run in this process"
    replies: list[Reply | None] = [None] * len(frames)
    for indices in grouped([target for _, target in frames]):
        target = frames[indices[0]][1]
        try:
            loaded, load_ms, evicted = _model_for(target or config.local)
        except Exception as exc:  # noqa: BLE001 - each frame of the model answers with its failure
            for index in indices:
                replies[index] = (False, exc)
            continue
        images: dict[int, npt.NDArray[np.uint8]] = {}
        started = time.perf_counter()  # a frame's detect_ms counts its decoding, as it always has
        for index in indices:
            data = frames[index][0]
            if data is WARM_ONLY:
                replies[index] = (True, DetectOutput(0, 0, (), 0.0, load_ms, evicted))
                load_ms, evicted = 0.0, ()
                continue
            try:
                images[index] = decode(data, config.max_pixels)
            except Exception as exc:  # noqa: BLE001 - a frame that does not decode is that frame's error
                replies[index] = (False, exc)
        if images:
            try:
                found = _predict_batch(loaded, list(images.values()))
            except Exception as exc:  # noqa: BLE001 - as `detect` alone would, each frame answers with it
                for index in images:
                    replies[index] = (False, exc)
                continue
            each_ms = (time.perf_counter() - started) * 1000 / len(images)
            for index, detections in zip(images, found, strict=True):
                height, width = images[index].shape[:2]
                replies[index] = (
                    True,
                    DetectOutput(int(width), int(height), tuple(detections), each_ms, load_ms, evicted),
                )
                load_ms, evicted = 0.0, ()  # the load is reported once, with the first frame that waited for it
    return [reply for reply in replies if reply is not None]


Init = Callable[[DetectorConfig], None]
Entry = Callable[[Sequence[tuple[bytes | None, ModelTarget | None]]], list[Reply]]


def serve(sock: socket.socket, config: DetectorConfig, init: Init, entry: Entry) -> None:
    """A pool process: load the model, then answer frames from the socket in order until it closes.

    The frames already waiting (up to the batch size, waiting at most the batch wait for more)
    are answered by one call of `entry`.
    """
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
    reader = FrameReader(sock)
    targets: dict[bytes, ModelTarget] = {}
    while messages := reader.read_batch(config.batch_size, config.batch_wait_s):
        frames: list[tuple[bytes | None, ModelTarget | None]] = []
        replies: dict[int, Reply] = {}
        for index, (model, data) in enumerate(messages):
            warm = model.startswith(WARM_MARK)
            try:
                frames.append(
                    (WARM_ONLY if warm else data, _target(model.removeprefix(WARM_MARK) if warm else model, targets))
                )
            except Exception as exc:  # noqa: BLE001 - a model part that does not unpickle fails its frame
                replies[index] = (False, exc)
                frames.append((WARM_ONLY, None))
        for index, answer in enumerate(entry(frames)):
            send_reply(sock, replies.get(index, answer))


def _target(model: bytes, seen: dict[bytes, ModelTarget]) -> ModelTarget | None:
    """The frame's model, unpickled once per distinct model (the replica's own is sent as nothing)."""
    if not model:
        return None
    target = seen.get(model)
    if target is None:
        target = seen[model] = pickle.loads(model)  # noqa: S301 - written by our own replica
    return target
