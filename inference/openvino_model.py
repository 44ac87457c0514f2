"""YOLO detection on OpenVINO, without ultralytics or torch in the pool process (head.py).

ultralytics' predictor around an OpenVINO model spends more per frame on its own pre- and
post-processing than an INT8 model spends computing; here the project's letterbox and NMS run
around a compiled model instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import yaml

from inference.config import Precision
from inference.head import ExportedModel, plain_head


def metadata(directory: Path) -> dict[str, Any]:
    """What ultralytics wrote beside the IR (metadata.yaml); empty when there is none."""
    path = directory / "metadata.yaml"
    if not path.is_file():
        return {}
    loaded = yaml.safe_load(path.read_text())
    return loaded if isinstance(loaded, dict) else {}


def model_xml(directory: Path) -> Path:
    xml = sorted(directory.glob("*.xml"))
    if not xml:
        raise FileNotFoundError(f"no OpenVINO model (.xml) in {directory}")
    return xml[0]


def export_imgsz(directory: Path) -> int | None:
    imgsz = metadata(directory).get("imgsz")
    return max(int(v) for v in imgsz) if isinstance(imgsz, list) and imgsz else None


def has_bf16() -> bool:
    """Whether this CPU computes in bf16 (AVX512-BF16 or AMX), as OpenVINO sees it."""
    import openvino

    return "BF16" in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def properties(threads: int, precision: Precision) -> dict[str, object]:
    """One request at a time on `threads` threads, the pool's budget for this process, on any core.

    OpenVINO pins its threads to cores by default, each process on its own counting from the
    first core: the pool's processes would all share the same cores and leave the others idle.
    """
    return {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
            "ENABLE_CPU_PINNING": False}  # fmt: skip


def load(path: str, imgsz: int, threads: int, precision: Precision = "f32") -> OpenVinoModel | None:
    """The compiled model, or None for an export head.py does not read."""
    import openvino

    directory = Path(path)
    meta = metadata(directory)
    if not plain_head(meta.get("task"), meta.get("end2end"), meta.get("names"), meta.get("args")):
        return None
    core = openvino.Core()
    compiled = core.compile_model(core.read_model(model_xml(directory)), "CPU", properties(threads, precision))
    return OpenVinoModel(compiled, meta, imgsz)


class OpenVinoModel(ExportedModel):
    """One compiled OpenVINO model of an ultralytics detection export."""

    def __init__(self, compiled: Any, meta: dict[str, Any], imgsz: int) -> None:
        super().__init__({int(k): str(v) for k, v in meta["names"].items()}, int(meta.get("stride", 32)), imgsz)
        self.compiled = compiled
        self._request = compiled.create_infer_request()

    def _run(self, blob: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        output: npt.NDArray[np.float32] = self._request.infer({0: blob})[0]
        return np.asarray(output)
