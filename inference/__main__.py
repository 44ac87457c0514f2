"""`python -m inference` (`inference-worker`): one worker replica, until SIGTERM/SIGINT; exit 0 after a clean drain."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from inference.backends import detector_config
from inference.cli import OneLineParser, installed_version
from inference.config import ConfigError, load_settings
from inference.kafka_errors import KafkaAccessDenied, KafkaUnreachable
from inference.logs import configure_logging, log_event
from inference.service import Worker

logger = logging.getLogger("inference")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
# KafkaAccessDenied.exit_code is 3: a missing ACL, which no restart fixes.


def build_parser() -> argparse.ArgumentParser:
    prog = "inference-worker" if Path(sys.argv[0]).name == "inference-worker" else "python -m inference"
    parser = OneLineParser(
        prog=prog,
        description="Run one replica of the inference worker group until SIGTERM or SIGINT, then drain, "
        "publish and commit. Configured by environment variables (KAFKA_*, S3_*, MODEL_*, WORKER_*, LOG_*). "
        "`quantize WEIGHTS ...` writes an INT8 model instead (see `quantize --help`).",
        epilog="exit codes: 0 clean shutdown, 1 failed, 2 bad setting or argument, 3 a Kafka ACL is missing",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {installed_version()}")
    return parser


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["quantize"]:
        # Imported here: the worker never loads NNCF or the quantization runtimes.
        from inference.quantize import main as quantize

        return quantize(arguments[1:])
    build_parser().parse_args(arguments)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"inference: {exc}", file=sys.stderr)  # noqa: T201 - before logging is configured
        return EXIT_CONFIG
    configure_logging(settings.log.format, settings.log.level)
    try:
        worker = Worker(
            settings, detector_config(settings), on_ready=lambda: log_event(logger, logging.INFO, "worker_started")
        )
        asyncio.run(_serve(worker))
    except ConfigError as exc:  # a setting only the model can judge (MODEL_PRECISION, MODEL_BACKEND)
        log_event(logger, logging.CRITICAL, "worker_failed", error=str(exc))
        return EXIT_CONFIG
    except (KafkaAccessDenied, KafkaUnreachable) as exc:
        # What the operator must fix, in one line: a traceback would only bury it.
        log_event(logger, logging.CRITICAL, "worker_failed", error=str(exc))
        return exc.exit_code
    except OSError as exc:
        # The host refused something (a port in use, a read-only directory): the line says what.
        log_event(logger, logging.CRITICAL, "worker_failed", error=f"{type(exc).__name__}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # only before the signal handlers are in place; after, SIGINT drains
    except Exception as exc:  # noqa: BLE001 - the last line of a dying service must say why
        log_event(logger, logging.CRITICAL, "worker_failed", error=f"{type(exc).__name__}: {exc}", exc_info=True)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
