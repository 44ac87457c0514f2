"""Helpers for tests that talk to the real stack: topics, frames, workers, results."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import cv2
import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from scripts import devstack
from tests.stack import Endpoints

REPO_ROOT = Path(__file__).resolve().parent.parent
MODEL_PATH = REPO_ROOT / "weights" / "best.pt"
# The second demo model: one class, `item`, so its detections differ visibly from best.pt's.
ITEMS_PATH = REPO_ROOT / "weights" / "items.pt"


@dataclass(frozen=True)
class Topics:
    tasks: str
    results: str
    dlq: str
    group: str
    models: str
    status: str

    @classmethod
    def unique(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(
            f"tasks-{tag}", f"results-{tag}", f"tasks-{tag}.dlq", f"group-{tag}", f"models-{tag}", f"status-{tag}"
        )

    @property
    def high(self) -> str:
        return f"{self.tasks}.high"

    @property
    def low(self) -> str:
        return f"{self.tasks}.low"

    @property
    def compacted(self) -> frozenset[str]:
        return frozenset({self.models, self.status})

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_TASKS_TOPIC": self.tasks,
            "KAFKA_RESULTS_TOPIC": self.results,
            "KAFKA_DLQ_TOPIC": self.dlq,
            "KAFKA_GROUP_ID": self.group,
            "KAFKA_MODELS_TOPIC": self.models,
            "KAFKA_STATUS_TOPIC": self.status,
        }


async def create_topics(
    bootstrap: str, partitions: dict[str, int], compacted: Iterable[str] = (), replication: int = 1
) -> None:
    compact = set(compacted)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(name, n, replication, topic_configs={"cleanup.policy": "compact"} if name in compact else {})
                for name, n in partitions.items()
            ]
        )
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes | None]],
    per_second: float | None = None,
) -> None:
    """Produce `records` in order and return once the broker has acknowledged every one.

    `per_second` spreads them over time, so that a fault can land while tasks are still arriving.
    """
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    started = time.monotonic()
    try:
        futures = []
        for i, (key, value) in enumerate(records):
            if per_second is not None:
                await asyncio.sleep(max(0.0, started + i / per_second - time.monotonic()))
            futures.append(await producer.send(topic, value, key=key))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def _reader(bootstrap: str, topic: str, read_committed: bool) -> AIOKafkaConsumer:
    """A consumer of every partition of `topic` from its start (without a group, start() assigns them all)."""
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )


async def consume(
    bootstrap: str,
    topic: str,
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    timeout_s: float,
    read_committed: bool = True,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` from the start until `done(records)` holds; fails if the deadline passes first."""
    consumer = _reader(bootstrap, topic, read_committed)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    deadline = time.monotonic() + timeout_s
    try:
        while not done(records):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: what was expected did not arrive in {timeout_s}s ({len(records)} read)")
            await _poll_into(consumer, records)
    finally:
        await consumer.stop()
    return records


async def read_to_end(
    bootstrap: str, topic: str, timeout_s: float = 60.0, read_committed: bool = True
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of `topic` below its end offsets as the read starts; fails if the deadline passes first.

    With `read_committed`, the end is each partition's last stable offset: a transaction still open
    there hides what follows it, as it does from any read_committed reader.
    """
    consumer = _reader(bootstrap, topic, read_committed)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        end = await consumer.end_offsets(list(consumer.assignment()))
        assert end, f"{topic}: no partitions to read"
        deadline = time.monotonic() + timeout_s
        while behind := await _behind(consumer, end):
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: still behind its end offsets after {timeout_s}s: {behind}")
            await _poll_into(consumer, records)
    finally:
        await consumer.stop()
    return records


async def _poll_into(consumer: AIOKafkaConsumer, records: list[ConsumerRecord[bytes, bytes]]) -> None:
    batch = await consumer.getmany(timeout_ms=200)
    for part in batch.values():
        records.extend(part)


async def _behind(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> dict[int, int]:
    """Records each partition has yet to read before its end offset, for those not there."""
    positions = {tp: await consumer.position(tp) for tp in end}
    return {tp.partition: end[tp] - positions[tp] for tp in end if positions[tp] < end[tp]}


async def committed_offsets(stack: Endpoints, topics: Topics) -> dict[int, int]:
    """The group's committed offset of each of the six task partitions (0 where none)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, group_id=topics.group)
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topics.tasks, p)) or 0 for p in range(6)}
    finally:
        await consumer.stop()


def committed_total(stack: Endpoints, topics: Topics) -> int:
    """Tasks the group has committed, over all partitions."""
    return sum(asyncio.run(committed_offsets(stack, topics)).values())


def result_values(records: list[ConsumerRecord[bytes, bytes]]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records if r.value is not None]


def distinct_frames(records: list[ConsumerRecord[bytes, bytes]]) -> set[tuple[str, int]]:
    return {(v["video_id"], v["frame_id"]) for v in result_values(records)}


def s3_session(stack: Endpoints) -> Any:
    return aioboto3.Session(
        aws_access_key_id=stack.s3_access_key_id,
        aws_secret_access_key=stack.s3_secret_access_key,
        region_name=stack.s3_region,
    )


async def upload(stack: Endpoints, objects: dict[str, bytes], bucket: str = "frames") -> None:
    async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
        await asyncio.gather(*(s3.put_object(Bucket=bucket, Key=k, Body=v) for k, v in objects.items()))


def synthetic_jpeg(seed: int, width: int = 640, height: int = 360) -> bytes:
    """A frame with a few bold shapes (from the demo generator when it is there)."""
    from scripts.synthetic import make_frame

    image, _ = make_frame(np.random.default_rng(seed), width, height)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return bytes(data)


def task(video_id: str, frame_id: int, s3_key: str, **extra: Any) -> bytes:
    return orjson.dumps({"video_id": video_id, "frame_id": frame_id, "s3_key": s3_key, **extra})


async def stage_video(
    stack: Endpoints, topics: Topics, video_id: str, n_frames: int, seed: int = 0
) -> dict[str, bytes]:
    """Upload n_frames JPEGs and produce their tasks; returns the objects by key."""
    objects = await upload_video(stack, topics, video_id, n_frames, seed)
    await produce(stack.bootstrap_servers, topics.tasks, video_tasks(video_id, list(objects)))
    return objects


async def upload_video(
    stack: Endpoints, topics: Topics, video_id: str, n_frames: int, seed: int = 0
) -> dict[str, bytes]:
    """Upload n_frames JPEGs of one video, announcing nothing yet; returns the objects by key."""
    prefix = f"{topics.group}/{video_id}"
    objects = {f"{prefix}/{i:06d}.jpg": synthetic_jpeg(seed * 100_000 + i) for i in range(n_frames)}
    await upload(stack, objects)
    return objects


def video_tasks(video_id: str, keys: list[str]) -> list[tuple[bytes, bytes]]:
    """The task records of one video whose frame i is the object keys[i]."""
    return [
        (video_id.encode(), task(video_id, i, key, total_frames=len(keys), timestamp_ms=i * 100.0))
        for i, key in enumerate(keys)
    ]


class _Program:
    """One of our programs as a real subprocess of this checkout, its output appended to a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            cwd=REPO_ROOT,
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self._log.close()


class WorkerProcess(_Program):
    """`python -m inference` as a real subprocess, logs to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        super().__init__(["inference"], env, log_path)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.log_path.read_bytes().splitlines():
            # A line that is not JSON is a dying child's traceback: it is in the file for people.
            with contextlib.suppress(orjson.JSONDecodeError):
                lines.append(orjson.loads(raw))
        return lines

    @property
    def worker_id(self) -> str:
        """The `worker` field of this replica's results."""
        return f"{socket.gethostname()}-{self.proc.pid}"

    def assignments(self) -> set[str]:
        """The partitions of the latest assignment this replica logged."""
        lines = [line for line in self.log_lines() if line.get("event") == "partitions_assigned"]
        return set(lines[-1]["partitions"]) if lines else set()

    def wait_started(self, timeout_s: float = 120.0) -> None:
        wait_for(lambda: any(line.get("event") == "worker_started" for line in self.log_lines()), timeout_s,
                 f"worker to start (log: {self.log_path})", alive=self.proc)  # fmt: skip


def wait_for(
    predicate: Callable[[], bool], timeout_s: float, what: str, alive: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if alive is not None and alive.poll() is not None:
            raise AssertionError(f"process exited with {alive.returncode} while waiting for {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.1)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.2)


def run_runner(env: dict[str, str], *args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    """`python -m runner ARGS` as a user runs it, with `env` over this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


class ServeProcess(_Program):
    """`python -m runner serve` as a real subprocess on a free port, logs to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = devstack.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(["runner", "serve"], {"API_HOST": "127.0.0.1", "API_PORT": str(self.port), **env}, log_path)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 60.0) -> ServeProcess:
        wait_for(self.healthy, timeout_s, f"runner serve to answer (log: {self.log_path})", alive=self.proc)
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def readiness(port: int) -> tuple[int, str]:
    """A replica's /readyz: its status code and reason (0 while nothing listens)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return int(response.status), str(orjson.loads(response.read())["reason"])
    except urllib.error.HTTPError as exc:
        return exc.code, str(orjson.loads(exc.read())["reason"])
    except OSError:
        return 0, "not listening"


def samples(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A replica's /metrics, by sample name and labels."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def push_model(env: dict[str, str], weights: Path, name: str, *extra: str) -> str:
    """`runner models push` as a user runs it; the version it printed."""
    done = run_runner(env, "models", "push", str(weights), "--name", name, *extra, timeout_s=180)
    assert done.returncode == 0, done.stderr
    return done.stdout.split(":")[0].split("@")[1]
