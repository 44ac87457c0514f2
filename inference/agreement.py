"""mAP50 of detections scored against reference detections: a label-free accuracy figure.

`python -m inference quantize` scores the INT8 model's detections against the FP32 model's on
the same frames (the references stand in for labels); scripts/quantize_demo.py scores both
against the synthetic generator's exact boxes with the same function.

The metric is the usual one (Pascal VOC 2010+ / COCO at one IoU): per class, the detections of
every frame are taken best confidence first; each one matches the unmatched reference of its
class in its frame that it overlaps most, if that overlap is at least `IOU_THRESHOLD`, else it
is a false positive. AP is the area under the precision-recall curve with precision made
monotone (all-point interpolation); mAP is the mean over the classes that have references.
A class found only among the detections has no AP and is left out, as in COCO.

`f1` is the other usual figure, at one confidence: precision and recall of the detections at or
over it, matched the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from inference.head import Detections

IOU_THRESHOLD = 0.5

Box = Sequence[float]  # x1, y1, x2, y2 in pixels


@dataclass(frozen=True)
class Detection:
    """One box of one frame; a reference's score is never read."""

    class_id: int
    box: Box
    score: float = 1.0


@dataclass(frozen=True)
class Agreement:
    """mAP50 over the classes with references, AP per class, and how many references there were."""

    map50: float
    per_class: dict[int, float]
    references: int
    detections: int


def from_found(found: Detections) -> list[Detection]:
    """A model's answer for one frame (boxes, class ids, confidences), as detections to score."""
    boxes, classes, scores = found
    return [Detection(c, b, s) for b, c, s in zip(boxes, classes, scores, strict=True)]


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 for boxes without area."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def map50(
    detections: Sequence[Sequence[Detection]],
    references: Sequence[Sequence[Detection]],
    iou_threshold: float = IOU_THRESHOLD,
) -> Agreement:
    """Score each frame's detections against the same frame's references (frames in the same order)."""
    if len(detections) != len(references):
        raise ValueError(f"{len(detections)} frames of detections but {len(references)} of references")
    classes = sorted({d.class_id for frame in references for d in frame})
    per_class = {c: _average_precision(detections, references, c, iou_threshold) for c in classes}
    counted = sum(len(frame) for frame in references)
    found = sum(len(frame) for frame in detections)
    if not per_class:
        # Nothing to find: full marks for finding nothing, none for anything found.
        return Agreement(1.0 if found == 0 else 0.0, {}, 0, found)
    return Agreement(float(np.mean(list(per_class.values()))), per_class, counted, found)


def f1(
    detections: Sequence[Sequence[Detection]],
    references: Sequence[Sequence[Detection]],
    conf: float,
    iou_threshold: float = IOU_THRESHOLD,
) -> float:
    """F1 of the detections scored `conf` or more against the references; 1.0 when both are empty."""
    if len(detections) != len(references):
        raise ValueError(f"{len(detections)} frames of detections but {len(references)} of references")
    kept = [[d for d in frame if d.score >= conf] for frame in detections]
    classes = {d.class_id for frame in [*references, *kept] for d in frame}
    hits = sum(int(_hits(kept, references, c, iou_threshold).sum()) for c in classes)
    found, counted = sum(len(frame) for frame in kept), sum(len(frame) for frame in references)
    return 2 * hits / (found + counted) if found + counted else 1.0


def _average_precision(
    detections: Sequence[Sequence[Detection]],
    references: Sequence[Sequence[Detection]],
    class_id: int,
    threshold: float,
) -> float:
    n_references = sum(1 for frame in references for d in frame if d.class_id == class_id)
    return _area_under_curve(_hits(detections, references, class_id, threshold), n_references)


def _hits(
    detections: Sequence[Sequence[Detection]],
    references: Sequence[Sequence[Detection]],
    class_id: int,
    threshold: float,
) -> npt.NDArray[np.bool_]:
    """Whether each detection of the class, best confidence first, matches an unmatched reference."""
    truth = [[d.box for d in frame if d.class_id == class_id] for frame in references]
    ranked = sorted(
        ((d.score, frame, d.box) for frame, found in enumerate(detections) for d in found if d.class_id == class_id),
        key=lambda item: -item[0],
    )
    matched = [[False] * len(boxes) for boxes in truth]
    hits = np.zeros(len(ranked), dtype=bool)
    for rank, (_, frame, box) in enumerate(ranked):
        best = _best_unmatched(box, truth[frame], matched[frame], threshold)
        if best is not None:
            matched[frame][best] = True
            hits[rank] = True
    return hits


def _best_unmatched(box: Box, truth: list[Box], matched: list[bool], threshold: float) -> int | None:
    best, best_overlap = None, threshold
    for index, reference in enumerate(truth):
        overlap = iou(box, reference)
        if not matched[index] and overlap >= best_overlap:
            best, best_overlap = index, overlap
    return best


def _area_under_curve(hits: npt.NDArray[np.bool_], n_references: int) -> float:
    """All-point interpolated AP of detections ranked best first, `hits` marking the true positives."""
    if n_references == 0 or not hits.any():
        return 0.0
    true_positives = np.cumsum(hits)
    recall = np.concatenate(([0.0], true_positives / n_references))
    precision = np.concatenate(([1.0], true_positives / np.arange(1, len(hits) + 1)))
    # Precision at a recall is the best precision at that recall or any higher one.
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope[1:]))
