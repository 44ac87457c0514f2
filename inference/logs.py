"""Structured logs: one JSON object per line (or `LOG_FORMAT=console` for humans).

Every error line about a frame carries video_id, frame_id, partition and offset,
passed as fields of `log_event`.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

if TYPE_CHECKING:
    from aiokafka import TopicPartition

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_SECRET_WORDS = ("password", "secret", "token", "access_key")


def _masked(key: str, value: Any) -> Any:
    return "***" if any(word in key.lower() for word in _SECRET_WORDS) else value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                data[key] = _masked(key, value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


class ConsoleFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = " ".join(f"{k}={_masked(k, v)}" for k, v in record.__dict__.items() if k not in _STANDARD)
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:7} {record.getMessage()} {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(log_format: Literal["json", "console"] = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else ConsoleFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiokafka logs every reconnect attempt to a dead broker: keep one line per kind per interval.
    handler.addFilter(RateLimit(prefix="aiokafka", interval_s=30.0))


@dataclass
class Throttle:
    """Lets one event through per key and interval: an outage of minutes logs a few lines, not thousands."""

    interval_s: float = 30.0
    _last: dict[object, float] = field(default_factory=dict)

    def allow(self, key: object = None) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self.interval_s) < self.interval_s:
            return False
        self._last[key] = now
        return True


class RateLimit(logging.Filter):
    """Lets through one record per message template of loggers under `prefix` per interval."""

    def __init__(self, prefix: str, interval_s: float) -> None:
        super().__init__()
        self._prefix = prefix
        self._throttle = Throttle(interval_s)

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(self._prefix) or self._throttle.allow((record.name, record.msg))


def log_event(logger: logging.Logger, level: int, event: str, /, **fields: object) -> None:
    """Log one event with its fields; `exc_info=True` among them attaches the current exception."""
    exc_info = bool(fields.pop("exc_info", False))
    logger.log(level, event, extra=fields, exc_info=exc_info)


def partition_names(partitions: Iterable[TopicPartition]) -> list[str]:
    """`topic[partition]` of each, sorted: how log lines name a set of partitions."""
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)
