"""The INT8 demo model: `python -m inference quantize` on synthetic frames, scored against ground truth.

    python -m scripts.quantize_demo [--weights weights/best.pt] [--out weights/best_int8_openvino_model]

Run from the checkout (`make quantize-demo`): the report names its paths relative to it.

1. write calibration frames with the synthetic generator (stills like the training data's, a seed
   of their own, varied JPEG quality) into .cache/quantize-demo/frames;
2. run `python -m inference quantize` on them: the INT8 model and its report (agreement with FP32);
3. write the demo video of `make demo` (its seed, 300 frames) with its exact ground truth, and score
   the FP32 and the INT8 model on every frame against it: mAP50 (inference/agreement.py) and precision, recall and F1
   at the serving confidence (scripts/synthetic, the demo's own scoring);
4. add those figures to the report as `ground_truth`, and print them.

Exit code: the quantize command's (0 agreement at or over the minimum, 4 under it), or 1 when the
INT8 model's mAP50 against the ground truth is more than 0.01 under the FP32 model's.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inference import quantize
from inference.agreement import Detection, from_found, map50
from inference.head import Image
from scripts.synthetic import (
    DEFAULT_VIDEO_SEED,
    GroundTruthBox,
    load_ground_truth,
    make_frame,
    score_detections,
    write_demo_video,
)

WORK = Path(".cache/quantize-demo")
WEIGHTS = Path("weights/best.pt")
CALIBRATION_SEED = 23  # not the training set's seed (0): frames the model has not seen
CALIBRATION_FRAMES = 375  # 300 calibrate, every fifth is held out for the agreement
VIDEO_FRAMES = 300
# Target: INT8 loses at most this much mAP50 against the ground truth.
MAX_MAP50_DROP = 0.01


def write_calibration_frames(folder: Path, n: int, seed: int = CALIBRATION_SEED) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        image, _ = make_frame(rng, 640, 360)
        quality = int(rng.integers(60, 96))  # decoded video's compression, as in the training data
        cv2.imwrite(str(folder / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])


def video_frames(path: Path) -> Iterator[Image]:
    capture = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, image = capture.read()
            if not ok:
                return
            yield np.asarray(image, dtype=np.uint8)
    finally:
        capture.release()


def score_against_truth(
    model: Any, frames: list[Image], truth: list[list[GroundTruthBox]], conf: float, iou: float
) -> dict[str, float]:
    """mAP50 over the whole confidence range, precision/recall/F1 at the serving confidence and IoU."""
    found = [model.predict(image, quantize.SCORING_CONF, iou) for image in frames]
    ranked = [from_found(answer) for answer in found]
    references = [[Detection(t.class_id, (t.x1, t.y1, t.x2, t.y2)) for t in frame] for frame in truth]
    served = [[(d.class_id, list(d.box)) for d in frame if d.score >= conf] for frame in ranked]
    return {"map50": map50(ranked, references).map50, **score_detections(truth, served)}


def ground_truth_section(report: dict[str, Any]) -> dict[str, Any]:
    video, truth_path = WORK / "demo.mp4", WORK / "demo-truth.json"
    write_demo_video(video, truth_path, VIDEO_FRAMES, seed=DEFAULT_VIDEO_SEED)
    frames, truth = list(video_frames(video)), load_ground_truth(truth_path)
    frames = frames[: len(truth)]
    reference = quantize.reference_model(Path(report["weights"]), report["backend"], report["imgsz"])
    scores = {
        name: score_against_truth(
            quantize.load_model(report["backend"], path, report["imgsz"]), frames, truth, report["conf"], report["iou"]
        )
        for name, path in (("fp32", reference), ("int8", Path(report["model"])))
    }
    drop = scores["fp32"]["map50"] - scores["int8"]["map50"]
    return {"frames": len(frames), "video_seed": DEFAULT_VIDEO_SEED, **scores, "map50_drop": drop}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=WEIGHTS)
    parser.add_argument("--out", type=Path, default=WEIGHTS.parent / "best_int8_openvino_model")
    parser.add_argument("--backend", choices=("onnx", "openvino"), default=None)
    args = parser.parse_args(argv)
    frames = WORK / "frames"
    write_calibration_frames(frames, CALIBRATION_FRAMES)
    command = [str(args.weights), "--frames", str(frames), "--out", str(args.out)]
    code = quantize.main([*command, *(["--backend", args.backend] if args.backend else [])])
    if code not in (quantize.EXIT_OK, quantize.EXIT_BELOW_MINIMUM):
        return code
    model = args.out if code == quantize.EXIT_OK else quantize.failed_name(args.out)
    report_path = model.with_name(f"{model.name}.json")
    report = json.loads(report_path.read_text())
    section = ground_truth_section(report)
    report_path.write_text(json.dumps({**report, "ground_truth": section}, indent=2) + "\n")
    sys.stdout.write(
        f"against the ground truth of the {section['frames']}-frame demo video: mAP50 FP32 "
        f"{section['fp32']['map50']:.4f}, INT8 {section['int8']['map50']:.4f}; F1 FP32 {section['fp32']['f1']:.4f}, "
        f"INT8 {section['int8']['f1']:.4f}\n"
    )
    return code if section["map50_drop"] <= MAX_MAP50_DROP else 1


if __name__ == "__main__":
    raise SystemExit(main())
