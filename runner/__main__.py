"""`python -m runner split | collect | run | render | models | serve` (`runner`).

Exit codes: 0 done; 1 Kafka or S3 failed; 2 usage, input or setting error; 3 a video was not
complete in time; 130 interrupted (Ctrl-C). A failure is one line on stderr; progress goes to
stderr; summaries and the paths of written files go to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from inference.cli import OneLineParser, installed_version
from inference.config import ConfigError, KafkaSettings, LogSettings, S3Settings, build
from inference.logs import configure_logging
from inference.messages import MODEL_REF_PATTERN
from inference.priority import NAMES
from runner.assembler import Assembly
from runner.collector import Collector
from runner.errors import Incomplete, InputError, RunnerError
from runner.ids import require_video_id, video_id_for
from runner.models import listed, push
from runner.progress import on_stderr
from runner.render import render_video
from runner.run import TIMEOUT_BASE_S, TIMEOUT_PER_FRAME_S, RunOutcome, run_video
from runner.serve.main import serve
from runner.serve.settings import ApiSettings
from runner.splitter import SplitRequest, split_video
from runner.status_reporter import video_reporter

EXIT_OK = 0
EXIT_SETTING = 2
EXIT_INTERRUPTED = 130
DEFAULT_COLLECTOR_GROUP = "inference-collector"
LISTED_MISSING_IDS = 20
MODEL_REFERENCE = re.compile(MODEL_REF_PATTERN)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value:g}")
    return value


def _add_sampling(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--every", type=_positive_int, default=1, metavar="N", help="sample every Nth frame (default 1: all)"
    )
    parser.add_argument(
        "--max-frames", type=_positive_int, default=None, metavar="M", help="stop after M sampled frames"
    )


def _add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", metavar="NAME[@VERSION]", help="a registered model for every task (default: each worker's own)"
    )
    parser.add_argument(
        "--priority", choices=list(NAMES), default="normal", metavar="P",
        help="high, normal or low: the tasks topic of that level (default normal)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="runner",
        description="Split videos into detection tasks; assemble results.",
        epilog="exit codes: 0 done, 1 Kafka or S3 failed, 2 usage, input or setting error, "
        "3 a video was not complete in time, 130 interrupted",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    split = commands.add_parser(
        "split", help="upload a video's sampled frames to S3, then produce their tasks in one transaction (all or none)"
    )
    split.add_argument("video", type=Path, metavar="VIDEO")
    split.add_argument("--video-id", required=True, metavar="ID", help="names the frames' S3 prefix and the tasks")
    _add_sampling(split)
    _add_model(split)

    collect = commands.add_parser("collect", help="assemble results into DIR/<video_id>.json")
    collect.add_argument("--out", type=Path, required=True, metavar="DIR")
    collect.add_argument(
        "--video-id",
        metavar="ID",
        help="exit 0 once this video is written, 3 at the timeout (not for a video the group already collected)",
    )
    collect.add_argument("--timeout", type=_positive_float, metavar="S", help="stop after S seconds")
    collect.add_argument(
        "--group", default=DEFAULT_COLLECTOR_GROUP, metavar="G", help="consumer group (default %(default)s)"
    )

    run = commands.add_parser("run", help="split one video, wait for its results, write them to FILE")
    run.add_argument("video", type=Path, metavar="VIDEO")
    run.add_argument("--out", type=Path, required=True, metavar="FILE")
    run.add_argument("--video-id", metavar="ID", help="default: derived from the file name")
    run.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="seconds to wait for results once the tasks are produced, then exit 3 "
        f"(default: {TIMEOUT_BASE_S:g} + {TIMEOUT_PER_FRAME_S:g} per sampled frame)",
    )
    _add_sampling(run)
    _add_model(run)

    render = commands.add_parser("render", help="draw a result document's boxes onto its video")
    render.add_argument("video", type=Path, metavar="VIDEO")
    render.add_argument("result_json", type=Path, metavar="RESULT_JSON")
    render.add_argument("--out", type=Path, required=True, metavar="OUT.mp4")

    models = commands.add_parser("models", help="the model registry: push weights, list what is registered")
    model_commands = models.add_subparsers(dest="models_command", required=True)
    push = model_commands.add_parser(
        "push", help="upload weights to the models bucket and make them NAME's current version"
    )
    push.add_argument("weights", type=Path, metavar="WEIGHTS")
    push.add_argument("--name", required=True, metavar="NAME")
    push.add_argument("--version", dest="model_version", metavar="V", help="default: the next integer")
    push.add_argument("--imgsz", type=_positive_int, metavar="N", help="default: the checkpoint's training size")
    model_commands.add_parser("list", help="name, current version, short sha256, size and date of each model")

    commands.add_parser(
        "serve",
        help="the HTTP API and web console on API_HOST:API_PORT (default 127.0.0.1:8000) until stopped",
        epilog="settings: API_HOST, API_PORT, API_KEYS (required off loopback), API_MAX_UPLOAD_BYTES, "
        "API_RATE_LIMIT, API_COLLECTOR_GROUP, API_MAX_CONCURRENT_SPLITS, and the KAFKA_* and S3_* of every command",
    )
    return parser


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {path}: {exc.strerror}") from None


def _id_ranges(ids: list[int]) -> str:
    """'3-5, 9, 12-13', listing at most LISTED_MISSING_IDS ranges."""
    ranges: list[tuple[int, int]] = []
    for frame_id in ids:
        if ranges and ranges[-1][1] == frame_id - 1:
            ranges[-1] = (ranges[-1][0], frame_id)
        else:
            ranges.append((frame_id, frame_id))
    text = ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges[:LISTED_MISSING_IDS])
    return text + (", ..." if len(ranges) > LISTED_MISSING_IDS else "")


def _missing(why: str, video_id: str, assembly: Assembly | None) -> str:
    if assembly is None or assembly.received == 0:
        return f"{why}: no results of video {video_id} arrived"
    total = assembly.total_frames if assembly.total_frames is not None else "?"
    ids = assembly.missing_frame_ids
    return f"{why}: video {video_id} has {assembly.received}/{total} frames; missing frame ids {_id_ranges(ids)}"


def _split(args: argparse.Namespace) -> int:
    kafka, s3 = build(KafkaSettings), build(S3Settings)
    request = SplitRequest(args.video, args.video_id, args.every, args.max_frames, _model_reference(args.model),
                           NAMES[args.priority])  # fmt: skip
    summary = asyncio.run(split_video(request, kafka, s3, on_stderr))
    _say(f"{summary.video_id}: {summary.total_frames} frames uploaded to s3://{s3.frames_bucket}/{summary.video_id}/ "
         f"and announced on {request.topic(kafka)} in {summary.seconds:.1f} s")  # fmt: skip
    return EXIT_OK


def _collect(args: argparse.Namespace) -> int:
    kafka = build(KafkaSettings)
    if args.video_id is not None:
        require_video_id(args.video_id)
    _make_dir(args.out)
    return asyncio.run(_collect_until(kafka, args.out, args.group, args.video_id, args.timeout))


async def _collect_until(
    kafka: KafkaSettings, out: Path, group: str, video_id: str | None, timeout_s: float | None
) -> int:
    """Collect until a signal, the timeout, or (with `video_id`) that video's document is written."""
    written: set[str] = set()
    async with video_reporter(kafka, build(S3Settings), required=False) as reporter:

        async def on_written(path: Path, assembly: Assembly) -> None:
            await reporter.completed(assembly)
            _say(str(path))
            if assembly.video_id == video_id:
                written.add(video_id)
                collector.stop()

        collector = Collector(kafka, out, group, on_written, reporter.progressed)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, collector.stop)
        why = "stopped"
        try:
            async with asyncio.timeout(timeout_s):
                await collector.run()
        except TimeoutError:
            why = f"timed out after {timeout_s:g} s"
    if video_id is None or video_id in written:
        return EXIT_OK
    raise Incomplete(_missing(why, video_id, collector.assembly(video_id)))


def _run(args: argparse.Namespace) -> int:
    kafka, s3 = build(KafkaSettings), build(S3Settings)
    video_id = require_video_id(args.video_id) if args.video_id is not None else video_id_for(args.video)
    _make_dir(args.out.parent)
    request = SplitRequest(args.video, video_id, args.every, args.max_frames, _model_reference(args.model),
                           NAMES[args.priority])  # fmt: skip
    outcome = asyncio.run(_run_reported(request, args.out, kafka, s3, args.timeout))
    _say(outcome.summary())
    _say(f"wrote {args.out}")
    if not outcome.complete:
        raise Incomplete(_missing(f"timed out after {outcome.timeout_s:g} s", video_id, outcome.assembly))
    return EXIT_OK


async def _run_reported(
    request: SplitRequest, out: Path, kafka: KafkaSettings, s3: S3Settings, timeout_s: float | None
) -> RunOutcome:
    # A run starts its video's record over: the topic's earlier records are not needed.
    async with video_reporter(kafka, s3, required=False, history=False) as reporter:
        return await run_video(request, out, kafka, s3, timeout_s, on_stderr, reporter)


def _serve(args: argparse.Namespace) -> int:
    serve(build(ApiSettings), build(KafkaSettings), build(S3Settings))
    return EXIT_OK


def _render(args: argparse.Namespace) -> int:
    _make_dir(args.out.parent)
    summary = render_video(args.video, args.result_json, args.out)
    _say(f"wrote {args.out}: {summary.frames} frames, {summary.annotated} with results drawn")
    return EXIT_OK


def _model_reference(model: str | None) -> str | None:
    if model is not None and not MODEL_REFERENCE.match(model):
        raise InputError(f"--model {model!r}: NAME or NAME@VERSION, each 1-64 of letters, digits, '.', '_', '-'")
    return model


def _models(args: argparse.Namespace) -> int:
    kafka, s3 = build(KafkaSettings), build(S3Settings)
    if args.models_command == "push":
        record = asyncio.run(push(args.weights, args.name, args.model_version, args.imgsz, kafka, s3))
        _say(f"{record.ref}: sha256 {record.sha256[:12]} at {record.uri}, current on {kafka.models_topic}")
        return EXIT_OK
    rows = [("NAME", "VERSION", "SHA256", "SIZE", "CREATED")]
    for model in asyncio.run(listed(kafka, s3)):
        size = f"{model.size_bytes / 1e6:.1f} MB" if model.size_bytes is not None else "missing"
        record = model.record
        rows.append((record.name, record.version, record.sha256[:12], size, record.created_at or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        _say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "split": _split,
    "collect": _collect,
    "run": _run,
    "render": _render,
    "models": _models,
    "serve": _serve,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # FFmpeg prints its own complaints about a bad file; the runner's one error line says it.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    try:
        log = build(LogSettings)
        configure_logging(log.format, log.level)
        # aiokafka logs every failed connection; the runner reports Kafka failures itself, once.
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        sys.stderr.write(f"runner: {exc}\n")
        return EXIT_SETTING
    except RunnerError as exc:
        sys.stderr.write(f"runner: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
