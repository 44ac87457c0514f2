"""YOLO's detection head read by the project itself: letterbox in, boxes, classes and scores out.

The same numbers as ultralytics' predictor on its own exports (letterbox to the stride, class-aware
NMS, boxes scaled back to the frame; the backend tests compare them with torch), in less time and
memory: importing ultralytics imports torch, and its predictor converts every frame to a torch
tensor and back. `ExportedModel` runs it around any runtime that maps a batch of letterboxed
images to the raw head `(batch, 4 + classes, anchors)`: ONNX Runtime (onnx_model.py) and OpenVINO
(openvino_model.py).

Only the plain detection head with dynamic input sizes is read here, which is what
inference/backends.py exports; any other export (an end-to-end head, another task, a static
input size) goes through ultralytics.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

# What ultralytics' predictor uses: grey padding, at most 300 detections and 30,000 boxes into
# NMS per frame, and a per-class box offset larger than any frame so classes never suppress each other.
PAD_VALUE = 114
MAX_DETECTIONS = 300
MAX_NMS_BOXES = 30_000
CLASS_OFFSET = 7680.0

Boxes = npt.NDArray[np.float32]
Image = npt.NDArray[np.uint8]
Detections = tuple[list[list[float]], list[int], list[float]]


def plain_head(task: object, end2end: object, names: object, args: object) -> bool:
    """Whether an export's metadata describes the head read here: detection, not end-to-end, dynamic
    input sizes (a static export takes only imgsz x imgsz, which the rectangular letterbox does not make)."""
    plain = task == "detect" and end2end in (False, "False", None) and isinstance(names, dict)
    return plain and isinstance(args, dict) and args.get("dynamic") is True


class ExportedModel:
    """A detection export on some runtime; subclasses run a letterboxed float batch through it."""

    def __init__(self, names: dict[int, str], stride: int, imgsz: int) -> None:
        self.names = names
        self._stride = stride
        self._imgsz = imgsz

    def _run(self, blob: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """The raw head for a batch `(n, 3, h, w)` of RGB in [0, 1]: `(n, 4 + classes, anchors)`."""
        raise NotImplementedError

    def predict(self, image: Image, conf: float, iou: float) -> Detections:
        """Boxes (x1, y1, x2, y2 in the frame's pixels), class ids and confidences, best first."""
        return self.predict_batch([image], conf, iou)[0]

    def predict_batch(self, images: Sequence[Image], conf: float, iou: float) -> list[Detections]:
        """`predict` for each image, frames of one letterboxed shape run through the runtime together."""
        padded = [letterbox(image, self._imgsz, self._stride) for image in images]
        answers: list[Detections | None] = [None] * len(images)
        for indices in by_shape(padded):
            outputs = self._run(to_blob([padded[i] for i in indices]))
            for index, output in zip(indices, outputs, strict=True):
                boxes, classes, scores = select(output, conf, iou)
                scale_to_frame(boxes, padded[index].shape[:2], images[index].shape[:2])
                answers[index] = (boxes.tolist(), classes.tolist(), scores.tolist())
        return [answer for answer in answers if answer is not None]


def grouped(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices grouped by equal keys, in first-seen order."""
    groups: dict[Hashable, list[int]] = {}
    for index, key in enumerate(keys):
        groups.setdefault(key, []).append(index)
    return list(groups.values())


def by_shape(images: Sequence[Image]) -> list[list[int]]:
    """Indices of the images grouped by shape, in first-seen order."""
    return grouped([image.shape for image in images])


def to_blob(padded: Sequence[Image]) -> npt.NDArray[np.float32]:
    """What the model is fed for letterboxed frames of one shape: RGB in [0, 1], NCHW."""
    blob = np.stack([image[..., ::-1].transpose(2, 0, 1) for image in padded]).astype(np.float32)
    blob /= 255
    return blob


def letterbox(image: Image, size: int, stride: int) -> Image:
    """Fit the longer side to `size`, then pad each side to a multiple of `stride` (a 16:9 frame stays wide)."""
    height, width = image.shape[:2]
    ratio = min(size / height, size / width)
    new_width, new_height = max(round(width * ratio), 1), max(round(height * ratio), 1)
    pad_x, pad_y = (size - new_width) % stride / 2, (size - new_height) % stride / 2
    resized: npt.NDArray[Any] = image
    if (width, height) != (new_width, new_height):
        resized = cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(pad_y - 0.1), round(pad_y + 0.1)
    left, right = round(pad_x - 0.1), round(pad_x + 0.1)
    padded = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.asarray(padded, dtype=np.uint8)


def select(
    output: npt.NDArray[np.float32], conf: float, iou: float
) -> tuple[Boxes, npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """From the raw head `(4 + classes, anchors)`: each anchor's best class over `conf`, then class-aware NMS."""
    class_scores = output[4:]
    classes = class_scores.argmax(0)
    scores = class_scores[classes, np.arange(output.shape[1])]
    keep = scores > conf
    centre, size = output[:2, keep].T, output[2:4, keep].T
    boxes = np.concatenate((centre - size / 2, centre + size / 2), axis=1).astype(np.float32, copy=False)
    classes, scores = classes[keep], scores[keep]
    if len(scores) > MAX_NMS_BOXES:
        top = np.argsort(-scores, kind="stable")[:MAX_NMS_BOXES]
        boxes, classes, scores = boxes[top], classes[top], scores[top]
    offsets = (classes[:, None] * CLASS_OFFSET).astype(np.float32)
    kept = nms(boxes + offsets, scores, iou)[:MAX_DETECTIONS]
    return boxes[kept], classes[kept], scores[kept]


def nms(boxes: Boxes, scores: npt.NDArray[np.float32], iou: float) -> npt.NDArray[np.int64]:
    """Greedy NMS: the indices kept, best first; a box goes when its IoU with a kept one is over `iou`."""
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        width = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        height = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = width * height
        order = rest[inter / (areas[best] + areas[rest] - inter) <= iou]
    return np.array(kept, dtype=np.int64)


def scale_to_frame(boxes: Boxes, padded: tuple[int, ...], frame: tuple[int, ...]) -> None:
    """Letterboxed pixels to the frame's, clipped to it (in place); shapes are (height, width)."""
    gain = min(padded[0] / frame[0], padded[1] / frame[1])
    new_height, new_width = max(round(frame[0] * gain), 1), max(round(frame[1] * gain), 1)
    pad_x, pad_y = round((padded[1] - new_width) / 2 - 0.1), round((padded[0] - new_height) / 2 - 0.1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / (new_width / frame[1])).clip(0, frame[1])
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / (new_height / frame[0])).clip(0, frame[0])
