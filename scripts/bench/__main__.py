"""Benchmark entry point: every run in a fixed order on one set of frames, then the report.

    python -m scripts.bench [--frames 200] [--processes 1 2] [--backends torch onnx]
                            [--drift-frames 2000] [--imgsz N] [--json out/bench.json]

On one fixed set of generated frames it measures
1. model-only bound: decode + predict in P spawned pool processes on preloaded bytes, per backend,
   just before and just after the full-load pipeline run (their mean is the bound);
2. pipeline: frames in the local S3, tasks on the local Kafka, one replica x P processes of
   `python -m inference`, from the first task produced until every result is on the topic,
   per backend with every task offered at once (its capacity), then at a steady 100% and 50%
   of that capacity, with at_least_once delivery (each answer published at once, so the
   latency is the worker's own); one against two replicas of one process, each
   pinned to a core of its own (group scaling; the one-replica run again after the two, and
   their mean is the baseline); exactly_once against
   at_least_once, at full and 50% load;
3. baselines: a plain ultralytics loop, one process per core with one torch thread each, on the
   same frames in memory (scripts/bench/plain.py: what a user would run instead of the pipeline),
   and a naive replica that takes one frame at a time (fetch, detect, publish, commit) with the
   torch backend and torch's default threads, the style of a first attempt;
4. memory drift: resident memory of a replica and its pool over a long run, after warm-up;
5. with --models alone instead: models as data (scripts/bench/models.py), a registry model
   against the replica's own, and the first frame of a model new to the replica;
6. with --precision alone instead: FP32, BF16 and INT8 (--int8 PATH) models in the pipeline
   against a plain ultralytics loop on every core and their bounds, with each one's agreement
   (scripts/bench/precision.py);
7. with --gpu alone instead: torch FP16 on CUDA (--device), batches of 1, 8 and 32, the pipeline
   against its GPU bound, one replica against two on one GPU (scripts/bench/gpu.py);
and prints frames/s, the ratios, end-to-end latency percentiles (the broker's append times of
task and result), CPU utilisation, CPU time per frame (worker, pool, local Kafka, local S3, and
this script's own producer and reader), resident memory per process, how late each
replica's event loop woke (its own metric), and plots throughput and latency over time of
the full-load pipeline runs to out/bench.png. Ratios from one run on one machine are the
numbers to compare; absolute frames/s depend on the machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.backends import Backend, checkpoint_imgsz
from inference.config import available_cores
from scripts import devstack
from scripts.bench.gpu import gpu_runs
from scripts.bench.load import frames
from scripts.bench.measure import MODEL, model_only, pipeline_run, stack
from scripts.bench.models import model_runs
from scripts.bench.plain import plain_loop
from scripts.bench.precision import precision_runs
from scripts.bench.readings import Measure
from scripts.bench.report import bracketing, plot, print_summary, table, worker_efficiency, write_json

PIPELINE = ["-m", "inference"]
# The backend and scaling runs publish each answer at once (at_least_once), so their latency is
# the worker's own; exactly_once holds answers for the transaction, measured apart.
PER_FRAME = {"KAFKA_DELIVERY": "at_least_once"}


def backend_runs(
    env: dict[str, str], data: list[bytes], args: argparse.Namespace, backend: Backend, naive: Measure,
    plain: Measure, measures: list[Measure], ratios: dict[str, float],
) -> None:  # fmt: skip
    """Per process count: the bound around a full-load run, then 100% and 50% load; then group scaling."""
    for p in args.processes:
        extra = {"WORKER_PROCESSES": str(p), "MODEL_BACKEND": backend, **PER_FRAME}
        before = model_only(data, p, backend, args.imgsz)
        full = pipeline_run(env, data, f"pipeline {backend} R=1 P={p}", PIPELINE, 1, extra)
        after = model_only(data, p, backend, args.imgsz)
        after.name += ", again"
        bound = bracketing(before, after)
        ratios[f"bound after / before {backend} P={p}"] = round(after.fps / before.fps, 3)
        # The full-load run offers every task at once (a backlog: its latency is the drain time);
        # these two offer a steady rate, at the full run's capacity and at half of it.
        at_capacity = pipeline_run(env, data, f"pipeline {backend} R=1 P={p} 100% load", PIPELINE, 1, extra,
                                   rate=full.fps)  # fmt: skip
        half = pipeline_run(env, data, f"pipeline {backend} R=1 P={p} 50% load", PIPELINE, 1, extra,
                            rate=full.fps / 2)  # fmt: skip
        measures += [before, full, after, at_capacity, half]
        ratios[f"pipeline/bound {backend} P={p}"] = round(full.fps / bound.fps, 3)
        ratios[f"pipeline/bound {backend} P={p}, stack CPU set aside"] = worker_efficiency(full, bound)
        ratios[f"pipeline {backend} P={p}/naive torch"] = round(full.fps / naive.fps, 3)
        ratios[f"pipeline {backend} P={p}/plain loop"] = round(full.fps / plain.fps, 3)
        # At 100% the queue has no room to drain (a random walk), so only the 50% run has a target.
        ratios[f"p99 at 50% / detect {backend} P={p}"] = round(
            half.latency_ms.get("p99", 0) / (1000 / bound.fps * p), 3
        )
        print(table(measures), flush=True)  # noqa: T201
    # Group scaling: one core per replica (as one-CPU containers), one replica against two.
    one_core = {"WORKER_PROCESSES": "1", "MODEL_BACKEND": backend, **PER_FRAME}
    one = pipeline_run(env, data, f"pipeline {backend} R=1 P=1 1 core", PIPELINE, 1, one_core, pin=True)
    two = pipeline_run(env, data, f"pipeline {backend} R=2 P=1 1 core each", PIPELINE, 2, one_core, pin=True)
    one_again = pipeline_run(env, data, f"pipeline {backend} R=1 P=1 1 core, again", PIPELINE, 1, one_core,
                             pin=True)  # fmt: skip
    measures += [one, two, one_again]
    ratios[f"R=2 P=1 / R=1 P=1 {backend}"] = round(two.fps / bracketing(one, one_again).fps, 3)


def delivery_runs(
    env: dict[str, str], data: list[bytes], processes: int, measures: list[Measure], ratios: dict[str, float]
) -> None:
    """exactly_once against at_least_once, each at full and at 50% load."""
    full_fps = {}
    for delivery in ("at_least_once", "exactly_once"):
        extra = {"WORKER_PROCESSES": str(processes), "KAFKA_DELIVERY": delivery}
        full = pipeline_run(env, data, f"pipeline {delivery} R=1 P={processes}", PIPELINE, 1, extra)
        half = pipeline_run(env, data, f"pipeline {delivery} R=1 P={processes} 50% load", PIPELINE, 1, extra,
                            rate=full.fps / 2)  # fmt: skip
        measures += [full, half]
        full_fps[delivery] = full.fps
    ratios["exactly_once/at_least_once"] = round(full_fps["exactly_once"] / full_fps["at_least_once"], 3)


def run_all(env: dict[str, str], data: list[bytes], args: argparse.Namespace) -> tuple[list[Measure], dict[str, float]]:
    env = {**env, "MODEL_IMGSZ": str(args.imgsz)}  # every replica, the naive one too
    naive = pipeline_run(env, data, "naive torch R=1", ["-m", "scripts.naive_worker"], 1, {"MODEL_BACKEND": "torch"})
    cores = available_cores()
    plain = plain_loop(data, cores, MODEL, args.imgsz)
    measures: list[Measure] = [naive, plain]
    ratios: dict[str, float] = {}
    for backend in args.backends:
        backend_runs(env, data, args, backend, naive, plain, measures, ratios)
    best = max(args.processes)
    delivery_runs(env, data, best, measures, ratios)
    if args.drift_frames:
        drift = pipeline_run(env, frames(args.drift_frames), f"drift R=1 P={best}", PIPELINE, 1,
                             {"WORKER_PROCESSES": str(best)})  # fmt: skip
        measures.append(drift)
    return measures, ratios


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx", "openvino"])
    parser.add_argument("--drift-frames", type=int, default=2000, help="frames of the memory-drift run; 0 skips it")
    parser.add_argument("--imgsz", type=int, help="model input size (MODEL_IMGSZ); default: the checkpoint's")
    parser.add_argument("--json", type=Path, default=devstack.REPO_ROOT / "out" / "bench.json")
    parser.add_argument("--models", action="store_true", help="only the models-as-data runs (P = the largest)")
    parser.add_argument("--precision", action="store_true", help="only the precision runs against the plain loop")
    parser.add_argument("--int8", type=Path, help="the INT8 model of the precision runs (python -m inference quantize)")
    parser.add_argument("--gpu", action="store_true", help="only the GPU runs (batch sizes, replicas per GPU)")
    parser.add_argument("--device", default="cuda:0", help="the GPU runs' device")
    args = parser.parse_args()
    args.imgsz = args.imgsz or checkpoint_imgsz(MODEL)
    with stack() as env:
        if args.models:
            measures, ratios = model_runs(env, frames(args.frames), max(args.processes))
        elif args.precision:
            measures, ratios = precision_runs(env, frames(args.frames), args.imgsz, args.int8)
        elif args.gpu:
            measures, ratios = gpu_runs(env, frames(args.frames), args.imgsz, args.device)
        else:
            measures, ratios = run_all(env, frames(args.frames), args)
    print_summary(measures, ratios)
    write_json(args.json, measures, ratios, args.frames, args.imgsz)
    png = args.json.with_suffix(".png")
    plot([m for m in measures if m.name.startswith("pipeline") and "50%" not in m.name], png)
    print(f"json: {args.json}\nplot: {png}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
