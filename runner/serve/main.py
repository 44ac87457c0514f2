"""`runner serve`: connect the service, then answer HTTP on API_HOST:API_PORT until SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

import uvicorn

from inference.config import KafkaSettings, S3Settings
from runner.serve.app import create_app, running_service
from runner.serve.settings import ApiSettings


class _Plain(logging.Filter):
    """uvicorn attaches an ANSI-coloured copy of its messages; a JSON log line has no use for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.__dict__.pop("color_message", None)
        return True


def serve(api: ApiSettings, kafka: KafkaSettings, s3: S3Settings) -> None:
    """Returns after a clean shutdown: requests finished, background work stopped, offsets committed."""
    logging.getLogger("uvicorn.error").addFilter(_Plain())
    asyncio.run(_serve(api, kafka, s3))


async def _serve(api: ApiSettings, kafka: KafkaSettings, s3: S3Settings) -> None:
    async with running_service(api, kafka, s3) as service:
        config = uvicorn.Config(
            create_app(service),
            host=api.host,
            port=api.port,
            # Our JSON logging; no access log (ours goes by route template, without query strings).
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        # uvicorn re-raises the signal that stopped it once it is done; handlers of our own make that a no-op
        # instead of a KeyboardInterrupt (or SIGTERM's default: death) in the middle of our cleanup.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: None)
        await uvicorn.Server(config).serve()
