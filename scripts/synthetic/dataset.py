"""The demo model's training data: an ultralytics data set of synthetic frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from scripts.synthetic.shapes import CLASS_NAMES, GroundTruthBox, make_frame


def _yolo_label(box: GroundTruthBox, width: int, height: int) -> str:
    x1, x2 = max(box.x1, 0.0), min(box.x2, float(width))
    y1, y2 = max(box.y1, 0.0), min(box.y2, float(height))
    cx, cy = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height
    w, h = (x2 - x1) / width, (y2 - y1) / height
    return f"{box.class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}"


def _write_split(root: Path, split: str, n: int, width: int, height: int, rng: np.random.Generator) -> None:
    images, labels = root / "images" / split, root / "labels" / split
    images.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, boxes = make_frame(rng, width, height)
        # Varying JPEG quality mimics the compression artefacts of decoded video.
        quality = int(rng.integers(60, 96))
        cv2.imwrite(str(images / f"{i:06d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        lines = [_yolo_label(b, width, height) for b in boxes]
        (labels / f"{i:06d}.txt").write_text("".join(line + "\n" for line in lines))


def write_yolo_dataset(root: Path, n_train: int, n_val: int, width: int, height: int, seed: int) -> Path:
    """Write an ultralytics data set (images, labels, data.yaml); return the yaml."""
    root = root.resolve()
    # Independent streams per split, so changing n_train does not change val.
    train_rng, val_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    _write_split(root, "train", n_train, width, height, train_rng)
    _write_split(root, "val", n_val, width, height, val_rng)
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(CLASS_NAMES))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml_path
