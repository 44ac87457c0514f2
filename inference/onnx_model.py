"""YOLO detection on ONNX Runtime, without ultralytics or torch in the pool process (head.py)."""

from __future__ import annotations

import ast
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.head import ExportedModel, plain_head


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
    """Whether head.py reads the export, from ONNX metadata (Python literals as strings)."""
    try:
        args, names = ast.literal_eval(meta.get("args", "{}")), ast.literal_eval(meta.get("names", "None"))
    except (ValueError, SyntaxError):
        return False  # metadata this module cannot parse: the export is left to ultralytics
    return plain_head(meta.get("task"), meta.get("end2end", "False"), names, args)


def load(path: str, imgsz: int, threads: int, device: str) -> OnnxModel | None:
    """The model, or None for an export head.py does not read."""
    import onnxruntime

    providers: list[Any] = ["CPUExecutionProvider"]
    if device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(device.partition(":")[2] or 0)}))
    session = onnxruntime.InferenceSession(path, session_options(threads), providers=providers)
    meta = dict(session.get_modelmeta().custom_metadata_map)
    return OnnxModel(session, meta, imgsz) if readable(meta) else None


def export_imgsz(path: str) -> int | None:
    """The imgsz an ultralytics ONNX export was made at, from its metadata."""
    import onnxruntime

    meta = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"]).get_modelmeta()
    try:
        imgsz = ast.literal_eval(meta.custom_metadata_map.get("imgsz", "None"))
    except (ValueError, SyntaxError):
        return None
    return max(imgsz) if isinstance(imgsz, list) and imgsz else None


class OnnxModel(ExportedModel):
    """One ONNX Runtime session of an ultralytics detection export."""

    def __init__(self, session: Any, meta: dict[str, str], imgsz: int) -> None:
        super().__init__(ast.literal_eval(meta["names"]), int(meta.get("stride", 32)), imgsz)
        self.session = session
        self._input = session.get_inputs()[0].name

    def _run(self, blob: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        output: npt.NDArray[np.float32] = self.session.run(None, {self._input: blob})[0]
        return output
