"""`python -m inference`: one worker replica, until SIGTERM/SIGINT; exit 0 after a clean drain."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from inference.backends import detector_config
from inference.config import ConfigError, load_settings
from inference.kafka_errors import KafkaAccessDenied, KafkaUnreachable
from inference.logs import configure_logging, log_event
from inference.service import Worker

logger = logging.getLogger("inference")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
# KafkaAccessDenied.exit_code is 3: a missing ACL, which no restart fixes.


async def _serve(worker: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop)
    await worker.run()


def main() -> int:
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
    except (KafkaAccessDenied, KafkaUnreachable) as exc:
        # What the operator must fix, in one line: a traceback would only bury it.
        log_event(logger, logging.CRITICAL, "worker_failed", error=str(exc))
        return exc.exit_code
    except Exception:  # noqa: BLE001 - the last line of a dying service must say why
        log_event(logger, logging.CRITICAL, "worker_failed", exc_info=True)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
