"""What operators see: /metrics moving with the right labels, /healthz and /readyz, JSON logs, memory."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psutil

from scripts.devstack import free_port
from tests.stack import Endpoints
from tests.support import (
    Topics,
    WorkerProcess,
    consume,
    distinct_frames,
    produce,
    samples,
    stage_video,
    task,
    wait_for,
)


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_metrics_probes_and_logs_during_a_run(
    stack: Endpoints, topics: Topics, start_worker: Callable[..., WorkerProcess]
) -> None:
    port = free_port()
    worker = start_worker(METRICS_PORT=str(port))
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, 120, "/healthz", alive=worker.proc)
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/readyz") == 200, 120, "/readyz", alive=worker.proc)
    asyncio.run(stage_video(stack, topics, "ops", 10))
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, [(b"ops", task("ops", 99, "ops/missing.jpg"))]))
    asyncio.run(
        consume(stack.bootstrap_servers, topics.results, lambda r: len(distinct_frames(r)) >= 11, timeout_s=120)
    )

    def counted() -> bool:
        got = samples(port)
        ok = got.get(("inference_frames_total", frozenset({("status", "ok"), ("code", "")})), 0)
        missing = got.get(("inference_frames_total", frozenset({("status", "error"), ("code", "frame_not_found")})), 0)
        return ok == 10 and missing == 1

    wait_for(counted, 30, "frame counters to reach 10 ok and 1 frame_not_found")
    got = samples(port)
    assert got[("inference_stage_seconds_count", frozenset({("stage", "detect")}))] == 10
    assert got[("inference_stage_seconds_count", frozenset({("stage", "end_to_end")}))] == 11
    assert got[("inference_pool_processes_alive", frozenset())] == 1
    assert got[("inference_model_load_seconds", frozenset())] > 0
    assert got[("inference_event_loop_lag_seconds_count", frozenset())] > 0
    # Under a second late on average: the probe saw a loop that turns.
    assert (
        got[("inference_event_loop_lag_seconds_sum", frozenset())]
        < got[("inference_event_loop_lag_seconds_count", frozenset())]
    )
    wait_for(lambda: any(name == "inference_consumer_lag" for name, _ in samples(port)), 30, "a consumer lag sample")
    lines = [line for line in worker.log_lines() if line.get("event") == "frame_failed"]
    assert lines
    assert {"ts", "level", "event", "video_id", "frame_id", "partition", "offset"} <= set(lines[0])
    assert lines[0]["video_id"] == "ops"
    assert lines[0]["frame_id"] == 99
    assert worker.terminate() == 0


def test_torch_is_loaded_only_where_the_backend_needs_it(start_worker: Callable[..., WorkerProcess]) -> None:
    """The main process consumes, fetches and publishes; torch (~570 MB a process) is for the torch pool only."""
    with_torch, with_onnx = start_worker(MODEL_BACKEND="torch"), start_worker(MODEL_BACKEND="onnx")
    with_torch.wait_started()
    with_onnx.wait_started()

    def pool_maps_torch(worker: WorkerProcess) -> list[bool]:
        return [maps_torch(child.pid) for child in psutil.Process(worker.proc.pid).children()]

    assert any(pool_maps_torch(with_torch))
    assert pool_maps_torch(with_onnx) and not any(pool_maps_torch(with_onnx))
    assert not maps_torch(with_torch.proc.pid)
    assert not maps_torch(with_onnx.proc.pid)
    assert with_torch.terminate() == 0
    assert with_onnx.terminate() == 0


def maps_torch(pid: int) -> bool:
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
