"""The schema files: each model's JSON Schema rendered as committed under schemas/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema

from inference.messages import FrameResult, FrameTask, ModelRecord
from runner.status import VideoStatus
from scripts.schemas.video import VideoDocument

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
# A task is described as the worker accepts it, a result and a document as they are written.
MODELS: dict[str, tuple[type[BaseModel], Literal["validation", "serialization"]]] = {
    "task.json": (FrameTask, "validation"),
    "result.json": (FrameResult, "serialization"),
    "video.json": (VideoDocument, "serialization"),
    "model.json": (ModelRecord, "validation"),
    "status.json": (VideoStatus, "serialization"),
}


def schema(name: str) -> dict[str, Any]:
    """The JSON Schema of the model behind the file `name`, with the dialect pydantic writes."""
    model, mode = MODELS[name]
    return {"$schema": GenerateJsonSchema.schema_dialect, **model.model_json_schema(mode=mode)}


def rendered(name: str) -> str:
    """The text of the file `name` as the models make it."""
    return json.dumps(schema(name), indent=2, ensure_ascii=False) + "\n"


def committed(name: str, directory: Path = SCHEMA_DIR) -> dict[str, Any]:
    """The schema in the file `name`, as a validator takes it."""
    loaded: dict[str, Any] = json.loads((directory / name).read_text(encoding="utf-8"))
    return loaded


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into `directory`; returns the files that changed."""
    directory.mkdir(parents=True, exist_ok=True)
    changed = []
    for name in differing(directory):
        path = directory / name
        path.write_text(rendered(name), encoding="utf-8")
        changed.append(path)
    return changed


def differing(directory: Path = SCHEMA_DIR) -> list[str]:
    """The schema files in `directory` that are missing or differ from what the models make."""
    names = []
    for name in MODELS:
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != rendered(name):
            names.append(name)
    return names
