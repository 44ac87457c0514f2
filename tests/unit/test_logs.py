"""Structured log lines: JSON with the frame's ids, secrets masked, aiokafka's floods thinned."""

from __future__ import annotations

import logging

import orjson

from inference.logs import ConsoleFormatter, JsonFormatter, RateLimit


def record(msg: str = "frame_failed", name: str = "inference.service", **fields: object) -> logging.LogRecord:
    rec = logging.makeLogRecord({"name": name, "msg": msg, "levelname": "ERROR", "levelno": logging.ERROR})
    rec.__dict__.update(fields)
    return rec


def test_a_json_line_carries_the_ids() -> None:
    line = JsonFormatter().format(record(video_id="cam-1", frame_id=7, partition=3, offset=42))
    data = orjson.loads(line)
    assert "\n" not in line
    assert {k: data[k] for k in ("level", "event", "video_id", "frame_id", "partition", "offset")} == {
        "level": "error", "event": "frame_failed", "video_id": "cam-1", "frame_id": 7, "partition": 3, "offset": 42,
    }  # fmt: skip
    assert data["ts"].endswith("Z")


def test_secrets_are_masked_in_both_formats() -> None:
    fields = {"sasl_plain_password": "hunter2", "aws_secret_access_key": "abc123", "s3_access_key_id": "AKIA1"}
    for formatter in (JsonFormatter(), ConsoleFormatter()):
        line = formatter.format(record(**fields))
        assert "hunter2" not in line
        assert "abc123" not in line
        assert "AKIA1" not in line
        assert "***" in line


def test_aiokafka_repeats_are_thinned_other_loggers_are_not() -> None:
    limit = RateLimit(prefix="aiokafka", interval_s=60.0)
    kafka = [limit.filter(record("Unable to connect to %s", name="aiokafka.conn")) for _ in range(5)]
    ours = [limit.filter(record("frame_failed")) for _ in range(5)]
    assert kafka == [True, False, False, False, False]
    assert ours == [True] * 5
