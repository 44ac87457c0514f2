"""Synthetic shapes: the demo model's training data, the demo video, and scoring.

Everything is drawn from a seeded ``numpy.random.Generator``, so a seed fixes
the output exactly. Boxes are exact: they come from the geometry that was
drawn, not from a detector, so the pipeline's output can be scored against
them.

Coordinates are continuous pixel-edge coordinates (pixel ``i`` spans
``[i, i + 1)``), the convention of YOLO labels and of ultralytics' boxes.

Command line::

    python scripts/synthetic.py video OUT.mp4 --truth OUT.json --frames 300
    python scripts/synthetic.py dataset DIR --train 800 --val 200
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle")

Image = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]
Points = npt.NDArray[np.float64]
Colour = tuple[int, int, int]

# Object size (the shape's nominal extent) as a fraction of the image's shorter side.
MIN_SIZE_FRACTION = 0.06
MAX_SIZE_FRACTION = 0.30
# Each object stays at least this visible when later objects are drawn over it.
MIN_VISIBLE_FRACTION = 0.6
MAX_OBJECTS = 5
# Colours closer than this (Euclidean, BGR) to the background are rejected when
# possible: mp4 and JPEG smear low-contrast edges away.
MIN_COLOUR_DISTANCE = 110.0
# cv2 drawing functions take fixed-point coordinates with this many fraction bits.
_SHIFT = 4
_SCALE = 1 << _SHIFT
# Measured: cv2's LINE_AA fills come out 0.6-0.7 px fatter all round than asked.
_AA_GROWTH_PX = 0.65
DEFAULT_VIDEO_SEED = 20240607


@dataclass(frozen=True)
class GroundTruthBox:
    """An exact box in absolute pixels (x1, y1, x2, y2) with its class."""

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class _Shape:
    """A shape's pose; the video moves it between frames."""

    class_id: int
    cx: float
    cy: float
    size: float
    angle: float
    colour: Colour
    # Fixed per-shape vertex jitter so triangles are not all equilateral.
    jitter: tuple[float, ...] = ()

    def points(self) -> Points:
        """Outline vertices (a many-sided polygon for the circle)."""
        if self.class_id == 0:
            radius = self.size / 2
            t = np.linspace(0.0, 2 * math.pi, 64, endpoint=False)
            return np.stack([self.cx + radius * np.cos(t), self.cy + radius * np.sin(t)], axis=1)
        if self.class_id == 1:
            half = self.size / 2
            base = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
        else:
            # Circumradius chosen so the triangle's side equals ``size``.
            radius = self.size / math.sqrt(3)
            t = np.array([-math.pi / 2, math.pi / 6, 5 * math.pi / 6])
            scale = np.array(self.jitter or (1.0, 1.0, 1.0))
            base = np.stack([radius * scale * np.cos(t), radius * scale * np.sin(t)], axis=1)
        cos_a, sin_a = math.cos(self.angle), math.sin(self.angle)
        rotation = np.array([[cos_a, -sin_a], [sin_a, cos_a]])
        placed: Points = base @ rotation.T + np.array([self.cx, self.cy])
        return placed

    def box(self) -> GroundTruthBox:
        if self.class_id == 0:
            r = self.size / 2
            return GroundTruthBox(0, self.cx - r, self.cy - r, self.cx + r, self.cy + r)
        pts = self.points()
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        return GroundTruthBox(self.class_id, float(x1), float(y1), float(x2), float(y2))

    def bounding_radius(self) -> float:
        pts = self.points()
        return float(np.hypot(pts[:, 0] - self.cx, pts[:, 1] - self.cy).max())


# --------------------------------------------------------------------------- drawing


def _draw(image: Image, shape: _Shape, colour: Colour | int) -> None:
    """Rasterise with anti-aliasing and sub-pixel placement.

    cv2's anti-aliased fill paints a soft rim about _AA_GROWTH_PX outside the
    outline it is given, so it is given an outline shrunk by that much: the
    painted shape then ends where its box says.
    """
    value: Any = colour
    if shape.class_id == 0:
        # cv2 puts pixel centres at integers; our boxes use pixel edges.
        centre = (round((shape.cx - 0.5) * _SCALE), round((shape.cy - 0.5) * _SCALE))
        radius = round(max(shape.size / 2 - _AA_GROWTH_PX, 0.5) * _SCALE)
        cv2.circle(image, centre, radius, value, -1, cv2.LINE_AA, _SHIFT)
        return
    pts = np.round((_shrunk(shape.points(), _AA_GROWTH_PX) - 0.5) * _SCALE).astype(np.int32)
    cv2.fillPoly(image, [pts], value, cv2.LINE_AA, _SHIFT)


def _shrunk(points: Points, inset: float) -> Points:
    """Move a convex polygon's edges inwards by about ``inset`` pixels.

    Scaling about the centroid by (r - inset) / r, with r the inradius, is exact
    for squares and equilateral triangles and close enough for jittered ones.
    """
    x, y = points[:, 0], points[:, 1]
    area = 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
    perimeter = float(np.hypot(*(np.roll(points, -1, axis=0) - points).T).sum())
    inradius = 2 * area / perimeter
    centroid = points.mean(axis=0)
    factor = max(inradius - inset, 0.5) / inradius
    shrunk: Points = centroid + (points - centroid) * factor
    return shrunk


def _mask(shape: _Shape, width: int, height: int) -> Mask:
    canvas = np.zeros((height, width), np.uint8)
    _draw(canvas, shape, 255)
    mask: Mask = canvas > 127
    return mask


def _random_colour(rng: np.random.Generator) -> Colour:
    b, g, r = rng.integers(0, 256, size=3)
    return int(b), int(g), int(r)


def _background(rng: np.random.Generator, width: int, height: int) -> Image:
    """Solid, gradient or blotchy texture, chosen at random."""
    kind = rng.choice(["solid", "gradient", "texture"], p=[0.3, 0.35, 0.35])
    c0 = np.array(_random_colour(rng), np.float64)
    c1 = np.array(_random_colour(rng), np.float64)
    weight: Points
    if kind == "solid":
        weight = np.zeros((height, width))
    elif kind == "gradient":
        angle = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
        proj = xs * math.cos(angle) + ys * math.sin(angle)
        weight = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    else:
        # Low-frequency noise upsampled smoothly: blotches, not edges, so it
        # does not look like the shapes the model must find.
        cells = int(rng.integers(3, 12))
        coarse = rng.random((cells, max(2, cells * width // height)))
        smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
        weight = np.clip(np.asarray(smooth, np.float64), 0.0, 1.0)
    blend = c0 * (1 - weight[..., None]) + c1 * weight[..., None]
    if kind == "texture" or rng.random() < 0.3:
        blend += rng.normal(0.0, rng.uniform(3.0, 12.0), size=blend.shape)
    return np.clip(blend, 0, 255).astype(np.uint8)


def _contrasting_colour(rng: np.random.Generator, region: Image) -> Colour:
    """A random colour far from every typical colour of ``region``.

    Tries random colours and keeps the first one that is far enough from the
    region's 10th/50th/90th-percentile colours; falls back to the best seen.
    """
    pixels = region.reshape(-1, 3).astype(np.float64)
    refs = np.percentile(pixels, [10, 50, 90], axis=0)
    best, best_distance = _random_colour(rng), -1.0
    for _ in range(64):
        candidate = _random_colour(rng)
        distance = float(np.linalg.norm(refs - np.array(candidate), axis=1).min())
        if distance >= MIN_COLOUR_DISTANCE:
            return candidate
        if distance > best_distance:
            best, best_distance = candidate, distance
    return best


def _random_shape(rng: np.random.Generator, width: int, height: int) -> _Shape:
    short = min(width, height)
    # Log-uniform sizes: as many small objects as large ones.
    size = short * math.exp(rng.uniform(math.log(MIN_SIZE_FRACTION), math.log(MAX_SIZE_FRACTION)))
    class_id = int(rng.integers(0, len(CLASS_NAMES)))
    shape = _Shape(
        class_id=class_id,
        cx=0.0,
        cy=0.0,
        size=size,
        angle=float(rng.uniform(0, 2 * math.pi)),
        colour=(0, 0, 0),
        jitter=tuple(float(j) for j in rng.uniform(0.85, 1.15, size=3)),
    )
    # Place it wholly inside the image.
    margin = shape.bounding_radius() + 1.0
    shape.cx = float(rng.uniform(margin, width - margin))
    shape.cy = float(rng.uniform(margin, height - margin))
    return shape


def _degrade(rng: np.random.Generator, image: Image, noise_sigma: float) -> Image:
    """Light sensor-like noise and occasional blur."""
    out = image
    if rng.random() < 0.2:
        kernel = int(rng.choice([3, 5]))
        out = np.asarray(cv2.GaussianBlur(out, (kernel, kernel), 0), np.uint8)
    if noise_sigma > 0:
        noisy = out.astype(np.float64) + rng.normal(0.0, noise_sigma, size=out.shape)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
    return out


def _region(image: Image, box: GroundTruthBox) -> Image:
    x1, y1 = max(int(box.x1), 0), max(int(box.y1), 0)
    x2, y2 = math.ceil(box.x2), math.ceil(box.y2)
    return image[y1:y2, x1:x2]


def _fits(new: Mask, visible: list[Mask], areas: list[int]) -> bool:
    """Would every earlier object stay visible enough under ``new``?"""
    return all(
        int((mask & ~new).sum()) >= MIN_VISIBLE_FRACTION * area for mask, area in zip(visible, areas, strict=True)
    )


def make_frame(rng: np.random.Generator, width: int, height: int) -> tuple[Image, list[GroundTruthBox]]:
    """One still image (BGR) with 1-5 shapes and their exact boxes."""
    image = _background(rng, width, height)
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    shapes: list[_Shape] = []
    visible: list[Mask] = []
    areas: list[int] = []
    attempts = 0
    while len(shapes) < wanted and attempts < 50:
        attempts += 1
        shape = _random_shape(rng, width, height)
        mask = _mask(shape, width, height)
        if not _fits(mask, visible, areas):
            continue
        visible = [v & ~mask for v in visible]
        shape.colour = _contrasting_colour(rng, _region(image, shape.box()))
        _draw(image, shape, shape.colour)
        shapes.append(shape)
        visible.append(mask)
        areas.append(int(mask.sum()))
    image = _degrade(rng, image, float(rng.uniform(0.0, 6.0)))
    return image, [s.box() for s in shapes]


# --------------------------------------------------------------------------- data set


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


# --------------------------------------------------------------------------- video


@dataclass
class _Mover:
    shape: _Shape
    vx: float
    vy: float
    spin: float


def _movers(rng: np.random.Generator, image: Image, width: int, height: int) -> list[_Mover]:
    """1-5 shapes whose bounding circles do not overlap, with random velocities."""
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    movers: list[_Mover] = []
    for _ in range(50):
        if len(movers) == wanted:
            break
        shape = _random_shape(rng, width, height)
        r = shape.bounding_radius()
        if any(_apart(shape, m.shape) < r + m.shape.bounding_radius() + 2 for m in movers):
            continue
        # Against the whole background, since the shape will travel across it.
        shape.colour = _contrasting_colour(rng, image)
        speed, heading = rng.uniform(1.0, 6.0), rng.uniform(0, 2 * math.pi)
        spin = rng.uniform(-0.08, 0.08) if shape.class_id else 0.0
        movers.append(_Mover(shape, speed * math.cos(heading), speed * math.sin(heading), spin))
    return movers


def _apart(a: _Shape, b: _Shape) -> float:
    return math.hypot(a.cx - b.cx, a.cy - b.cy)


def _step(movers: list[_Mover], width: int, height: int) -> None:
    """Advance one frame: bounce off the walls and off each other."""
    for m in movers:
        s = m.shape
        s.cx, s.cy, s.angle = s.cx + m.vx, s.cy + m.vy, s.angle + m.spin
        r = s.bounding_radius()
        if s.cx < r or s.cx > width - r:
            m.vx = -m.vx
            s.cx = min(max(s.cx, r), width - r)
        if s.cy < r or s.cy > height - r:
            m.vy = -m.vy
            s.cy = min(max(s.cy, r), height - r)
    for i, a in enumerate(movers):
        for b in movers[i + 1 :]:
            _collide(a, b)


def _collide(a: _Mover, b: _Mover) -> None:
    """Equal-mass elastic bounce between bounding circles, so shapes never overlap."""
    dx, dy = b.shape.cx - a.shape.cx, b.shape.cy - a.shape.cy
    distance = math.hypot(dx, dy) or 1e-6
    reach = a.shape.bounding_radius() + b.shape.bounding_radius()
    if distance >= reach:
        return
    nx, ny = dx / distance, dy / distance
    va, vb = a.vx * nx + a.vy * ny, b.vx * nx + b.vy * ny
    if va > vb:  # approaching: swap the normal components
        a.vx, a.vy = a.vx + (vb - va) * nx, a.vy + (vb - va) * ny
        b.vx, b.vy = b.vx + (va - vb) * nx, b.vy + (va - vb) * ny
    push = (reach - distance) / 2
    a.shape.cx, a.shape.cy = a.shape.cx - push * nx, a.shape.cy - push * ny
    b.shape.cx, b.shape.cy = b.shape.cx + push * nx, b.shape.cy + push * ny


def _clipped(box: GroundTruthBox, width: int, height: int) -> GroundTruthBox:
    return GroundTruthBox(
        box.class_id,
        max(box.x1, 0.0),
        max(box.y1, 0.0),
        min(box.x2, float(width)),
        min(box.y2, float(height)),
    )


def _box_json(box: GroundTruthBox) -> dict[str, Any]:
    return {
        "class_id": box.class_id,
        "class_name": CLASS_NAMES[box.class_id],
        "bbox": [round(v, 2) for v in (box.x1, box.y1, box.x2, box.y2)],
    }


def write_demo_video(
    path: Path,
    ground_truth_path: Path,
    n_frames: int,
    width: int = 640,
    height: int = 360,
    fps: float = 10.0,
    seed: int = DEFAULT_VIDEO_SEED,
) -> None:
    """Write an mp4 of moving shapes and a JSON file with every frame's exact boxes.

    The video is a run of scenes (30-90 frames each, new background and shapes);
    within a scene the shapes drift, spin and bounce.
    """
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot open a video writer for {path}")
    frames: list[dict[str, Any]] = []
    try:
        scene_left = 0
        for frame_id in range(n_frames):
            if scene_left == 0:
                scene_left = int(rng.integers(30, 91))
                background = _background(rng, width, height)
                movers = _movers(rng, background, width, height)
                noise_sigma = float(rng.uniform(0.0, 4.0))
            else:
                _step(movers, width, height)
            scene_left -= 1
            image = background.copy()
            for m in movers:
                _draw(image, m.shape, m.shape.colour)
            if noise_sigma > 0:
                noisy = image.astype(np.float64) + rng.normal(0.0, noise_sigma, image.shape)
                image = np.clip(noisy, 0, 255).astype(np.uint8)
            writer.write(image)
            boxes = [_box_json(_clipped(m.shape.box(), width, height)) for m in movers]
            frames.append({"frame_id": frame_id, "boxes": boxes})
    finally:
        writer.release()
    truth = {"width": width, "height": height, "fps": fps, "frames": frames}
    ground_truth_path.parent.mkdir(parents=True, exist_ok=True)
    ground_truth_path.write_text(json.dumps(truth))


def load_ground_truth(path: Path) -> list[list[GroundTruthBox]]:
    """Read a ground-truth file written by ``write_demo_video``, one list per frame."""
    data = json.loads(path.read_text())
    frames = sorted(data["frames"], key=lambda f: int(f["frame_id"]))
    return [[GroundTruthBox(int(b["class_id"]), *map(float, b["bbox"])) for b in f["boxes"]] for f in frames]


# --------------------------------------------------------------------------- scoring


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


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


# --------------------------------------------------------------------------- CLI


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)
    video = sub.add_parser("video", help="write a demo video and its ground truth")
    video.add_argument("out", type=Path)
    video.add_argument("--truth", type=Path, required=True)
    video.add_argument("--frames", type=int, default=300)
    video.add_argument("--width", type=int, default=640)
    video.add_argument("--height", type=int, default=360)
    video.add_argument("--fps", type=float, default=10.0)
    video.add_argument("--seed", type=int, default=DEFAULT_VIDEO_SEED)
    dataset = sub.add_parser("dataset", help="write a YOLO training data set")
    dataset.add_argument("root", type=Path)
    dataset.add_argument("--train", type=int, default=800)
    dataset.add_argument("--val", type=int, default=200)
    dataset.add_argument("--width", type=int, default=640)
    dataset.add_argument("--height", type=int, default=360)
    dataset.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if args.command == "video":
        write_demo_video(
            args.out,
            args.truth,
            args.frames,
            args.width,
            args.height,
            args.fps,
            args.seed,
        )
        sys.stdout.write(f"wrote {args.out} and {args.truth}\n")
    else:
        yaml_path = write_yolo_dataset(args.root, args.train, args.val, args.width, args.height, args.seed)
        sys.stdout.write(f"wrote {yaml_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
