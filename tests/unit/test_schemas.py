"""Drift of the committed JSON Schemas from the models, the messages the code writes or docs/contract.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import orjson
import pytest
from jsonschema import Draft202012Validator

from inference.errors import ErrorCode, FrameNotFound
from inference.messages import Detection, FrameTask, ModelInfo, failed_result, ok_result
from runner.assembler import Assembly
from scripts.schemas.__main__ import main
from scripts.schemas.files import MODELS, committed, differing, rendered, write
from scripts.schemas.video import VideoDocument

CONTRACT = Path(__file__).resolve().parents[2] / "docs" / "contract.md"
MODEL = ModelInfo(name="best.pt", conf=0.25, iou=0.45)
TASK = FrameTask(video_id="cam1", frame_id=3, s3_key="cam1/000003.jpg", total_frames=4, timestamp_ms=300.0)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(committed(name))


def errors(name: str, document: Any) -> list[str]:
    return [error.message for error in validator(name).iter_errors(document)]


def test_the_committed_schemas_are_what_the_models_generate() -> None:
    assert differing() == [], "the models changed: run `python -m scripts.schemas` and commit schemas/"
    assert main(["--check"]) == 0


def test_check_names_a_file_that_drifted(tmp_path: Path) -> None:
    assert {path.name for path in write(tmp_path)} == set(MODELS)
    assert write(tmp_path) == []
    (tmp_path / "result.json").write_text(rendered("result.json").replace('"ok"', '"fine"'))
    assert differing(tmp_path) == ["result.json"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_each_schema_is_valid_json_schema(name: str) -> None:
    Draft202012Validator.check_schema(committed(name))


@pytest.mark.parametrize(
    ("task", "valid"),
    [
        ({"video_id": "cam1", "frame_id": 0, "s3_key": "cam1/0.jpg"}, True),
        ({"video_id": "cam1", "frame_id": 0, "s3_key": "k", "bucket": "frames", "total_frames": 1}, True),
        ({"video_id": "cam1", "frame_id": 0, "s3_key": "k", "camera": "dock", "timestamp_ms": 5}, True),
        ({"video_id": "cam 1", "frame_id": 0, "s3_key": "k"}, False),
        ({"video_id": "cam1", "frame_id": -1, "s3_key": "k"}, False),
        ({"video_id": "cam1", "frame_id": "0", "s3_key": "k"}, False),
        ({"video_id": "cam1", "frame_id": 0, "s3_key": ""}, False),
        ({"video_id": "cam1", "frame_id": 0, "s3_key": "k", "bucket": "Frames"}, False),
        ({"video_id": "cam1", "frame_id": 0, "s3_key": "k", "total_frames": 0}, False),
        ({"video_id": "cam1", "frame_id": 0}, False),
    ],
)
def test_the_task_schema_and_the_model_agree(task: dict[str, Any], valid: bool) -> None:
    assert (errors("task.json", task) == []) is valid
    try:
        FrameTask.model_validate(task)
    except ValueError:
        assert not valid
    else:
        assert valid


def test_ok_and_error_results_validate() -> None:
    detection = Detection(class_id=0, class_name="circle", confidence=0.9, bbox=(1.0, 2.0, 30.5, 40.25))
    ok = ok_result(TASK, width=640, height=360, detections=[detection], model=MODEL,
                   timing_ms={"fetch": 1.0, "total": 2.0}, worker="host-1")  # fmt: skip
    failed = failed_result("cam1", 2, FrameNotFound("gone"), task=None, model=MODEL, timing_ms={}, worker="host-1")
    for result in (ok, failed):
        assert errors("result.json", orjson.loads(result.to_json())) == []
    assert errors("result.json", {**orjson.loads(ok.to_json()), "status": "maybe"}) != []


def test_an_assembled_document_validates_and_has_exactly_the_schemas_fields() -> None:
    assembly = Assembly("cam1")
    for frame_id in (0, 2, 2):
        assembly.add(ok_result(TASK.model_copy(update={"frame_id": frame_id}), width=640, height=360,
                               detections=[], model=MODEL, timing_ms={"total": 1.0}, worker="host-1"))  # fmt: skip
    assembly.add(failed_result("cam1", 1, FrameNotFound("gone"), task=TASK, model=MODEL, timing_ms={}, worker="w"))
    document = orjson.loads(orjson.dumps(assembly.document()))
    assert errors("video.json", document) == []
    VideoDocument.model_validate(document)
    schema = committed("video.json")
    assert set(document) == set(schema["properties"])
    entry = schema["$defs"]["FrameEntry"]["properties"]
    assert all(set(frame) <= set(entry) for frame in document["frames"])
    assert set(entry) == {key for frame in document["frames"] for key in frame}


def test_the_contract_names_every_field_and_error_code() -> None:
    prose = re.sub(r"```.*?```", "", CONTRACT.read_text(), flags=re.DOTALL)
    spans = re.findall(r"`([^`]+)`", prose)
    named = {word for span in spans for word in re.findall(r"[a-z_0-9]+", span)}
    fields: set[str] = set()
    for name in MODELS:
        schema = committed(name)
        for part in [schema, *schema.get("$defs", {}).values()]:
            fields.update(part.get("properties", {}))
    missing = sorted((fields | set(get_args(ErrorCode))) - named)
    assert missing == []
