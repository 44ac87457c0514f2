"""The registry's table from the topic's records: current versions, versions seen, tombstones, bad records."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from inference.config import KafkaSettings
from inference.messages import ModelRecord
from inference.registry import ModelRegistry

SHA = "ab" * 32


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None
    topic: str = "inference_models"
    partition: int = 0
    offset: int = 0


def model(name: str, version: str, **changes: object) -> bytes:
    return orjson.dumps({"name": name, "version": version, "uri": f"s3://models/{name}/{version}/best.pt",
                         "sha256": SHA, "imgsz": 320, **changes})  # fmt: skip


def registry(live: bool = True) -> tuple[ModelRegistry, list[tuple[str, str | None]]]:
    changes: list[tuple[str, str | None]] = []
    table = ModelRegistry(KafkaSettings(), "test", lambda name, r: changes.append((name, r and r.version)))
    table._live = live
    return table, changes


def test_the_latest_record_of_a_name_is_current_and_every_version_stays_pinnable() -> None:
    table, changes = registry()
    for offset, version in enumerate(("1", "2")):
        table._apply(Record(b"shapes", model("shapes", version), offset=offset))  # type: ignore[arg-type]
    current = table.latest("shapes")
    assert current is not None and current.version == "2"
    assert table.version("shapes", "1") == ModelRecord.model_validate_json(model("shapes", "1"))
    assert changes == [("shapes", "1"), ("shapes", "2")]


def test_the_same_record_again_announces_no_change() -> None:
    table, changes = registry()
    table._apply(Record(b"shapes", model("shapes", "1")))  # type: ignore[arg-type]
    table._apply(Record(b"shapes", model("shapes", "1"), offset=1))  # type: ignore[arg-type]
    assert changes == [("shapes", "1")]


def test_a_tombstone_retires_the_name_and_its_versions() -> None:
    table, changes = registry()
    table._apply(Record(b"shapes", model("shapes", "1")))  # type: ignore[arg-type]
    table._apply(Record(b"shapes", None, offset=1))  # type: ignore[arg-type]
    assert table.latest("shapes") is None and table.version("shapes", "1") is None
    assert changes == [("shapes", "1"), ("shapes", None)]


def test_records_that_cannot_be_read_are_skipped() -> None:
    table, changes = registry()
    for offset, (key, value) in enumerate([
        (b"junk", b"{not json"),
        (b"fields", orjson.dumps({"name": 5})),
        (b"liar", model("shapes", "1")),
        (b"bad-sha", model("bad-sha", "1", sha256="xyz")),
        (b"slash", model("a/b", "1")),
        (None, model("keyless", "1")),
    ]):  # fmt: skip
        table._apply(Record(key, value, offset=offset))  # type: ignore[arg-type]
    assert table.names() == [] and changes == []


def test_records_read_at_start_announce_nothing() -> None:
    table, changes = registry(live=False)
    table._apply(Record(b"shapes", model("shapes", "1")))  # type: ignore[arg-type]
    assert table.latest("shapes") is not None and changes == []
