"""The baseline a user would pick instead of the pipeline: YOLO called in a loop on every core.

One spawned process per core, one torch thread each (more only oversubscribe the cores), each
decoding its share of the JPEG frames and calling ultralytics' predict on them (conf 0.25, iou
0.45), the frames already in memory: no Kafka, no S3, no results to publish.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from inference.backends import configure_runtime
from scripts.bench.readings import Measure


class _Loop:
    model: Any = None
    imgsz = 640


def _start(weights: str, imgsz: int) -> None:
    from ultralytics import YOLO

    configure_runtime("torch", 1)
    _Loop.model, _Loop.imgsz = YOLO(weights), imgsz
    _predict(np.zeros((imgsz, imgsz, 3), dtype=np.uint8))


def _predict(image: Any) -> int:
    result = _Loop.model.predict(image, conf=0.25, iou=0.45, imgsz=_Loop.imgsz, device="cpu", verbose=False)[0]
    return len(result.boxes)


def _share(frames: list[bytes]) -> int:
    import cv2

    for data in frames:
        _predict(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    return len(frames)


def plain_loop(data: list[bytes], processes: int, weights: Path, imgsz: int, name: str | None = None) -> Measure:
    """Frames/s of `processes` plain loops over `data`, each taking every processes-th frame."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(processes, mp_context=context, initializer=_start, initargs=(str(weights), imgsz)) as pool:
        list(pool.map(_share, [data[:1]] * processes * 2))  # every process started and warm
        psutil.cpu_percent()
        started = time.perf_counter()
        done = sum(pool.map(_share, [data[index::processes] for index in range(processes)]))
        seconds = time.perf_counter() - started
        cpu = psutil.cpu_percent()
    return Measure(name or f"plain loop torch P={processes}", done, seconds, cpu_percent=cpu)
