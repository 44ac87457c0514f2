"""The demo video: moving shapes in an mp4, with every frame's exact boxes in a JSON file."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from scripts.synthetic.shapes import (
    CLASS_NAMES,
    MAX_OBJECTS,
    GroundTruthBox,
    Image,
    Shape,
    contrasting_colour,
    draw,
    random_background,
    random_shape,
)

DEFAULT_VIDEO_SEED = 20240607


@dataclass
class _Mover:
    shape: Shape
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
        shape = random_shape(rng, width, height)
        r = shape.bounding_radius()
        if any(_apart(shape, m.shape) < r + m.shape.bounding_radius() + 2 for m in movers):
            continue
        # Against the whole background, since the shape will travel across it.
        shape.colour = contrasting_colour(rng, image)
        speed, heading = rng.uniform(1.0, 6.0), rng.uniform(0, 2 * math.pi)
        spin = rng.uniform(-0.08, 0.08) if shape.class_id else 0.0
        movers.append(_Mover(shape, speed * math.cos(heading), speed * math.sin(heading), spin))
    return movers


def _apart(a: Shape, b: Shape) -> float:
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
                background = random_background(rng, width, height)
                movers = _movers(rng, background, width, height)
                noise_sigma = float(rng.uniform(0.0, 4.0))
            else:
                _step(movers, width, height)
            scene_left -= 1
            image = background.copy()
            for m in movers:
                draw(image, m.shape, m.shape.colour)
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
