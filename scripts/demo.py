"""`make demo`: the main job end to end on a local stack, scored against ground truth.

1. start the local Kafka + S3 (or reuse the dev stack that is already running);
2. start two worker replicas (`python -m inference`) in one consumer group;
3. write the demo video and its exact ground truth with the synthetic generator;
4. `python -m runner run` on it: split, detect, reassemble in frame order;
5. `python -m runner render`: the annotated video;
6. print the summary and precision/recall/F1 against the ground truth (IoU >= 0.5);
7. stop the workers, and the stack if this script started it.

`--video PATH` (`make demo VIDEO=...`) runs steps 1, 2, 4, 5 and 7 on the user's own clip: there is
no ground truth to score it against. `--serve` (`make serve`) runs steps 1 and 2, then
`python -m runner serve` (the console on http://127.0.0.1:8000) until Ctrl-C, then step 7.
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

from runner.ids import video_id_for
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


def serve(env: dict[str, str]) -> None:
    """`runner serve` in the foreground; Ctrl-C reaches it (and the workers) from the terminal."""
    print("console on http://127.0.0.1:8000 (API docs at /docs); Ctrl-C stops everything")  # noqa: T201
    server = subprocess.Popen([sys.executable, "-m", "runner", "serve"], env=env)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.wait(timeout=60)


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
    parser.add_argument("--video", type=Path, help="your own clip instead of the generated one (not scored)")
    parser.add_argument("--serve", action="store_true", help="run the console on :8000 until Ctrl-C instead")
    args = parser.parse_args()
    OUT.mkdir(exist_ok=True)
    if args.video is not None and not args.video.is_file():
        raise SystemExit(f"demo: no video at {args.video}")
    video, truth = args.video or OUT / "demo.mp4", OUT / "demo-truth.json"
    result, annotated = OUT / f"{video.stem}.json", OUT / f"{video.stem}-annotated.mp4"
    if args.video is None and not args.serve:
        write_demo_video(video, truth, n_frames=args.frames)
    video_id = f"{video_id_for(video)[:100]}-{int(time.time())}"
    with ExitStack() as stack:
        stack_env = stack.enter_context(local_stack())
        env = {**os.environ, **stack_env, "YOLO_OFFLINE": "1", "LOG_FORMAT": "json"}
        worker_env = {**env, "WORKER_PROCESSES": "1"}
        stack.enter_context(workers(worker_env, args.replicas, OUT))
        print(f"{args.replicas} workers starting; logs in {OUT}/worker-*.log")  # noqa: T201
        if args.serve:
            serve(env)
            return 0
        run(["run", str(video), "--out", str(result), "--video-id", video_id, "--timeout", "600"], env)
        run(["render", str(video), str(result), "--out", str(annotated)], env)
    if args.video is not None:
        print(f"results: {result}\nannotated video: {annotated}")  # noqa: T201
        return 0
    scores = score(result, truth)
    print(  # noqa: T201
        f"accuracy vs ground truth (IoU>=0.5): precision {scores['precision']:.3f} "
        f"recall {scores['recall']:.3f} F1 {scores['f1']:.3f}\n"
        f"results: {result}\nannotated video: {annotated}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
