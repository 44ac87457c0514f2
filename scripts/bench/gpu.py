"""The GPU run: torch on CUDA in half precision, batches of 1, 8 and 32, the pipeline against its GPU
bound, and one replica against two on one GPU.

    python -m scripts.bench --gpu [--device cuda:0] [--frames 2000] [--imgsz 640]

The bound runs the same pool process code in one process on preloaded JPEG bytes, a batch at a
time (decode + predict), as the pipeline's pool process does. With `--device cpu` the same runs
take f32 on the CPU: a check of the script, not a GPU number.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

from inference import detector
from inference.backends import DetectorConfig
from inference.config import Precision
from scripts.bench.measure import MODEL, pipeline_run
from scripts.bench.readings import Measure

BATCHES = (1, 8, 32)
PIPELINE = ["-m", "inference"]


def _precision(device: str) -> Precision:
    return "fp16" if device.startswith("cuda") else "f32"


def _detect_all(data: list[bytes], batch: int) -> float:
    """Seconds to answer every frame, `batch` frames per call, after one warm-up batch."""
    frames = [(frame, None) for frame in data]
    detector.detect_batch(frames[:batch])
    started = time.perf_counter()
    for start in range(0, len(frames), batch):
        detector.detect_batch(frames[start : start + batch])
    return time.perf_counter() - started


def gpu_bound(data: list[bytes], device: str, imgsz: int, batch: int) -> Measure:
    """The pool process's own rate on this device and batch size, with nothing else around it."""
    config = DetectorConfig(str(MODEL), "torch", device, imgsz, 0.25, 0.45, 1, 10**8,
                            precision=_precision(device), batch_size=batch)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context, initializer=detector.init_process, initargs=(config,)) as pool:
        seconds = pool.submit(_detect_all, data, batch).result()
    return Measure(f"bound torch {config.precision} {device} batch {batch}", len(data), seconds)


def gpu_runs(env: dict[str, str], data: list[bytes], imgsz: int, device: str) -> tuple[list[Measure], dict[str, float]]:
    env = {**env, "MODEL_IMGSZ": str(imgsz)}
    base = {"MODEL_DEVICE": device, "MODEL_BACKEND": "torch", "MODEL_PRECISION": _precision(device),
            "WORKER_PROCESSES": "1", "KAFKA_DELIVERY": "at_least_once"}  # fmt: skip
    measures: list[Measure] = []
    ratios: dict[str, float] = {}
    runs: dict[int, Measure] = {}
    for batch in BATCHES:
        bound = gpu_bound(data, device, imgsz, batch)
        extra = {**base, "WORKER_BATCH_SIZE": str(batch)}
        runs[batch] = pipeline_run(env, data, f"pipeline {device} batch {batch} R=1", PIPELINE, 1, extra)
        measures += [bound, runs[batch]]
        ratios[f"pipeline/bound batch {batch}"] = round(runs[batch].fps / bound.fps, 3)
        ratios[f"bound batch {batch} / batch 1"] = round(bound.fps / measures[0].fps, 3)
    two = pipeline_run(env, data, f"pipeline {device} batch 8 R=2 (one GPU)", PIPELINE, 2,
                       {**base, "WORKER_BATCH_SIZE": "8"})  # fmt: skip
    measures.append(two)
    ratios["R=2 / R=1 on one GPU, batch 8"] = round(two.fps / runs[8].fps, 3)
    return measures, ratios
