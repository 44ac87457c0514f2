"""Scoring of detections against exact ground truth: precision, recall, F1."""

from __future__ import annotations

from inference.agreement import iou
from scripts.synthetic.shapes import GroundTruthBox


def _matches(truth: list[GroundTruthBox], predicted: list[tuple[int, list[float]]], thr: float) -> int:
    """Greedy one-to-one matching, best IoU first; returns the number of matches."""
    pairs: list[tuple[float, int, int]] = []
    for ti, t in enumerate(truth):
        for pi, (class_id, bbox) in enumerate(predicted):
            if class_id == t.class_id:
                overlap = iou((t.x1, t.y1, t.x2, t.y2), bbox)
                if overlap >= thr:
                    pairs.append((overlap, ti, pi))
    used_t: set[int] = set()
    used_p: set[int] = set()
    for _, ti, pi in sorted(pairs, reverse=True):
        if ti not in used_t and pi not in used_p:
            used_t.add(ti)
            used_p.add(pi)
    return len(used_t)


def score_detections(
    truth: list[list[GroundTruthBox]],
    predicted: list[list[tuple[int, list[float]]]],
    iou_threshold: float = 0.5,
) -> dict[str, float]:
    """Precision, recall and F1 over all frames.

    A match needs the same class and IoU >= ``iou_threshold``.
    """
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} frames of truth but {len(predicted)} of predictions")
    tp = sum(_matches(t, p, iou_threshold) for t, p in zip(truth, predicted, strict=True))
    n_pred = sum(len(p) for p in predicted)
    n_true = sum(len(t) for t in truth)
    fp, fn = n_pred - tp, n_true - tp
    precision = tp / n_pred if n_pred else 1.0
    recall = tp / n_true if n_true else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }
