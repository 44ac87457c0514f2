"""mAP50 and F1 of detections against reference detections (inference/agreement.py)."""

from __future__ import annotations

import pytest

from inference.agreement import Detection, f1, iou, map50

CIRCLE, SQUARE = 0, 1
A = (10.0, 10.0, 50.0, 50.0)
B = (100.0, 100.0, 140.0, 160.0)
C = (200.0, 20.0, 260.0, 80.0)


def test_identical_detections_agree_fully() -> None:
    frames = [[Detection(CIRCLE, A, 0.9), Detection(SQUARE, B, 0.8)], [Detection(SQUARE, C, 0.7)]]

    result = map50(frames, frames)

    assert result.map50 == 1.0
    assert result.per_class == {CIRCLE: 1.0, SQUARE: 1.0}
    assert (result.references, result.detections) == (3, 3)
    assert f1(frames, frames, conf=0.25) == 1.0


def test_a_missing_detection_costs_its_share_of_recall() -> None:
    references = [[Detection(SQUARE, A), Detection(SQUARE, B)], [Detection(SQUARE, C)]]
    detections = [[Detection(SQUARE, A, 0.9), Detection(SQUARE, B, 0.8)], []]

    result = map50(detections, references)

    assert result.map50 == pytest.approx(2 / 3)
    assert f1(detections, references, conf=0.25) == pytest.approx(2 * 2 / (2 + 3))


def test_a_box_shifted_below_iou_half_is_a_miss_and_a_false_positive() -> None:
    shifted = (A[0] + 16.0, A[1], A[2] + 16.0, A[3])  # 24 of 40 pixels overlap: IoU 24/56
    assert iou(A, shifted) < 0.5
    barely = (A[0] + 12.0, A[1], A[2] + 12.0, A[3])  # 28/52 > 0.5
    assert iou(A, barely) > 0.5

    assert map50([[Detection(CIRCLE, shifted, 0.9)]], [[Detection(CIRCLE, A)]]).map50 == 0.0
    assert map50([[Detection(CIRCLE, barely, 0.9)]], [[Detection(CIRCLE, A)]]).map50 == 1.0


def test_the_right_box_of_the_wrong_class_does_not_match() -> None:
    references = [[Detection(CIRCLE, A)]]
    detections = [[Detection(SQUARE, A, 0.9)]]

    result = map50(detections, references)

    assert result.map50 == 0.0
    assert result.per_class == {CIRCLE: 0.0}  # the square has no references: no AP of its own
    assert f1(detections, references, conf=0.25) == 0.0


def test_confidence_orders_the_detections() -> None:
    # One hit and one false positive: AP is 1.0 when the hit is more confident, 0.5 when it is not.
    references = [[Detection(CIRCLE, A)]]
    confident_hit = [[Detection(CIRCLE, A, 0.9), Detection(CIRCLE, B, 0.3)]]
    confident_miss = [[Detection(CIRCLE, A, 0.3), Detection(CIRCLE, B, 0.9)]]

    assert map50(confident_hit, references).map50 == 1.0
    assert map50(confident_miss, references).map50 == pytest.approx(0.5)


def test_a_second_detection_of_one_reference_is_a_false_positive() -> None:
    references = [[Detection(CIRCLE, A), Detection(CIRCLE, C)]]
    detections = [[Detection(CIRCLE, A, 0.9), Detection(CIRCLE, A, 0.8), Detection(CIRCLE, C, 0.7)]]

    # Ranked: hit, duplicate, hit -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1: AP = 1/2 + 1/2 * 2/3.
    assert map50(detections, references).map50 == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_f1_counts_only_detections_at_or_over_the_confidence() -> None:
    references = [[Detection(CIRCLE, A), Detection(SQUARE, B)]]
    detections = [[Detection(CIRCLE, A, 0.9), Detection(SQUARE, B, 0.1)]]

    assert f1(detections, references, conf=0.25) == pytest.approx(2 * 1 / (1 + 2))
    assert f1(detections, references, conf=0.05) == 1.0


def test_no_references_scores_what_was_found() -> None:
    assert map50([[], []], [[], []]).map50 == 1.0
    assert map50([[Detection(CIRCLE, A, 0.9)], []], [[], []]).map50 == 0.0
    assert f1([[]], [[]], conf=0.25) == 1.0


def test_frames_must_line_up() -> None:
    with pytest.raises(ValueError, match="2 frames of detections but 1"):
        map50([[], []], [[]])


def test_precision_is_the_best_at_that_recall_or_beyond() -> None:
    # Ranked: miss, hit, hit -> precision 0, 1/2, 2/3; interpolated, the first hit counts at 2/3, not 1/2.
    references = [[Detection(CIRCLE, A), Detection(CIRCLE, C)]]
    detections = [[Detection(CIRCLE, B, 0.9), Detection(CIRCLE, A, 0.8), Detection(CIRCLE, C, 0.7)]]

    assert map50(detections, references).map50 == pytest.approx(2 / 3)
