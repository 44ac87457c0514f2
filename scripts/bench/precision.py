"""Precision against the baseline a user would pick: FP32, BF16 and INT8 models in the pipeline, each
against a plain ultralytics loop on every core (plain.py) and against its own model-only bound.

    python -m scripts.bench --precision [--int8 PATH] [--imgsz N]

Each model runs one replica with one pool process per core, at full load (every task offered at
once), at_least_once. The plain loop runs before and after the pipeline runs, and the ratios use
the mean of the two. Agreement: the figure `python -m inference quantize` reports, on the bench's
frames: mAP50 of a model's detections (ranked by confidence, down to SCORING_CONF) with the FP32
ONNX model's at conf 0.25 as the references (inference/agreement.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from inference import agreement, openvino_model
from inference.backends import Backend, load_exported, model_file
from inference.config import Precision, available_cores
from inference.head import ExportedModel, Image
from inference.image import decode
from inference.quantize import SCORING_CONF
from scripts.bench.measure import MODEL, model_only, pipeline_run
from scripts.bench.plain import plain_loop
from scripts.bench.readings import Measure
from scripts.bench.report import bracketing, worker_efficiency

PIPELINE = ["-m", "inference"]
PER_FRAME = {"KAFKA_DELIVERY": "at_least_once"}


@dataclass(frozen=True)
class Variant:
    name: str
    backend: Backend
    path: Path
    precision: Precision = "f32"
    env: dict[str, str] = field(default_factory=dict)
    batch: int = 1


def variants(imgsz: int, int8: Path | None) -> list[Variant]:
    """FP32 on ONNX Runtime (the default) and OpenVINO, BF16 where the CPU has it, the INT8 model if given
    (also in batches of 4, its bound too)."""
    found = [
        Variant("onnx f32", "onnx", model_file(MODEL, "onnx", imgsz)),
        Variant("openvino f32", "openvino", model_file(MODEL, "openvino", imgsz)),
    ]
    if openvino_model.has_bf16():
        found.append(Variant("openvino bf16", "openvino", found[1].path, "bf16", {"MODEL_PRECISION": "bf16"}))
    if int8 is not None:
        backend: Backend = "onnx" if int8.suffix == ".onnx" else "openvino"
        found.append(Variant("int8", backend, int8))
        # Batches cost fewer wake-ups per frame in the pool process; the CPU default stays 1.
        found.append(Variant("int8 batch 4", backend, int8, env={"WORKER_BATCH_SIZE": "4"}, batch=4))
    return found


def _load(variant: Variant, imgsz: int) -> ExportedModel:
    model = load_exported(variant.backend, variant.path, imgsz, available_cores(), precision=variant.precision)
    assert model is not None, f"{variant.path}: not an export the project's head reads"
    return model


def detections(variant: Variant, images: list[Image], imgsz: int, conf: float) -> list[list[agreement.Detection]]:
    model = _load(variant, imgsz)
    return [agreement.from_found(model.predict(image, conf, 0.45)) for image in images]


def precision_runs(
    env: dict[str, str], data: list[bytes], imgsz: int, int8: Path | None
) -> tuple[list[Measure], dict[str, float]]:
    cores = available_cores()
    env = {**env, "MODEL_IMGSZ": str(imgsz)}
    images = [decode(frame, 10**8) for frame in data]
    chosen = variants(imgsz, int8)
    reference = detections(chosen[0], images, imgsz, 0.25)
    plain = plain_loop(data, cores, MODEL, imgsz)
    measures, runs, ratios = [plain], {}, {}
    # The same model in batches agrees as it does alone: scored once per model.
    agreements: dict[tuple[Backend, Path, Precision], float] = {}
    for variant in chosen:
        extra = {"WORKER_PROCESSES": str(cores), "MODEL_PATH": str(variant.path), "MODEL_BACKEND": variant.backend,
                 **variant.env, **PER_FRAME}  # fmt: skip
        bound_name = f"model-only {variant.name} P={cores}"
        bound = functools.partial(model_only, data, cores, variant.backend, imgsz, variant.path, variant.precision,
                                  batch=variant.batch)  # fmt: skip
        before = bound(name=bound_name)
        run = pipeline_run(env, data, f"pipeline {variant.name} R=1 P={cores}", PIPELINE, 1, extra)
        after = bound(name=bound_name + ", again")
        measures += [before, run, after]
        runs[variant.name] = run
        bounded = bracketing(before, after)
        ratios[f"pipeline/bound {variant.name}"] = round(run.fps / bounded.fps, 3)
        ratios[f"pipeline/bound {variant.name}, stack CPU set aside"] = worker_efficiency(run, bounded)
        model = (variant.backend, variant.path, variant.precision)
        if model not in agreements:
            scored = detections(variant, images, imgsz, SCORING_CONF)
            agreements[model] = round(agreement.map50(scored, reference).map50, 4)
        ratios[f"agreement {variant.name}"] = agreements[model]
    plain_again = plain_loop(data, cores, MODEL, imgsz, f"plain loop torch P={cores}, again")
    measures.append(plain_again)
    baseline = bracketing(plain, plain_again)
    for name, run in runs.items():
        ratios[f"pipeline {name} / plain loop"] = round(run.fps / baseline.fps, 3)
    return measures, ratios
