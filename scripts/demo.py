"""`make demo`: the main job end to end on a local stack, scored against ground truth.

1. start the local Kafka + S3 (or reuse the dev stack that is already running);
2. start two worker replicas (`python -m inference`) in one consumer group;
3. write the demo video and its exact ground truth with the synthetic generator;
4. `python -m runner run` on it: split, detect, reassemble in frame order;
5. `python -m runner render`: the annotated video;
6. print the summary and precision/recall/F1 against the ground truth (IoU >= 0.5);
7. stop the workers, and the stack if this script started it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from scripts import devstack
from scripts.synthetic import load_ground_truth, score_detections, write_demo_video

OUT = devstack.REPO_ROOT / "out"
REPLICAS = 2


@contextmanager
def local_stack() -> Iterator[dict[str, str]]:
    state_dir = devstack.STATE_DIR
    running = devstack.read_state(state_dir)
    if running is not None and devstack.pid_alive(running.kafka_pid) and devstack.pid_alive(running.s3_pid):
        print(f"using the running dev stack (kafka :{running.kafka_port}, s3 :{running.s3_port})")  # noqa: T201
        devstack.wait_ready(running)
        yield running.env()
        return
    started = time.monotonic()
    info = devstack.up(state_dir, 9092, 8333)
    print(f"started Kafka and S3 in {time.monotonic() - started:.1f}s")  # noqa: T201
    try:
        yield info.env()
    finally:
        devstack.down(state_dir)
        print("stopped Kafka and S3")  # noqa: T201


@contextmanager
def workers(env: dict[str, str], count: int, log_dir: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    try:
        for i in range(count):
            with (log_dir / f"worker-{i}.log").open("wb") as log:
                procs.append(
                    subprocess.Popen([sys.executable, "-m", "inference"], env=env, stdout=log, stderr=subprocess.STDOUT)
                )
        yield procs
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=90) for proc in procs]
        print(f"workers stopped, exit codes {codes}")  # noqa: T201


def run(args: list[str], env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "runner", *args], env=env, check=False)
    if done.returncode != 0:
        raise SystemExit(f"demo: `runner {args[0]}` exited {done.returncode}")


def score(result_path: Path, truth_path: Path) -> dict[str, float]:
    truth = load_ground_truth(truth_path)
    document = json.loads(result_path.read_text())
    predicted: list[list[tuple[int, list[float]]]] = [[] for _ in truth]
    for frame in document["frames"]:
        predicted[frame["frame_id"]] = [(d["class_id"], d["bbox"]) for d in frame["detections"]]
    return score_detections(truth, predicted)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=120, help="frames in the demo video (default 120)")
    parser.add_argument("--replicas", type=int, default=REPLICAS, help="worker replicas (default 2)")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    video, truth = OUT / "demo.mp4", OUT / "demo-truth.json"
    result, annotated = OUT / "demo.json", OUT / "demo-annotated.mp4"
    write_demo_video(video, truth, n_frames=args.frames)
    video_id = f"demo-{int(time.time())}"
    with ExitStack() as stack:
        stack_env = stack.enter_context(local_stack())
        env = {**os.environ, **stack_env, "YOLO_OFFLINE": "1", "LOG_FORMAT": "json"}
        worker_env = {**env, "WORKER_PROCESSES": "1"}
        stack.enter_context(workers(worker_env, args.replicas, OUT))
        print(f"{args.replicas} workers starting; logs in {OUT}/worker-*.log")  # noqa: T201
        run(["run", str(video), "--out", str(result), "--video-id", video_id, "--timeout", "600"], env)
        run(["render", str(video), str(result), "--out", str(annotated)], env)
    scores = score(result, truth)
    print(  # noqa: T201
        f"accuracy vs ground truth (IoU>=0.5): precision {scores['precision']:.3f} "
        f"recall {scores['recall']:.3f} F1 {scores['f1']:.3f}\n"
        f"results: {result}\nannotated video: {annotated}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
