"""Seeded drawing of one still frame of shapes with their exact boxes.

Everything is drawn from a seeded ``numpy.random.Generator``, so a seed fixes
the output exactly. Boxes are exact: they come from the geometry that was
drawn, not from a detector, so the pipeline's output can be scored against
them.

Coordinates are continuous pixel-edge coordinates (pixel ``i`` spans
``[i, i + 1)``), the convention of YOLO labels and of ultralytics' boxes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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
# Measured: cv2's LINE_AA fills come out about this much fatter all round than asked.
_AA_GROWTH_PX = 0.65


@dataclass(frozen=True)
class GroundTruthBox:
    """An exact box in absolute pixels (x1, y1, x2, y2) with its class."""

    class_id: int
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class Shape:
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


def draw(image: Image, shape: Shape, colour: Colour | int) -> None:
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


def _mask(shape: Shape, width: int, height: int) -> Mask:
    canvas = np.zeros((height, width), np.uint8)
    draw(canvas, shape, 255)
    mask: Mask = canvas > 127
    return mask


def _random_colour(rng: np.random.Generator) -> Colour:
    b, g, r = rng.integers(0, 256, size=3)
    return int(b), int(g), int(r)


def random_background(rng: np.random.Generator, width: int, height: int) -> Image:
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


def contrasting_colour(rng: np.random.Generator, region: Image) -> Colour:
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


def random_shape(rng: np.random.Generator, width: int, height: int) -> Shape:
    """A shape of random class, size and angle, placed wholly inside the image; its colour is unset."""
    short = min(width, height)
    # Log-uniform sizes: as many small objects as large ones.
    size = short * math.exp(rng.uniform(math.log(MIN_SIZE_FRACTION), math.log(MAX_SIZE_FRACTION)))
    class_id = int(rng.integers(0, len(CLASS_NAMES)))
    shape = Shape(
        class_id=class_id,
        cx=0.0,
        cy=0.0,
        size=size,
        angle=float(rng.uniform(0, 2 * math.pi)),
        colour=(0, 0, 0),
        jitter=tuple(float(j) for j in rng.uniform(0.85, 1.15, size=3)),
    )
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
    image = random_background(rng, width, height)
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    shapes: list[Shape] = []
    visible: list[Mask] = []
    areas: list[int] = []
    attempts = 0
    while len(shapes) < wanted and attempts < 50:
        attempts += 1
        shape = random_shape(rng, width, height)
        mask = _mask(shape, width, height)
        if not _fits(mask, visible, areas):
            continue
        visible = [v & ~mask for v in visible]
        shape.colour = contrasting_colour(rng, _region(image, shape.box()))
        draw(image, shape, shape.colour)
        shapes.append(shape)
        visible.append(mask)
        areas.append(int(mask.sum()))
    image = _degrade(rng, image, float(rng.uniform(0.0, 6.0)))
    return image, [s.box() for s in shapes]
