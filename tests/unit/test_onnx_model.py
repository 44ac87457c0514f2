"""The ONNX detection path's own arithmetic: letterbox, candidate selection, NMS, boxes back to the frame."""

from __future__ import annotations

import numpy as np
import pytest

from inference.head import PAD_VALUE, letterbox, nms, scale_to_frame, select
from inference.onnx_model import readable

EXPORT_META = {
    "task": "detect",
    "end2end": "False",
    "names": "{0: 'circle', 1: 'square'}",
    "args": "{'batch': 1, 'dynamic': True, 'simplify': False}",
}


def test_a_wide_frame_is_padded_to_the_stride_not_to_a_square() -> None:
    frame = np.full((360, 640, 3), 7, dtype=np.uint8)
    padded = letterbox(frame, 320, 32)
    assert padded.shape == (192, 320, 3)
    assert (padded[:6] == PAD_VALUE).all() and (padded[-6:] == PAD_VALUE).all()
    assert (padded[6:-6] == 7).all()


def test_boxes_go_back_to_frame_pixels_and_stay_inside_it() -> None:
    boxes = np.array([[10, 16, 110, 106], [300, 150, 330, 200]], dtype=np.float32)
    scale_to_frame(boxes, (192, 320), (360, 640))
    assert boxes.tolist() == [[20, 20, 220, 200], [600, 288, 640, 360]]


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]], dtype=np.float32)
    scores = np.array([0.6, 0.9, 0.5], dtype=np.float32)
    assert nms(boxes, scores, 0.45).tolist() == [1, 2]
    assert nms(boxes, scores, 0.9).tolist() == [1, 0, 2], "IoU 0.82 is under this threshold"


def head(*anchors: tuple[float, float, float, float, float, float]) -> np.ndarray:
    """A raw detection head for two classes: rows cx, cy, w, h, score0, score1; one column per anchor."""
    return np.array(anchors, dtype=np.float32).T


def test_each_anchor_takes_its_best_class_and_classes_do_not_suppress_each_other() -> None:
    output = head(
        (5, 5, 10, 10, 0.9, 0.1),  # a circle
        (5, 5, 10, 10, 0.2, 0.8),  # a square on the same spot: kept, another class
        (6, 5, 10, 10, 0.7, 0.0),  # a weaker circle over the first: suppressed
        (50, 50, 4, 4, 0.2, 0.24),  # under the confidence threshold
    )
    boxes, classes, scores = select(output, 0.25, 0.45)
    assert classes.tolist() == [0, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.8])
    assert boxes.tolist() == [[0, 0, 10, 10], [0, 0, 10, 10]]


def test_nothing_over_the_threshold_selects_nothing() -> None:
    boxes, classes, scores = select(head((5, 5, 10, 10, 0.1, 0.2)), 0.25, 0.45)
    assert boxes.shape == (0, 4) and classes.size == 0 and scores.size == 0


@pytest.mark.parametrize(
    ("change", "read"),
    [
        ({}, True),
        ({"end2end": "True"}, False),
        ({"task": "segment"}, False),
        ({"args": "{'dynamic': False}"}, False),
        ({"args": "{'data': PosixPath('/d.yaml'), 'dynamic': True}"}, False),
        ({"names": "not a literal"}, False),
    ],
)
def test_only_the_plain_dynamic_detection_head_is_read_here(change: dict[str, str], read: bool) -> None:
    assert readable({**EXPORT_META, **change}) is read
