"""The user's main job end to end: a video through `runner run` with two workers, scored."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2

from scripts.synthetic import load_ground_truth, score_detections, write_demo_video
from tests.stack import Endpoints
from tests.support import Topics, WorkerProcess, run_runner

FRAMES = 72


def test_a_video_through_two_workers_is_complete_ordered_and_accurate(
    stack: Endpoints, topics: Topics, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    video, truth_path = tmp_path / "clip.mp4", tmp_path / "truth.json"
    write_demo_video(video, truth_path, n_frames=FRAMES)
    replicas = [start_worker(), start_worker()]
    for worker in replicas:
        worker.wait_started()
    env = {**stack.env(), **topics.env(), "YOLO_OFFLINE": "1"}
    result_path = tmp_path / "clip.json"

    ran = run_runner(env, "run", str(video), "--out", str(result_path), "--video-id", "e2e-clip", "--timeout", "300")

    assert ran.returncode == 0, ran.stderr
    document = json.loads(result_path.read_text())
    assert document["complete"] is True
    assert document["total_frames"] == FRAMES
    assert [f["frame_id"] for f in document["frames"]] == list(range(FRAMES))
    assert document["missing_frame_ids"] == []
    assert document["error_count"] == 0
    truth = load_ground_truth(truth_path)
    predicted = [[(d["class_id"], d["bbox"]) for d in f["detections"]] for f in document["frames"]]
    scores = score_detections(truth, predicted)
    print(f"e2e accuracy: {scores}")  # noqa: T201
    assert scores["f1"] >= 0.9

    annotated = tmp_path / "clip-annotated.mp4"
    rendered = run_runner(env, "render", str(video), str(result_path), "--out", str(annotated))
    assert rendered.returncode == 0, rendered.stderr
    capture = cv2.VideoCapture(str(annotated))
    try:
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == FRAMES
    finally:
        capture.release()
