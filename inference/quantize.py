"""`python -m inference quantize`: an INT8 model calibrated on the user's own frames, and its report.

    python -m inference quantize WEIGHTS --frames DIR|s3://BUCKET/PREFIX --out PATH
        [--backend onnx|openvino] [--imgsz N] [--min-agreement 0.99]

1. The frames (JPEG, PNG), in name order, are split: every fifth is held out for the report, the
   rest calibrate; at most 200 and 300 of them, evenly spread, so that a long video is sampled whole.
2. The FP32 reference is the export of WEIGHTS the worker would serve (inference/backends.py), or
   WEIGHTS itself when it is an FP32 export already.
3. OpenVINO: NNCF post-training quantization, performance preset (symmetric weights and
   activations: the fastest kernels), then, if that falls below --min-agreement, the mixed preset
   (asymmetric activations); the head's decode (DFL, sigmoid, box arithmetic) and the
   convolutions that feed it kept in floating point; ultralytics' own INT8 export keeps the decode
   too. ONNX: ONNX Runtime's static QDQ quantization, per-channel weights, min-max ranges, the
   same head operations kept in floating point.
4. The report: agreement = mAP50 (inference/agreement.py) of the INT8 model's detections scored
   against the FP32 model's on the held-out frames, no labels needed. The FP32 detections at the
   serving confidence (MODEL_CONF) are the references; the INT8 detections are taken down to
   confidence 0.001 with their scores, which is how mAP ranks them. F1 at the serving confidence
   is reported beside it. Frames per second of both models: project letterbox, model and NMS on
   one thread, the two models taking turns frame by frame so both see the same load.

Exit codes: 0 agreement at or over --min-agreement, 4 under it (the model is still written, named
`*-failed*`), 2 a usage or input error (the line names it), 1 anything else failed (S3, the runtime).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from inference.agreement import Detection, f1, from_found, map50
from inference.backends import SUFFIX, checkpoint_imgsz, export_imgsz, exported_backend, load_exported, model_file
from inference.cli import EXIT_USAGE, OneLineParser
from inference.config import ConfigError, LogSettings, ModelSettings, S3Settings, build
from inference.errors import InvalidImage
from inference.head import ExportedModel, Image, letterbox, to_blob
from inference.image import decode
from inference.logs import configure_logging, log_event

logger = logging.getLogger("inference.quantize")

Backend = Literal["onnx", "openvino"]
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BELOW_MINIMUM = 4

# What the worker itself decodes (inference/image.py): frames in any other format are not served.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})
# A calibration frame is decoded whole: a bound on what one image may take.
MAX_FRAME_PIXELS = 8192 * 8192
HOLD_OUT_EVERY = 5
# NNCF's own default subset; more frames move its ranges little and cost minutes.
MAX_CALIBRATION_FRAMES = 300
MAX_HELD_OUT_FRAMES = 200
SCORING_CONF = 0.001
# What the letterbox pads to for ultralytics' P5 detection models; another stride only moves the padding.
STRIDE = 32
# Tried in turn until one agrees well enough. NNCF's performance preset (symmetric activations) runs
# fastest; the mixed one (asymmetric activations) keeps more of the FP32 model's confidences.
PRESETS: dict[Backend, tuple[str, ...]] = {"openvino": ("performance", "mixed"), "onnx": ("minmax",)}


class QuantizeError(Exception):
    """What stops the command, in one line; `exit_code` says whose fault it is."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Plan:
    """What one run does, resolved from the arguments and settings before any work starts."""

    weights: Path
    frames: str
    out: Path
    backend: Backend
    imgsz: int | None  # None: the checkpoint's, read when the reference is exported
    min_agreement: float
    conf: float
    iou: float


@dataclass(frozen=True)
class Timing:
    ms_per_frame: float  # the median frame's
    frames_per_s: float  # the held-out frames over their total time


def default_backend() -> Backend:
    """OpenVINO when NNCF and OpenVINO are installed (the `openvino` extra): INT8 runs fastest there."""
    installed = all(importlib.util.find_spec(name) is not None for name in ("nncf", "openvino"))
    return "openvino" if installed else "onnx"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m inference quantize",
        description="Write an INT8 model calibrated on your own frames, and a report (PATH.json) scoring "
        "its detections against the FP32 model's on held-out frames (mAP50 agreement) and timing both.",
        epilog="exit codes: 0 agreement >= minimum, 4 below it (model written as *-failed*), 2 bad argument "
        "or input, 1 failed",
    )
    parser.add_argument("weights", type=Path, metavar="WEIGHTS", help=".pt weights, or their FP32 export")
    parser.add_argument("--frames", required=True, metavar="SOURCE", help="a folder of frames or s3://BUCKET/PREFIX")
    parser.add_argument("--out", required=True, type=Path, metavar="PATH", help="NAME_openvino_model or NAME.onnx")
    parser.add_argument(
        "--backend", choices=("onnx", "openvino"), metavar="BACKEND", help="openvino (the default with NNCF) or onnx"
    )
    parser.add_argument("--imgsz", type=int, metavar="N", help="default: MODEL_IMGSZ, else the checkpoint's")
    parser.add_argument("--min-agreement", type=_share, default=0.99, metavar="SHARE", help="0 to 1 (default 0.99)")
    return parser


def _share(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        log = build(LogSettings)
        configure_logging(log.format, log.level)
        plan = make_plan(args)
        # ultralytics and NNCF print progress on stdout, which holds the summary alone.
        with contextlib.redirect_stdout(sys.stderr):
            report = run(plan)
    except (QuantizeError, ConfigError) as exc:
        _say(str(exc))
        return exc.exit_code if isinstance(exc, QuantizeError) else EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - a runtime's failure, said in one line like every other
        log_event(logger, logging.ERROR, "quantize_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        _say(f"failed: {type(exc).__name__}: {exc}")
        return EXIT_FAILED
    sys.stdout.write(summary(report))
    return EXIT_OK if report["passed"] else EXIT_BELOW_MINIMUM


def _say(line: str) -> None:
    sys.stderr.write(f"python -m inference quantize: {line}\n")


def make_plan(args: argparse.Namespace) -> Plan:
    weights: Path = args.weights
    if not weights.exists():
        raise QuantizeError(f"no weights at {weights}")
    backend: Backend = args.backend or default_backend()
    exported = exported_backend(weights)
    if exported not in (None, backend):
        raise QuantizeError(f"{weights} is a {exported} model; --backend {backend} cannot quantize it")
    if not args.out.name.endswith(SUFFIX[backend]) or args.out.name == SUFFIX[backend]:
        raise QuantizeError(f"--out {args.out}: a {backend} model is named NAME{SUFFIX[backend]}")
    model = build(ModelSettings, path=weights)
    imgsz = args.imgsz or model.imgsz or (export_imgsz(weights, exported) if exported else None)
    return Plan(weights, args.frames, args.out, backend, imgsz, args.min_agreement, model.conf, model.iou)


def run(plan: Plan) -> dict[str, Any]:
    """Quantize, score and time; the model and the report are written, named as failed below the minimum."""
    calibration, held_out = load_frames(plan.frames)
    imgsz = plan.imgsz or checkpoint_imgsz(plan.weights)
    reference = reference_model(plan.weights, plan.backend, imgsz)
    log_event(logger, logging.INFO, "quantize_started", reference=str(reference), calibration=len(calibration))
    with _scratch(plan.out) as scratch:
        report = _first_passing(plan, reference, calibration, held_out, imgsz, scratch)
        report.update(calibration_frames=len(calibration), weights=str(plan.weights), frames=plan.frames)
        target = plan.out if report["passed"] else failed_name(plan.out)
        _replace(scratch / plan.out.name, target)
    report["model"] = str(target)
    report_path = target.with_name(f"{target.name}.json")
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    report["report"] = str(report_path)
    return report


def _first_passing(
    plan: Plan, reference: Path, calibration: list[Frame], held_out: list[Frame], imgsz: int, scratch: Path
) -> dict[str, Any]:
    """Each of the backend's presets in turn, fastest first, until one agrees well enough; the last one
    otherwise. The report lists every attempt."""
    attempts: list[dict[str, Any]] = []
    model = scratch / plan.out.name
    for preset in PRESETS[plan.backend]:
        if model.exists():
            _remove(model)
        method = QUANTIZERS[plan.backend](reference, calibration, imgsz, model, preset)
        report = evaluate(plan, reference, model, held_out, imgsz)
        attempts.append(
            {**method, "agreement": report["agreement"], "int8_ms_per_frame": report["int8"]["ms_per_frame"]}
        )
        log_event(logger, logging.INFO, "quantize_attempt", **attempts[-1])
        if report["passed"]:
            break
    return {**report, "method": method, "attempts": attempts}


def reference_model(weights: Path, backend: Backend, imgsz: int) -> Path:
    """The FP32 model the INT8 one is scored against: the export the worker would serve for the weights."""
    return weights if exported_backend(weights) else model_file(weights, backend, imgsz)


def failed_name(out: Path) -> Path:
    """`best_int8_openvino_model` -> `best_int8-failed_openvino_model`, `best_int8.onnx` -> `best_int8-failed.onnx`."""
    for suffix in SUFFIX.values():
        if out.name.endswith(suffix):
            return out.with_name(f"{out.name.removesuffix(suffix)}-failed{suffix}")
    return out.with_name(f"{out.name}-failed")


# --- the frames ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """One frame as stored: decoded only when used, so 300 full-HD frames take megabytes, not gigabytes."""

    name: str
    data: bytes

    def image(self) -> Image:
        try:
            return decode(self.data, MAX_FRAME_PIXELS)
        except InvalidImage as exc:
            raise QuantizeError(f"--frames: {self.name}: {exc}") from None


def load_frames(source: str) -> tuple[list[Frame], list[Frame]]:
    """The calibration frames and the held-out ones, read from a folder or an S3 prefix."""
    names, read = _s3_frames(source) if source.startswith("s3://") else _folder_frames(source)
    if len(names) < 2:
        raise QuantizeError(f"--frames {source}: {len(names)} image(s) (.jpg, .png); at least 2 are needed")
    held = [n for i, n in enumerate(names) if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1] or names[-1:]
    held_set = set(held)
    rest = [n for n in names if n not in held_set]
    chosen_held, chosen_rest = _spread(held, MAX_HELD_OUT_FRAMES), _spread(rest, MAX_CALIBRATION_FRAMES)
    frames = read([*chosen_rest, *chosen_held])
    return frames[: len(chosen_rest)], frames[len(chosen_rest) :]


def _spread(names: list[str], most: int) -> list[str]:
    """At most `most` names, evenly spaced: frames from the whole of a video, not its first minute."""
    if len(names) <= most:
        return names
    return [names[int(i)] for i in np.linspace(0, len(names) - 1, most)]


def _folder_frames(source: str) -> tuple[list[str], Callable[[list[str]], list[Frame]]]:
    folder = Path(source)
    if not folder.is_dir():
        raise QuantizeError(f"--frames {source}: no such folder")
    names = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return names, lambda chosen: [Frame(name, Path(name).read_bytes()) for name in chosen]


def _s3_frames(source: str) -> tuple[list[str], Callable[[list[str]], list[Frame]]]:
    bucket, _, prefix = source.removeprefix("s3://").partition("/")
    if not bucket:
        raise QuantizeError(f"--frames {source}: no bucket in the URL")
    settings = build(S3Settings)
    keys = asyncio.run(_s3_call(settings, source, _list_keys, bucket, prefix))
    names = sorted(k for k in keys if Path(k).suffix.lower() in IMAGE_SUFFIXES)

    def read(chosen: list[str]) -> list[Frame]:
        bodies = asyncio.run(_s3_call(settings, source, _get_objects, bucket, chosen, settings.max_connections))
        return [Frame(f"s3://{bucket}/{key}", body) for key, body in zip(chosen, bodies, strict=True)]

    return names, read


async def _s3_call(settings: S3Settings, source: str, call: Callable[..., Any], *args: Any) -> Any:
    import aioboto3
    from aiobotocore.config import AioConfig
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        config = AioConfig(max_pool_connections=settings.max_connections)
        async with aioboto3.Session().client("s3", config=config, **settings.client_options()) as client:
            return await call(client, *args)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        usage = code in ("NoSuchBucket", "NoSuchKey", "AccessDenied")
        raise QuantizeError(f"--frames {source}: S3 answered {code}", EXIT_USAGE if usage else EXIT_FAILED) from None
    except BotoCoreError as exc:
        raise QuantizeError(f"--frames {source}: S3 failed: {exc}", EXIT_FAILED) from None


async def _list_keys(client: Any, bucket: str, prefix: str) -> list[str]:
    keys: list[str] = []
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


async def _get_objects(client: Any, bucket: str, keys: list[str], connections: int) -> list[bytes]:
    limit = asyncio.Semaphore(connections)

    async def get(key: str) -> bytes:
        async with limit:
            answer = await client.get_object(Bucket=bucket, Key=key)
            async with answer["Body"] as body:
                data: bytes = await body.read()
                return data

    return list(await asyncio.gather(*(get(key) for key in keys)))


def _blob(frame: Frame, imgsz: int) -> npt.NDArray[np.float32]:
    """What the project's head feeds the model for this frame (inference/head.py): RGB in [0, 1], NCHW."""
    return to_blob([letterbox(frame.image(), imgsz, STRIDE)])


# --- quantization --------------------------------------------------------------------------------


def quantize_openvino(reference: Path, frames: list[Frame], imgsz: int, target: Path, preset: str) -> dict[str, Any]:
    """NNCF post-training quantization of the FP32 IR into the `target` directory (metadata.yaml copied)."""
    import nncf
    import openvino

    from inference.openvino_model import model_xml

    nncf_log = logging.getLogger("nncf")  # its own handler writes to stdout, which holds the summary
    nncf_log.handlers.clear()
    nncf_log.propagate = True
    nncf_log.setLevel(logging.WARNING)  # it lists every operation it leaves out at INFO
    core = openvino.Core()
    xml = model_xml(reference)
    model = core.read_model(xml)
    ignored = float_head_openvino(model)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(frames, lambda frame: _blob(frame, imgsz)),
        preset=nncf.QuantizationPreset(preset),
        subset_size=len(frames),
        ignored_scope=nncf.IgnoredScope(names=ignored),
    )
    target.mkdir()
    # Named after its directory, as ultralytics names its exports.
    name = target.name.removesuffix(SUFFIX["openvino"])
    openvino.save_model(quantized, target / f"{name}.xml", compress_to_fp16=False)
    shutil.copyfile(reference / "metadata.yaml", target / "metadata.yaml")
    return {"tool": f"nncf {nncf.__version__}", "preset": preset, "ignored_operations": len(ignored)}


def float_head_openvino(model: Any) -> list[str]:
    """The head's last operations, kept in floating point: its decode (DFL, sigmoid, box arithmetic: what
    follows the head's convolutions, named by its module, `__module.model.22/...`) and the plain
    convolutions that feed it (`model.22.cv2.N.2`, `model.22.cv3.N.2`: box and class outputs)."""
    operations = model.get_ordered_ops()
    sigmoids = [op.get_friendly_name() for op in operations if op.get_type_name() == "Sigmoid"]
    if not sigmoids:
        return []
    head = sigmoids[-1].split("/", 1)[0]  # SiLU is one Swish operation in the IR: the last Sigmoid is the head's
    last_conv = re.compile(rf"^{re.escape(head)}\.cv[23]\.\d+\.2/")
    names = [op.get_friendly_name() for op in operations]
    return [name for name in names if name.startswith((f"{head}/", f"{head}.dfl")) or last_conv.match(name)]


def quantize_onnx(reference: Path, frames: list[Frame], imgsz: int, target: Path, preset: str) -> dict[str, Any]:
    """ONNX Runtime static QDQ quantization into `target`, the export's metadata copied over."""
    import onnx
    import onnxruntime
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    source = onnx.load(str(reference))
    input_name = source.graph.input[0].name
    excluded = float_head_onnx([(node.name, node.op_type) for node in source.graph.node])

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._frames = iter(frames)

        def get_next(self) -> dict[str, npt.NDArray[np.float32]] | None:
            frame = next(self._frames, None)
            return None if frame is None else {input_name: _blob(frame, imgsz)}

    quantize_static(
        str(reference),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        calibrate_method=CalibrationMethod.MinMax,
        # The calibrator keeps every activation of every frame until it reduces them; percentile and
        # entropy calibration cannot reduce as they go and took gigabytes for a few hundred frames.
        extra_options={"CalibMaxIntermediateOutputs": 16},
        # Unsigned activations, signed weights: what x86 INT8 kernels take; signed activations ran slower than FP32.
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded,
    )
    quantized = onnx.load(str(target))
    del quantized.metadata_props[:]
    quantized.metadata_props.extend(source.metadata_props)
    onnx.save(quantized, str(target))
    method = {"tool": f"onnxruntime {onnxruntime.__version__}", "preset": preset, "format": "QDQ U8S8"}
    return {**method, "per_channel": True, "excluded_nodes": len(excluded)}


def float_head_onnx(nodes: list[tuple[str, str]]) -> list[str]:
    """The head's decode and the plain convolutions that feed it, by node name and type, as for OpenVINO:
    under the module of the last Sigmoid (`/model.22/`), all but its branches, and each branch's last Conv."""
    sigmoids = [name for name, op_type in nodes if op_type == "Sigmoid"]
    if not sigmoids:
        return []
    head = sigmoids[-1].rsplit("/", 1)[0] + "/"
    last_conv = re.compile(rf"^{re.escape(head)}(cv[23]\.\d+)/\1\.2/")
    return [
        name
        for name, _ in nodes
        if (name.startswith(head) and not name.startswith(f"{head}cv")) or last_conv.match(name)
    ]


QUANTIZERS: dict[Backend, Callable[[Path, list[Frame], int, Path, str], dict[str, Any]]] = {
    "openvino": quantize_openvino,
    "onnx": quantize_onnx,
}


# --- the report ----------------------------------------------------------------------------------


def evaluate(plan: Plan, reference: Path, quantized: Path, held_out: list[Frame], imgsz: int) -> dict[str, Any]:
    """Agreement of the INT8 model with the FP32 one on the held-out frames, and the speed of both."""
    fp32, int8 = load_model(plan.backend, reference, imgsz), load_model(plan.backend, quantized, imgsz)
    compared = _compare(fp32, int8, held_out, plan.conf, plan.iou)
    agreement = map50(compared.scored, compared.references)
    fp32_time, int8_time = _timing(compared.fp32_s), _timing(compared.int8_s)
    return {
        "backend": plan.backend,
        "imgsz": imgsz,
        "held_out_frames": len(held_out),
        "agreement": agreement.map50,
        "agreement_per_class": {int8.names.get(c, str(c)): ap for c, ap in agreement.per_class.items()},
        "f1_at_conf": f1(compared.scored, compared.references, plan.conf),
        "conf": plan.conf,
        "iou": plan.iou,
        "min_agreement": plan.min_agreement,
        "passed": agreement.map50 >= plan.min_agreement,
        "fp32": dataclasses.asdict(fp32_time),
        "int8": dataclasses.asdict(int8_time),
        # From the medians: a frame that another process delayed does not move it.
        "speedup": fp32_time.ms_per_frame / int8_time.ms_per_frame,
        "threads": 1,
    }


def load_model(backend: Backend, path: Path, imgsz: int) -> ExportedModel:
    """The model as the worker runs it (the project's letterbox and NMS), on one thread."""
    model = load_exported(backend, path, imgsz, threads=1)
    if model is None:
        raise QuantizeError(f"{path} is not a plain YOLO detection export with dynamic input sizes")
    return model


@dataclass
class Comparison:
    """Per held-out frame: the FP32 detections (the references), the INT8 ones down to SCORING_CONF,
    and each model's seconds at the serving confidence."""

    references: list[list[Detection]] = dataclasses.field(default_factory=list)
    scored: list[list[Detection]] = dataclasses.field(default_factory=list)
    fp32_s: list[float] = dataclasses.field(default_factory=list)
    int8_s: list[float] = dataclasses.field(default_factory=list)


def _compare(fp32: Any, int8: Any, frames: list[Frame], conf: float, iou: float) -> Comparison:
    """Both models on each frame in turn, so that both are timed under the same load."""
    first = frames[0].image()
    for model in (fp32, int8):
        model.predict(first, conf, iou)  # the first call allocates: not a frame's cost
    compared = Comparison()
    for frame in frames:
        image = frame.image()
        found, seconds = _timed_predict(fp32, image, conf, iou)
        compared.references.append(found)
        compared.fp32_s.append(seconds)
        compared.int8_s.append(_timed_predict(int8, image, conf, iou)[1])
        compared.scored.append(from_found(int8.predict(image, SCORING_CONF, iou)))
    return compared


def _timed_predict(model: Any, image: Image, conf: float, iou: float) -> tuple[list[Detection], float]:
    start = time.perf_counter()
    found = model.predict(image, conf, iou)
    seconds = time.perf_counter() - start
    return from_found(found), seconds


def _timing(seconds: list[float]) -> Timing:
    return Timing(ms_per_frame=1000 * float(np.median(seconds)), frames_per_s=len(seconds) / sum(seconds))


def summary(report: dict[str, Any]) -> str:
    verdict = "passed" if report["passed"] else "FAILED"
    fp32, int8 = report["fp32"], report["int8"]
    return (
        f"INT8 model: {report['model']} ({report['backend']}, imgsz {report['imgsz']}, "
        f"{report['calibration_frames']} calibration frames)\n"
        f"agreement with FP32: mAP50 {report['agreement']:.4f} on {report['held_out_frames']} held-out frames "
        f"(minimum {report['min_agreement']}): {verdict}; F1 at conf {report['conf']}: {report['f1_at_conf']:.4f}\n"
        f"one thread: FP32 {fp32['frames_per_s']:.1f} frames/s ({fp32['ms_per_frame']:.1f} ms), "
        f"INT8 {int8['frames_per_s']:.1f} frames/s ({int8['ms_per_frame']:.1f} ms), {report['speedup']:.2f}x\n"
        f"report: {report['report']}\n"
    )


# --- files ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scratch(out: Path) -> Iterator[Path]:
    """A scratch directory beside the output, so the finished model is renamed into place, never half written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".quantize-", dir=out.parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _replace(source: Path, target: Path) -> None:
    if target.exists():
        _remove(target)
    source.replace(target)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
