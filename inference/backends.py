"""The model a pool process loads: its backend, device, imgsz, export file, resolved once at start-up.

The same YOLO weights run on torch, ONNX Runtime or OpenVINO. `detector_config` resolves, once
at start-up, the device, backend, imgsz and model file into a `DetectorConfig`. `model_file`
turns the .pt weights into what the chosen backend loads, exporting once into a cache next to
the weights; `configure_runtime` holds the runtime to the pool's thread budget.
ultralytics runs the weights (`YOLO(path, task="detect").predict`); the ONNX and OpenVINO exports
run on the project's own head (head.py), without torch in the pool process. A MODEL_PATH that is
already an export (an `.onnx` file, an OpenVINO `*_openvino_model` directory, e.g. the INT8 model
`python -m inference quantize` writes) is served as it is, on the backend that reads it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import hashlib
import importlib.util
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from inference.config import ConfigError, ModelSettings, Precision, Settings, WorkerSettings, available_cores

if TYPE_CHECKING:
    from inference.head import ExportedModel

Backend = Literal["torch", "onnx", "openvino"]
# WORKER_BATCH_SIZE on an accelerator when unset: enough frames to fill it, few enough to add little latency.
GPU_BATCH_SIZE = 8

# What ultralytics names each export; AutoBackend picks the runtime from the same suffix.
SUFFIX: dict[Backend, str] = {"onnx": ".onnx", "openvino": "_openvino_model"}
# Export and inference need these; were one missing, ultralytics would try to pip-install it.
_PACKAGES: dict[Backend, tuple[str, ...]] = {"onnx": ("onnx", "onnxruntime"), "openvino": ("openvino",)}


@dataclass(frozen=True)
class ModelTarget:
    """One model a pool process can run: the file its backend loads, at an imgsz; picklable."""

    path: str  # what the backend loads: the .pt itself or its export
    imgsz: int
    label: str  # name@version, for logs and metrics


@dataclass(frozen=True)
class DetectorConfig:
    """What a pool process needs to build its models; picklable for the spawn context."""

    model_path: str  # the replica's own model (MODEL_PATH), as `backend` loads it
    backend: Backend
    device: str
    imgsz: int
    conf: float
    iou: float
    threads: int
    max_pixels: int
    # The replica's pid, taken where the config is built: pool processes die with it.
    parent_pid: int = field(default_factory=os.getpid)
    # Models one pool process keeps loaded (WORKER_MAX_MODELS); the least recently used goes first.
    max_models: int = 4
    label: str = "local"
    precision: Precision = "f32"
    # Frames a pool process runs together (WORKER_BATCH_SIZE), waiting at most batch_wait_s for them.
    batch_size: int = 1
    batch_wait_s: float = 0.005

    @property
    def local(self) -> ModelTarget:
        """The replica's own model, which every pool process loads at start."""
        return ModelTarget(self.model_path, self.imgsz, self.label)


def detector_config(settings: Settings) -> DetectorConfig:
    """Resolve what the pool processes load, in a short-lived process of its own.

    Resolving needs torch and ultralytics (the device, the checkpoint's imgsz, the export on a
    first start). Imported in the replica's main process they would stay there for good, several
    times the memory that consuming, fetching and publishing need.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as helper:
        resolved = helper.submit(resolve_detector, settings.model, settings.worker).result()
    # The pool processes die with this process, not with the helper that built the config.
    return dataclasses.replace(resolved, parent_pid=os.getpid())


def resolve_detector(model: ModelSettings, worker: WorkerSettings) -> DetectorConfig:
    """The concrete device, backend, imgsz and model file; exports the weights, once, when the backend needs it."""
    device = resolve_device(model.device)
    exported = exported_backend(model.path)
    if exported is None:
        backend = resolve_backend(model.backend, device)
        imgsz = model.imgsz or checkpoint_imgsz(model.path)
        path = model_file(model.path, backend, imgsz)
    else:
        if model.backend not in ("auto", exported):
            raise ConfigError(f"MODEL_BACKEND={model.backend} cannot read MODEL_PATH={model.path}, a {exported} model")
        backend, path = exported, model.path
        imgsz = model.imgsz or export_imgsz(path, exported) or 640
    if model.precision == "bf16":
        require_bf16(backend)
    if model.precision == "fp16" and (backend != "torch" or not device.startswith("cuda")):
        raise ConfigError(f"MODEL_PRECISION=fp16 needs MODEL_BACKEND=torch on a CUDA device, not {backend} on {device}")
    return DetectorConfig(
        model_path=str(path),
        backend=backend,
        device=device,
        imgsz=imgsz,
        conf=model.conf,
        iou=model.iou,
        threads=max(1, available_cores() // worker.processes),
        max_pixels=worker.max_frame_pixels,
        max_models=worker.max_models,
        label=f"{model.path.name}@local",
        precision=model.precision,
        batch_size=worker.batch_size or (1 if device == "cpu" else GPU_BATCH_SIZE),
        batch_wait_s=worker.batch_wait_ms / 1000,
    )


def exported_backend(path: Path) -> Backend | None:
    """The backend an already exported model needs; None for weights (.pt), which any backend runs."""
    if path.is_dir():
        return "openvino"
    return "onnx" if path.suffix == ".onnx" else None


def model_digest(path: Path) -> str:
    """sha256 of a model file's bytes; of an OpenVINO directory, over its files' names and sha256s in name order."""
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """The sha256 of one file's bytes, hex."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def export_imgsz(path: Path, backend: Backend) -> int | None:
    from inference import onnx_model, openvino_model

    return onnx_model.export_imgsz(str(path)) if backend == "onnx" else openvino_model.export_imgsz(path)


def load_exported(
    backend: Backend, path: str | Path, imgsz: int, threads: int, device: str = "cpu", precision: Precision = "f32"
) -> ExportedModel | None:
    """An ONNX or OpenVINO export on the project's own head (head.py), or None when the head cannot read it
    (torch weights, OpenVINO on CUDA, an export of another shape): ultralytics runs those."""
    from inference import onnx_model, openvino_model

    if backend == "onnx":
        return onnx_model.load(str(path), imgsz, threads, device)
    if backend == "openvino" and not device.startswith("cuda"):
        return openvino_model.load(str(path), imgsz, threads, precision)
    return None


def require_bf16(backend: Backend) -> None:
    """bf16 is OpenVINO's, on a CPU with bf16 units; anywhere else it would silently compute in f32."""
    if backend != "openvino":
        raise ConfigError(f"MODEL_PRECISION=bf16 needs MODEL_BACKEND=openvino, not {backend}")
    _require(backend)
    from inference.openvino_model import has_bf16

    if not has_bf16():
        raise ConfigError("MODEL_PRECISION=bf16 needs a CPU with bf16 units (AVX512-BF16 or AMX); this one has none")


def prepare_target(weights: str, backend: Backend, imgsz: int | None, label: str) -> ModelTarget:
    """A registry model as the pool runs it: at its imgsz (the checkpoint's unless given), exported once."""
    size = imgsz or checkpoint_imgsz(weights)
    return ModelTarget(str(model_file(Path(weights), backend, size)), size, label)


def prepared_target(weights: Path, backend: Backend, imgsz: int | None, label: str) -> ModelTarget | None:
    """The same without torch, when nothing is left to do: the imgsz is known and the export exists."""
    if imgsz is None:
        return None
    if backend == "torch":
        return ModelTarget(str(weights), imgsz, label)
    target = cache_path(weights, backend, imgsz)
    return ModelTarget(str(target), imgsz, label) if target.exists() else None


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def resolve_backend(backend: str, device: str) -> Backend:
    """`auto` is ONNX Runtime on the CPU, where it beats torch, and torch on an accelerator."""
    if backend == "auto":
        return "onnx" if device == "cpu" else "torch"
    if backend in ("torch", "onnx", "openvino"):
        return backend  # type: ignore[return-value]
    raise ValueError(f"unknown model backend {backend!r}")


def checkpoint_imgsz(model_path: str | Path) -> int:
    """The imgsz the weights were trained at (ultralytics keeps it in train_args); 640 when unknown."""
    from ultralytics import YOLO

    args = getattr(YOLO(str(model_path)).model, "args", None) or {}
    imgsz = args.get("imgsz") if isinstance(args, dict) else None
    if isinstance(imgsz, int):
        return imgsz
    if isinstance(imgsz, (list, tuple)) and imgsz and isinstance(imgsz[0], int):
        return max(int(v) for v in imgsz)
    return 640


def model_file(weights: Path, backend: Backend, imgsz: int) -> Path:
    """The weights for `torch`; otherwise the export of them, made on the first call and cached."""
    if backend == "torch":
        return weights
    _require(backend)
    target = cache_path(weights, backend, imgsz)
    if target.exists():  # the common case writes nothing, so a read-only image with a baked cache works
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Pool processes start together; one exports while the others wait for its result.
    with _exclusive(target.parent / f"{target.name}.lock"):
        if not target.exists():
            _export(weights, backend, imgsz, target)
    return target


def cache_path(weights: Path, backend: Backend, imgsz: int) -> Path:
    """Where the export of these exact weight bytes at this imgsz lives.

    Beside the weights; in the temporary directory when the weights sit on a read-only volume
    (a Kubernetes mount, an image's non-root user) and no export was baked in beside them.
    """
    name = f"{weights.stem}-{file_sha256(weights)[:16]}-{imgsz}{SUFFIX[backend]}"
    beside = weights.parent / ".cache"
    if (beside / name).exists() or os.access(beside if beside.exists() else weights.parent, os.W_OK):
        return beside / name
    return Path(tempfile.gettempdir()) / "inference-model-cache" / name


def _require(backend: Backend) -> None:
    missing = [name for name in _PACKAGES[backend] if importlib.util.find_spec(name) is None]
    if missing:
        raise RuntimeError(f"MODEL_BACKEND={backend} needs the Python packages {', '.join(missing)}")


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    with lock_file.open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # released when the file is closed, also when the process dies
        yield


def _export(weights: Path, backend: Backend, imgsz: int, target: Path) -> None:
    from ultralytics import YOLO

    # ultralytics writes the export beside the .pt, named after it: export a copy named like the
    # target in a scratch directory, then rename, so a crashed export never leaves a partial model.
    scratch = Path(tempfile.mkdtemp(prefix=".export-", dir=target.parent))
    try:
        source = scratch / f"{target.name.removesuffix(SUFFIX[backend])}.pt"
        shutil.copyfile(weights, source)
        options: dict[str, Any] = {"dynamic": True}  # rectangular letterbox input: 320x192 for a 16:9 frame
        if backend == "onnx":
            options["simplify"] = False  # onnxslim is one more package for a graph that measured no faster
        exported = YOLO(str(source), task="detect").export(format=backend, imgsz=imgsz, device="cpu", **options)
        Path(exported).rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def configure_runtime(backend: Backend, threads: int, precision: Precision = "f32") -> None:
    """Hold torch and the backend's runtime to `threads` threads in this process; call before loading."""
    import torch
    import ultralytics.utils.torch_utils as torch_utils

    torch.set_num_threads(threads)
    # The first predict's select_device resets torch to min(8, cpu_count - 1) threads.
    torch_utils.NUM_THREADS = threads
    if backend == "onnx":
        _configure_onnxruntime(threads)
    elif backend == "openvino":
        _configure_openvino(threads, precision)


def _configure_onnxruntime(threads: int) -> None:
    """For exports that inference/onnx_model.py does not read, which ultralytics then runs."""
    from ultralytics.nn.autobackend import AutoBackend
    from ultralytics.nn.backends.onnx import ONNXBackend

    from inference.onnx_model import session_options

    # AutoBackend creates the session without options: no thread limit, threads that spin.
    AutoBackend._BACKEND_MAP["onnx"] = functools.partial(ONNXBackend, session_options=session_options(threads))


def _configure_openvino(threads: int, precision: Precision) -> None:
    """For exports that inference/openvino_model.py does not read, which ultralytics then runs."""
    import openvino

    from inference.openvino_model import properties

    # ultralytics compiles with a Core of its own and no thread setting, so every Core made in this
    # process gets the limit. f32 unless bf16 is asked for: on CPUs with bf16 units (AVX512-BF16,
    # AMX) OpenVINO otherwise computes in bf16, and its confidences would differ on those hosts alone.
    settings = properties(threads, precision)

    class Core(openvino.Core):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.set_property("CPU", settings)

    openvino.Core = Core
