"""Taking one measurement: the model alone in a process pool, or the pipeline on a local stack."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil

from inference import detector
from inference.backends import Backend, DetectorConfig, model_file
from inference.config import Precision, available_cores
from scripts import devstack
from scripts.bench.load import await_results, produce, stage
from scripts.bench.readings import LoopLag, Measure, RssSampler, cpu_seconds, percentiles, rss_of, tail

MODEL = devstack.REPO_ROOT / "weights" / "best.pt"


def model_only(
    data: list[bytes], processes: int, backend: Backend, imgsz: int, path: Path | None = None,
    precision: Precision = "f32", name: str | None = None, batch: int = 1,
) -> Measure:  # fmt: skip
    """Decode + predict on preloaded bytes in `processes` spawned pool processes: the pipeline's bound.

    `path`: an exported model served as it is (the INT8 one); the demo weights' export otherwise.
    `batch`: frames per model call, as a pool process runs them with WORKER_BATCH_SIZE.
    """
    cores = available_cores()  # as the worker sizes its pool threads
    config = DetectorConfig(str(path or model_file(MODEL, backend, imgsz)), backend, "cpu", imgsz, 0.25, 0.45,
                            max(1, cores // processes), 10**8, precision=precision)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=detector.init_process, initargs=(config,)
    ) as pool:
        # Every frame on the replica's own model (None), `batch` frames per call.
        batches = [[(frame, None) for frame in data[i : i + batch]] for i in range(0, len(data), batch)]
        list(pool.map(detector.detect_batch, batches[: processes * 2]))  # warm every process
        psutil.cpu_percent()
        started = time.perf_counter()
        list(pool.map(detector.detect_batch, batches))
        seconds = time.perf_counter() - started
        cpu = psutil.cpu_percent()
    return Measure(name or f"model-only {backend} P={processes}", len(data), seconds, cpu_percent=cpu)


@contextlib.contextmanager
def stack() -> Iterator[dict[str, str]]:
    """The running dev stack's settings, or those of a stack of its own for the bench's lifetime."""
    state = devstack.read_state(devstack.STATE_DIR)
    if state is not None and devstack.pid_alive(state.kafka_pid):
        yield state.env()
        return
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        info = devstack.up(Path(tmp), devstack.free_port(), devstack.free_port())
        try:
            yield info.env()
        finally:
            devstack.down(Path(tmp))


def start_replicas(
    env: dict[str, str], command: list[str], ports: list[int], log_dir: Path, pin: bool = False
) -> list[subprocess.Popen[bytes]]:
    """One replica per metrics port; `pin` gives replica i core i alone, as a one-CPU container would have."""
    cores = sorted(os.sched_getaffinity(0))
    procs = []
    for i, port in enumerate(ports):
        core = {cores[i % len(cores)]}
        pin_core = functools.partial(os.sched_setaffinity, 0, core) if pin else None
        replica_env = {**env, "WORKER_METRICS_PORT": str(port)}
        with (log_dir / f"{command[-1]}-{i}.log").open("ab") as log:
            procs.append(
                subprocess.Popen(
                    [sys.executable, *command],
                    env=replica_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=pin_core,
                )
            )
    return procs


def wait_joined(log_dir: Path, pattern: str, replicas: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        logs = [p.read_text(errors="replace") for p in log_dir.glob(pattern)]
        if len(logs) == replicas and all("partitions_assigned" in text for text in logs):
            return
        time.sleep(0.5)
    raise SystemExit(f"bench: replicas did not join the group; see {log_dir}")


def pipeline_run(
    env: dict[str, str], data: list[bytes], name: str, command: list[str], replicas: int, extra: dict[str, str],
    rate: float | None = None, pin: bool = False, task_fields: dict[str, str] | None = None,
) -> Measure:  # fmt: skip
    """From the first task produced until every result is on its topic, on topics of the run's own."""
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    records = asyncio.run(stage(env, data, tag, task_fields))
    topics = {
        "KAFKA_TASKS_TOPIC": f"{tag}-tasks",
        "KAFKA_RESULTS_TOPIC": f"{tag}-results",
        "KAFKA_DLQ_TOPIC": f"{tag}-dlq",
    }
    run_env = {
        **os.environ,
        "MODEL_PATH": str(MODEL),  # unless `extra` names another (an exported model)
        **env,
        **extra,
        **topics,
        "KAFKA_GROUP_ID": tag,
        "YOLO_OFFLINE": "1",
    }
    log_dir = Path(tempfile.mkdtemp(prefix=f"{tag}-"))
    ports = [devstack.free_port() for _ in range(replicas)]
    procs = start_replicas(run_env, command, ports, log_dir, pin)
    try:
        wait_joined(log_dir, f"{command[-1]}-*.log", replicas)
        watched = [psutil.Process(p.pid) for p in procs]
        lag_before = LoopLag.scrape(ports)
        psutil.cpu_percent()
        before = cpu_seconds(watched)
        with RssSampler(watched) as sampler:
            asyncio.run(produce(env, f"{tag}-tasks", records, rate))
            seconds, timeline = asyncio.run(await_results(env, f"{tag}-tasks", f"{tag}-results", len(data)))
        cpu = psutil.cpu_percent()
        after = cpu_seconds(watched)
        rss = rss_of(watched)
        lag = LoopLag.scrape(ports) - lag_before
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=120)
    # The replicas' logs matter only when a run fails; a finished run leaves nothing in /tmp.
    shutil.rmtree(log_dir)
    latencies = percentiles([s.latency_ms for s in timeline])
    per_frame = {k: round(1000 * (after[k] - before[k]) / len(data), 2) for k in after}
    return Measure(name, len(data), seconds, latencies, cpu, rss, sampler.drift_pct(), per_frame, tail(timeline),
                   lag.summary(), timeline)  # fmt: skip
