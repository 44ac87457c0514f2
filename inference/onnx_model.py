"""YOLO detection on ONNX Runtime without ultralytics or torch in the pool process.

The same numbers as ultralytics' predictor on its own ONNX export (letterbox to the stride,
class-aware NMS, boxes scaled back to the frame; the backend tests compare them with torch),
in less time and memory: importing ultralytics imports torch, and its predictor converts every
frame to a torch tensor and back.

Only the plain detection head with dynamic input sizes is read here (output `(1, 4 + classes,
anchors)`), which is what inference/backends.py exports; any other export (an end-to-end head,
another task) goes through ultralytics as the other backends do.
"""

from __future__ import annotations

import ast
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


def session_options(threads: int) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # Without these ONNX Runtime runs one thread per physical core of the machine, whatever
    # OMP_NUM_THREADS or the CPU affinity mask say.
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # Idle intra-op threads otherwise spin for work, taking the core from the replica's event
    # loop and the other pool processes.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def readable(meta: dict[str, str]) -> bool:
    """Whether this module reads the export: ultralytics' plain detection head, with dynamic input sizes
    (a static export takes only imgsz x imgsz, which the rectangular letterbox here does not make)."""
    try:
        args, names = ast.literal_eval(meta.get("args", "{}")), ast.literal_eval(meta.get("names", "None"))
    except (ValueError, SyntaxError):
        return False  # metadata this module cannot parse: the export is left to ultralytics
    plain = meta.get("task") == "detect" and meta.get("end2end", "False") == "False" and isinstance(names, dict)
    return plain and isinstance(args, dict) and args.get("dynamic") is True


def load(path: str, imgsz: int, threads: int, device: str) -> OnnxModel | None:
    """The model, or None for an export this module does not read (see the module's docstring)."""
    import onnxruntime

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
    session = onnxruntime.InferenceSession(path, session_options(threads), providers=providers)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return OnnxModel(session, meta, imgsz) if readable(meta) else None


class OnnxModel:
    """One ONNX Runtime session of an ultralytics detection export; `predict` takes BGR pixels."""

    def __init__(self, session: Any, meta: dict[str, str], imgsz: int) -> None:
        self.session = session
        self._input = session.get_inputs()[0].name
        self.names: dict[int, str] = ast.literal_eval(meta["names"])
        self._stride = int(meta.get("stride", 32))
        self._imgsz = imgsz

    def predict(
        self, image: npt.NDArray[np.uint8], conf: float, iou: float
    ) -> tuple[list[list[float]], list[int], list[float]]:
        """Boxes (x1, y1, x2, y2 in the frame's pixels), class ids and confidences, best first."""
        padded = letterbox(image, self._imgsz, self._stride)
        blob = np.ascontiguousarray(padded[..., ::-1].transpose(2, 0, 1))[None].astype(np.float32) / 255
        output = self.session.run(None, {self._input: blob})[0][0]
        boxes, classes, scores = select(output, conf, iou)
        scale_to_frame(boxes, (padded.shape[0], padded.shape[1]), (image.shape[0], image.shape[1]))
        return boxes.tolist(), classes.tolist(), scores.tolist()


def letterbox(image: npt.NDArray[np.uint8], size: int, stride: int) -> npt.NDArray[np.uint8]:
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


def scale_to_frame(boxes: Boxes, padded: tuple[int, int], frame: tuple[int, int]) -> None:
    """Letterboxed pixels to the frame's, clipped to it (in place); shapes are (height, width)."""
    gain = min(padded[0] / frame[0], padded[1] / frame[1])
    new_height, new_width = max(round(frame[0] * gain), 1), max(round(frame[1] * gain), 1)
    pad_x, pad_y = round((padded[1] - new_width) / 2 - 0.1), round((padded[0] - new_height) / 2 - 0.1)
    boxes[:, [0, 2]] = ((boxes[:, [0, 2]] - pad_x) / (new_width / frame[1])).clip(0, frame[1])
    boxes[:, [1, 3]] = ((boxes[:, [1, 3]] - pad_y) / (new_height / frame[0])).clip(0, frame[0])
