"""Benchmark: the pipeline against the model-only bound and a naive worker, in one run.

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
3. naive baseline: one replica that takes one frame at a time (fetch, detect, publish, commit)
   with the torch backend and torch's default threads, the style of a first attempt;
4. memory drift: resident memory of a replica and its pool over a long run, after warm-up;
and prints frames/s, the ratios, end-to-end latency percentiles (the broker's append times of
task and result), CPU utilisation, CPU time per frame (worker, pool, local Kafka, local S3, and
this script's own producer and reader), resident memory per process, how late each
replica's event loop woke (its own metric), and plots throughput and latency over time of
the full-load pipeline runs to out/bench.png. Ratios from one run on one machine are the
numbers to compare; absolute frames/s depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import math
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import psutil
from prometheus_client.parser import text_string_to_metric_families

from inference import detector
from inference.backends import Backend, model_file
from inference.config import available_cores
from inference.detector import DetectorConfig, checkpoint_imgsz
from scripts import devstack
from scripts.synthetic import make_frame

MODEL = devstack.REPO_ROOT / "weights" / "best.pt"
# The backend and scaling runs publish each answer at once (at_least_once), so their latency is
# the worker's own; exactly_once holds answers for the transaction, measured apart.
PER_FRAME = {"KAFKA_DELIVERY": "at_least_once"}
PARTITIONS = 6
VIDEOS_PER_PARTITION = 2
LOOP_LAG = "inference_event_loop_lag_seconds"
# A wakeup this late is a stall worth counting: longer than a detection on a CPU core here.
LOOP_STALL_S = 0.025


def balanced_video_ids() -> list[str]:
    """Video ids that Kafka's default partitioner spreads evenly, VIDEOS_PER_PARTITION per partition.

    Tasks are keyed by video, so a hash-skewed set of ids loads one replica more than another and
    caps the group-scaling ratio by luck rather than by the worker.
    """
    from aiokafka.partitioner import DefaultPartitioner

    partitioner, partitions = DefaultPartitioner(), list(range(PARTITIONS))
    chosen: dict[int, list[str]] = {p: [] for p in partitions}
    i = 0
    while any(len(ids) < VIDEOS_PER_PARTITION for ids in chosen.values()):
        video_id = f"bench-{i}"
        ids = chosen[partitioner(video_id.encode(), partitions, partitions)]
        if len(ids) < VIDEOS_PER_PARTITION:
            ids.append(video_id)
        i += 1
    return [video_id for p in partitions for video_id in chosen[p]]


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the first task
    latency_ms: float  # end to end: broker append time of the result minus that of its task
    stages_ms: dict[str, float]  # the worker's own timing_ms of the result


def tail(samples: list[Sample]) -> dict[str, float]:
    """Median per stage over the frames at or above the 95th latency percentile."""
    if len(samples) < 20:
        return {}
    cut = statistics.quantiles([s.latency_ms for s in samples], n=100)[94]
    slow = [s for s in samples if s.latency_ms >= cut]
    out = {"end_to_end": statistics.median(s.latency_ms for s in slow)}
    for stage in ("fetch", "queue", "detect"):
        out[stage] = statistics.median(s.stages_ms.get(stage, 0.0) for s in slow)
    out["outside_worker"] = statistics.median(s.latency_ms - s.stages_ms.get("total", 0.0) for s in slow)
    return {k: round(v, 1) for k, v in out.items()}


@dataclass(frozen=True)
class LoopLag:
    """The replicas' event-loop lag histogram: wakeups at or under each bucket bound (s), summed over replicas."""

    buckets: dict[float, float]

    @classmethod
    def parse(cls, text: str) -> LoopLag:
        """The histogram's cumulative buckets from a Prometheus text exposition."""
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LOOP_LAG}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return cls(buckets)

    @classmethod
    def scrape(cls, ports: list[int]) -> LoopLag:
        total = cls({})
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    total += cls.parse(response.read().decode())
            except OSError:
                continue  # a replica without metrics (the naive worker)
        return total

    def __add__(self, other: LoopLag) -> LoopLag:
        bounds = self.buckets.keys() | other.buckets.keys()
        return LoopLag({b: self.buckets.get(b, 0.0) + other.buckets.get(b, 0.0) for b in bounds})

    def __sub__(self, earlier: LoopLag) -> LoopLag:
        return LoopLag({bound: n - earlier.buckets.get(bound, 0.0) for bound, n in self.buckets.items()})

    def summary(self) -> dict[str, float]:
        """Wakeups; the bucket bound (ms) that 99% of them came within; how many came over LOOP_STALL_S
        late; and the bound (ms) that the latest wakeup exceeded (0: all within the first bucket)."""
        wakeups = self.buckets.get(math.inf, 0.0)
        if not wakeups:
            return {}
        p99 = min(bound for bound, n in self.buckets.items() if n >= 0.99 * wakeups)
        exceeded = [bound for bound, n in self.buckets.items() if n < wakeups]
        return {
            "wakeups": wakeups,
            "p99_within_ms": p99 * 1000,
            "stalls": wakeups - self.buckets.get(LOOP_STALL_S, wakeups),
            "latest_over_ms": max(exceeded, default=0.0) * 1000,
        }


def describe_lag(lag: dict[str, float]) -> str:
    return (
        f"99% of {lag['wakeups']:.0f} wakeups within {lag['p99_within_ms']:.0f} ms, {lag['stalls']:.0f} over "
        f"{LOOP_STALL_S * 1000:.0f} ms, the latest over {lag['latest_over_ms']:.0f} ms"
    )


@dataclass
class Measure:
    name: str
    frames: int
    seconds: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_percent: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_drift_pct: float | None = None
    # CPU milliseconds per frame: worker main processes, pool processes, Kafka broker, S3 server,
    # and this script (its task producer and result reader share the cores too).
    cpu_ms_per_frame: dict[str, float] = field(default_factory=dict)
    # Where the slowest 5% of frames spent their time: median ms per worker stage, and outside the
    # worker (Kafka delivery of the task until the worker took it, plus the result's send).
    tail_ms: dict[str, float] = field(default_factory=dict)
    # The replicas' event loop during the run (inference_event_loop_lag_seconds): see LoopLag.
    loop_lag: dict[str, float] = field(default_factory=dict)
    # One per result in arrival order, for the plot.
    timeline: list[Sample] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def frames(n: int, width: int = 640, height: int = 360) -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        image, _ = make_frame(rng, width, height)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(bytes(data))
    return out


def model_only(data: list[bytes], processes: int, backend: Backend, imgsz: int) -> Measure:
    cores = available_cores()  # as the worker sizes its pool threads
    config = DetectorConfig(str(model_file(MODEL, backend, imgsz)), backend, "cpu", imgsz, 0.25, 0.45,
                            max(1, cores // processes), 10**8)  # fmt: skip
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        processes, mp_context=context, initializer=detector.init_process, initargs=(config,)
    ) as pool:
        list(pool.map(detector.detect, data[: processes * 2]))  # warm every process
        psutil.cpu_percent()
        started = time.perf_counter()
        list(pool.map(detector.detect, data))
        seconds = time.perf_counter() - started
        cpu = psutil.cpu_percent()
    return Measure(f"model-only {backend} P={processes}", len(data), seconds, cpu_percent=cpu)


@contextlib.contextmanager
def stack() -> Iterator[dict[str, str]]:
    state = devstack.read_state(devstack.REPO_ROOT / ".dev-stack")
    if state is not None and devstack.pid_alive(state.kafka_pid):
        yield state.env()
        return
    with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp:
        info = devstack.up(Path(tmp), devstack.free_port(), devstack.free_port())
        try:
            yield info.env()
        finally:
            devstack.down(Path(tmp))


async def stage(env: dict[str, str], data: list[bytes], tag: str) -> list[tuple[bytes, bytes]]:
    """Upload the frames once per run and return the task records (not yet produced)."""
    import aioboto3
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    # The broker stamps each record as it appends it: the latency is from a task's arrival in Kafka
    # to its result's, so a producer's linger and its round trip count, and no two clocks are mixed.
    appended = {"message.timestamp.type": "LogAppendTime"}
    await admin.create_topics(
        [
            NewTopic(f"{tag}-tasks", PARTITIONS, 1, topic_configs=appended),
            NewTopic(f"{tag}-results", PARTITIONS, 1, topic_configs=appended),
            NewTopic(f"{tag}-dlq", 1, 1),
        ]
    )
    await admin.close()
    session = aioboto3.Session(
        aws_access_key_id=env["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["S3_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    records, videos = [], balanced_video_ids()
    async with session.client("s3", endpoint_url=env["S3_ENDPOINT_URL"]) as s3:
        for i, body in enumerate(data):
            video, key = videos[i % len(videos)], f"bench/{tag}/{i:06d}.jpg"
            await s3.put_object(Bucket="frames", Key=key, Body=body)
            task = {"video_id": video, "frame_id": i, "s3_key": key, "total_frames": len(data)}
            records.append((video.encode(), orjson.dumps(task)))
    return records


async def produce(env: dict[str, str], topic: str, records: list[tuple[bytes, bytes]], rate: float | None) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()
    started = time.perf_counter()
    try:
        for i, (key, value) in enumerate(records):
            if rate:
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))  # paces the offered load
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def await_results(
    env: dict[str, str], tasks_topic: str, results_topic: str, count: int
) -> tuple[float, list[Sample]]:
    """Seconds from the first task to the last result, and a sample per result in arrival order."""
    from aiokafka import AIOKafkaConsumer

    stages: dict[int, dict[str, float]] = {}

    async def read(topic: str, n: int) -> dict[int, int]:
        # Large, infrequent fetches: the latencies come from the records' timestamps, not from when
        # this reader sees them, and a fetch per result would charge the broker (which shares the
        # cores with the pipeline) a request per frame that belongs to the measurement, not the worker.
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    fetch_min_bytes=1 << 20, fetch_max_wait_ms=250)  # fmt: skip
        await consumer.start()
        stamps: dict[int, int] = {}
        deadline = time.monotonic() + 1800
        try:
            while len(stamps) < n and time.monotonic() < deadline:
                for part in (await consumer.getmany(timeout_ms=500)).values():
                    for r in part:
                        message = orjson.loads(r.value)
                        stamps.setdefault(message["frame_id"], r.timestamp)
                        if "timing_ms" in message:
                            stages.setdefault(message["frame_id"], message["timing_ms"])
        finally:
            await consumer.stop()
        return stamps

    done = await read(results_topic, count)
    sent = await read(tasks_topic, count)
    first = min(sent.values())
    timeline = sorted(
        (Sample((done[i] - first) / 1000, float(done[i] - sent[i]), stages.get(i, {})) for i in done if i in sent),
        key=lambda s: s.seconds,
    )
    return (max(done.values()) - first) / 1000, timeline


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    q = statistics.quantiles(values, n=100)
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


class RssSampler:
    """Total resident memory of the replicas and their pools, sampled every second in a thread."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self._procs = procs
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(sum(rss_of(self._procs).values()))

    def drift_pct(self) -> float | None:
        """Growth from the end of warm-up (the first quarter of the run) to the end, in percent."""
        if len(self.samples) < 8:
            return None
        warm = self.samples[len(self.samples) // 4]
        return round(100 * (max(self.samples[len(self.samples) // 4 :]) - warm) / warm, 2)


def rss_of(procs: list[psutil.Process]) -> dict[str, float]:
    out = {}
    for i, proc in enumerate(procs):
        with contextlib.suppress(psutil.Error):
            out[f"replica{i}"] = round(proc.memory_info().rss / 2**20, 1)
            for j, child in enumerate(proc.children(recursive=True)):
                out[f"replica{i}.pool{j}"] = round(child.memory_info().rss / 2**20, 1)
    return out


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
    rate: float | None = None, pin: bool = False,
) -> Measure:  # fmt: skip
    tag = f"bench-{uuid.uuid4().hex[:8]}"
    records = asyncio.run(stage(env, data, tag))
    topics = {
        "KAFKA_TASKS_TOPIC": f"{tag}-tasks",
        "KAFKA_RESULTS_TOPIC": f"{tag}-results",
        "KAFKA_DLQ_TOPIC": f"{tag}-dlq",
    }
    run_env = {
        **os.environ,
        **env,
        **extra,
        **topics,
        "KAFKA_GROUP_ID": tag,
        "YOLO_OFFLINE": "1",
        "MODEL_PATH": str(MODEL),
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


def stack_server(cmdline: list[str]) -> str | None:
    """Name ("kafka" or "s3") of the local stack's broker and SeaweedFS server (scripts/devstack.py)."""
    if "kafka.Kafka" in cmdline:
        return "kafka"
    return "s3" if cmdline and Path(cmdline[0]).name == "weed" else None


def cpu_seconds(replicas: list[psutil.Process]) -> dict[str, float]:
    """CPU time so far of the replicas' main processes, their pools, each stack server and this script."""

    def used(procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    pools = [child for r in replicas for child in psutil.Process(r.pid).children(recursive=True)]
    servers = [(stack_server(p.info["cmdline"] or []), p) for p in psutil.process_iter(["cmdline"])]
    return {
        "main": used(replicas),
        "pool": used(pools),
        "kafka": used([p for name, p in servers if name == "kafka"]),
        "s3": used([p for name, p in servers if name == "s3"]),
        "bench": used([psutil.Process()]),
    }


def table(measures: list[Measure]) -> str:
    lines = [f"{'run':40} {'frames/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'cpu %':>6} "
             f"{'cpu ms/frame main/pool/kafka/s3/bench':>37}  rss MB"]  # fmt: skip
    for m in measures:
        lat = m.latency_ms
        rss = " ".join(f"{k}={v:.0f}" for k, v in m.rss_mb.items())
        cpu = "/".join(f"{v:.1f}" for v in m.cpu_ms_per_frame.values())
        lines.append(f"{m.name:40} {m.fps:9.2f} {lat.get('p50', 0):8.0f} {lat.get('p95', 0):8.0f} "
                     f"{lat.get('p99', 0):8.0f} {m.cpu_percent:6.0f} {cpu:>37}  {rss}")  # fmt: skip
    return "\n".join(lines)


def plot(measures: list[Measure], path: Path) -> None:
    """Throughput (results per second) and latency over time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for m in measures:
        if not m.timeline:
            continue
        seconds = [s.seconds for s in m.timeline]
        per_second = np.bincount(np.array(seconds, dtype=int))
        top.plot(np.arange(len(per_second)), per_second, label=m.name)
        bottom.plot(seconds, [s.latency_ms for s in m.timeline], ".", markersize=2, label=m.name)
    top.set_ylabel("results per second")
    bottom.set_ylabel("end-to-end latency (ms)")
    bottom.set_xlabel("seconds since the first task")
    top.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def bracketing(before: Measure, after: Measure) -> Measure:
    """The mean rate of one measurement taken before and after the run it is a baseline for.

    The machine's speed drifts within minutes here (a shared host, and the guest shows no steal
    time: torch's bound read 36.4 and then 41.9 frames/s around one pipeline run), so a baseline
    taken once, before, biases the ratio by that drift. Both readings are in the report.
    """
    mean_fps = (before.fps + after.fps) / 2
    return Measure(before.name, before.frames, before.frames / mean_fps,
                   cpu_percent=(before.cpu_percent + after.cpu_percent) / 2)  # fmt: skip


def worker_efficiency(pipeline: Measure, bound: Measure) -> float:
    """pipeline/bound as if Kafka, S3 and this script ran elsewhere: the bound's CPU per frame over the
    worker's own (main + pool processes). On one small machine the local servers take cores the
    bound never shares; this ratio keeps the worker's own overhead apart from theirs.
    """
    cores = available_cores()
    worker_ms = pipeline.cpu_ms_per_frame.get("main", 0.0) + pipeline.cpu_ms_per_frame.get("pool", 0.0)
    bound_ms = 1000 * cores * bound.cpu_percent / 100 / bound.fps if bound.fps else 0.0
    return round(bound_ms / worker_ms, 3) if worker_ms else 0.0


def run_all(env: dict[str, str], data: list[bytes], args: argparse.Namespace) -> tuple[list[Measure], dict[str, float]]:
    pipeline = ["-m", "inference"]
    env = {**env, "MODEL_IMGSZ": str(args.imgsz)}  # every replica, the naive one too
    naive = pipeline_run(env, data, "naive torch R=1", ["-m", "scripts.naive_worker"], 1, {"MODEL_BACKEND": "torch"})
    measures, ratios = [naive], {}
    for backend in args.backends:
        for p in args.processes:
            extra = {"WORKER_PROCESSES": str(p), "MODEL_BACKEND": backend, **PER_FRAME}
            before = model_only(data, p, backend, args.imgsz)
            full = pipeline_run(env, data, f"pipeline {backend} R=1 P={p}", pipeline, 1, extra)
            after = model_only(data, p, backend, args.imgsz)
            after.name += ", again"
            bound = bracketing(before, after)
            ratios[f"bound after / before {backend} P={p}"] = round(after.fps / before.fps, 3)
            # The full-load run offers every task at once (a backlog: its latency is the drain time);
            # these two offer a steady rate, at the full run's capacity and at half of it.
            at_capacity = pipeline_run(env, data, f"pipeline {backend} R=1 P={p} 100% load", pipeline, 1, extra,
                                       rate=full.fps)  # fmt: skip
            half = pipeline_run(env, data, f"pipeline {backend} R=1 P={p} 50% load", pipeline, 1, extra,
                                rate=full.fps / 2)  # fmt: skip
            measures += [before, full, after, at_capacity, half]
            ratios[f"pipeline/bound {backend} P={p}"] = round(full.fps / bound.fps, 3)
            ratios[f"pipeline/bound {backend} P={p}, stack CPU set aside"] = worker_efficiency(full, bound)
            ratios[f"pipeline {backend} P={p}/naive torch"] = round(full.fps / naive.fps, 3)
            # At 100% the queue has no room to drain (a random walk), so only the 50% run has a target.
            ratios[f"p99 at 50% / detect {backend} P={p}"] = round(
                half.latency_ms.get("p99", 0) / (1000 / bound.fps * p), 3
            )
            print(table(measures), flush=True)  # noqa: T201
        # Group scaling: one core per replica (as one-CPU containers), one replica against two.
        one_core = {"WORKER_PROCESSES": "1", "MODEL_BACKEND": backend, **PER_FRAME}
        one = pipeline_run(env, data, f"pipeline {backend} R=1 P=1 1 core", pipeline, 1, one_core, pin=True)
        two = pipeline_run(env, data, f"pipeline {backend} R=2 P=1 1 core each", pipeline, 2, one_core, pin=True)
        one_again = pipeline_run(env, data, f"pipeline {backend} R=1 P=1 1 core, again", pipeline, 1, one_core,
                                 pin=True)  # fmt: skip
        measures += [one, two, one_again]
        ratios[f"R=2 P=1 / R=1 P=1 {backend}"] = round(two.fps / bracketing(one, one_again).fps, 3)
    best, full_fps = max(args.processes), {}
    for delivery in ("at_least_once", "exactly_once"):
        extra = {"WORKER_PROCESSES": str(best), "KAFKA_DELIVERY": delivery}
        full = pipeline_run(env, data, f"pipeline {delivery} R=1 P={best}", pipeline, 1, extra)
        half = pipeline_run(env, data, f"pipeline {delivery} R=1 P={best} 50% load", pipeline, 1, extra,
                            rate=full.fps / 2)  # fmt: skip
        measures += [full, half]
        full_fps[delivery] = full.fps
    ratios["exactly_once/at_least_once"] = round(full_fps["exactly_once"] / full_fps["at_least_once"], 3)
    if args.drift_frames:
        drift = pipeline_run(env, frames(args.drift_frames), f"drift R=1 P={max(args.processes)}", pipeline, 1,
                             {"WORKER_PROCESSES": str(max(args.processes))})  # fmt: skip
        measures.append(drift)
    return measures, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx", "openvino"])
    parser.add_argument("--drift-frames", type=int, default=2000, help="frames of the memory-drift run; 0 skips it")
    parser.add_argument("--imgsz", type=int, help="model input size (MODEL_IMGSZ); default: the checkpoint's")
    parser.add_argument("--json", type=Path, default=devstack.REPO_ROOT / "out" / "bench.json")
    args = parser.parse_args()
    args.imgsz = args.imgsz or checkpoint_imgsz(MODEL)
    with stack() as env:
        measures, ratios = run_all(env, frames(args.frames), args)
    print("\n" + table(measures))  # noqa: T201
    print("\n".join(f"{k:36} {v:.3f}" for k, v in ratios.items()))  # noqa: T201
    for m in measures:
        if m.tail_ms and "50%" in m.name:
            print(f"slowest 5% at 50% load, median ms, {m.name}: {m.tail_ms}")  # noqa: T201
    for m in measures:
        if m.loop_lag:
            print(f"event loop, {m.name}: {describe_lag(m.loop_lag)}")  # noqa: T201
    for m in measures:
        if m.rss_drift_pct is not None:
            print(f"rss drift after warm-up, {m.name}: {m.rss_drift_pct:+.2f}%")  # noqa: T201
    args.json.parent.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB",
        "frames": args.frames,
        "imgsz": args.imgsz,
        "runs": [{**asdict(m), "fps": round(m.fps, 3), "timeline": None} for m in measures],
        "ratios": ratios,
    }
    args.json.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    png = args.json.with_suffix(".png")
    plot([m for m in measures if m.name.startswith("pipeline") and "50%" not in m.name], png)
    print(f"json: {args.json}\nplot: {png}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
