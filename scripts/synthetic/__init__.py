"""Synthetic shapes with exact ground-truth boxes, drawn from a seed.

shapes.py draws one still frame and its boxes, dataset.py writes the demo model's training data
from such frames, video.py writes the demo video of moving shapes with its ground truth,
scoring.py scores detections against that ground truth; __main__.py is the command line
(`python -m scripts.synthetic video|dataset`).
"""

from __future__ import annotations

from inference.agreement import iou
from scripts.synthetic.dataset import write_yolo_dataset
from scripts.synthetic.scoring import score_detections
from scripts.synthetic.shapes import CLASS_NAMES, GroundTruthBox, make_frame
from scripts.synthetic.video import DEFAULT_VIDEO_SEED, load_ground_truth, write_demo_video

__all__ = [
    "CLASS_NAMES",
    "DEFAULT_VIDEO_SEED",
    "GroundTruthBox",
    "iou",
    "load_ground_truth",
    "make_frame",
    "score_detections",
    "write_demo_video",
    "write_yolo_dataset",
]
