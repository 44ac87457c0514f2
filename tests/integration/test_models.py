"""Models as data against real Kafka and S3: the registry, per-task routing, and hostile records."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson

from tests.stack import Endpoints
from tests.support import (
    ITEMS_PATH,
    MODEL_PATH,
    Topics,
    WorkerProcess,
    consume,
    distinct_frames,
    produce,
    push_model,
    result_values,
    run_runner,
    synthetic_jpeg,
    task,
    upload,
)

StartWorker = Callable[..., WorkerProcess]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def direct(weights: Path, images: dict[str, bytes]) -> dict[str, list[tuple[str, list[float]]]]:
    """What ultralytics itself says with `weights` on each image: class names and boxes."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    out = {}
    for key, data in images.items():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        result = model.predict(image, conf=0.25, iou=0.45, verbose=False)[0]
        boxes = result.boxes
        out[key] = sorted(
            (result.names[int(c)], [float(v) for v in b])
            for c, b in zip(boxes.cls.tolist(), boxes.xyxy.tolist(), strict=True)
        )
    return out


def same(got: list[dict[str, Any]], expected: list[tuple[str, list[float]]]) -> bool:
    mine = sorted((d["class_name"], d["bbox"]) for d in got)
    return len(mine) == len(expected) and all(
        n1 == n2 and all(abs(a - b) <= 1.0 for a, b in zip(b1, b2, strict=True))
        for (n1, b1), (n2, b2) in zip(mine, expected, strict=True)
    )


def stage(stack: Endpoints, video_id: str, count: int, seed: int = 0) -> dict[str, bytes]:
    objects = {f"{video_id}/{i:06d}.jpg": synthetic_jpeg(seed * 1000 + i) for i in range(count)}
    asyncio.run(upload(stack, objects))
    return objects


def answers(stack: Endpoints, topics: Topics, expected: int, timeout_s: float = 240) -> list[dict[str, Any]]:
    records = asyncio.run(
        consume(stack.bootstrap_servers, topics.results, lambda r: len(distinct_frames(r)) >= expected, timeout_s)
    )
    return result_values(records)


def runner_env(stack: Endpoints, topics: Topics) -> dict[str, str]:
    return {**stack.env(), **topics.env(), "YOLO_OFFLINE": "1", "LOG_LEVEL": "WARNING"}


def test_one_replica_serves_two_registered_models_and_its_own_interleaved(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    tag = uuid.uuid4().hex[:8]
    shapes, items = f"shapes-{tag}", f"items-{tag}"
    env = runner_env(stack, topics)
    assert push_model(env, MODEL_PATH, shapes) == "1"
    assert push_model(env, ITEMS_PATH, items) == "1"
    listed = run_runner(env, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert {(line.split()[0], line.split()[1]) for line in listed.stdout.splitlines()[1:]} >= {
        (shapes, "1"), (items, "1")
    }  # fmt: skip

    objects = stage(stack, f"mix-{tag}", 18)
    # The torch backend runs each .pt as it is, so detections equal ultralytics' own exactly.
    worker = start_worker(MODEL_BACKEND="torch", WORKER_PROCESSES="1")
    worker.wait_started()
    asked = [shapes, items, None]
    records = [
        (f"mix-{tag}".encode(), task(f"mix-{tag}", i, key, **({"model": asked[i % 3]} if asked[i % 3] else {})))
        for i, key in enumerate(sorted(objects))
    ]
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, records))
    values = answers(stack, topics, len(records))

    assert all(v["status"] == "ok" for v in values), [v.get("error") for v in values]
    by_model = {name: [v for v in values if v["model"]["name"] == name] for name in (shapes, items, MODEL_PATH.name)}
    assert {name: len(found) for name, found in by_model.items()} == {shapes: 6, items: 6, MODEL_PATH.name: 6}
    assert {(v["model"]["version"], v["model"]["sha256"]) for v in by_model[shapes]} == {("1", sha256_of(MODEL_PATH))}
    assert {(v["model"]["version"], v["model"]["sha256"]) for v in by_model[items]} == {("1", sha256_of(ITEMS_PATH))}
    assert {v["model"]["version"] for v in by_model[MODEL_PATH.name]} == {"local"}
    expected = {MODEL_PATH: direct(MODEL_PATH, objects), ITEMS_PATH: direct(ITEMS_PATH, objects)}
    weights_of = {shapes: MODEL_PATH, items: ITEMS_PATH, MODEL_PATH.name: MODEL_PATH}
    mismatched = [
        (v["model"]["name"], v["s3_key"])
        for v in values
        if not same(v["detections"], expected[weights_of[v["model"]["name"]]][v["s3_key"]])
    ]
    assert mismatched == []
    names_seen = {d["class_name"] for v in by_model[items] for d in v["detections"]}
    assert names_seen == {"item"}, "the second model's detections differ visibly from best.pt's"
    loads = [line for line in worker.log_lines() if line.get("event") == "model_loaded_in_pool"]
    assert {line["model"] for line in loads} == {shapes, items}, "each registered model loaded once"
    assert worker.terminate() == 0


def test_hostile_registry_records_get_their_outcome_and_other_models_keep_serving(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    tag = uuid.uuid4().hex[:8]
    good, env = f"good-{tag}", runner_env(stack, topics)
    push_model(env, MODEL_PATH, good)
    garbage = b"not a checkpoint at all"
    asyncio.run(upload(stack, {f"{tag}/garbage.pt": garbage}, bucket="models"))
    real = f"s3://models/{good}/1/{MODEL_PATH.name}"

    def record(name: str, **fields: Any) -> tuple[bytes, bytes]:
        value = {"name": name, "version": "1", "uri": real, "sha256": sha256_of(MODEL_PATH), **fields}
        return name.encode(), orjson.dumps(value)

    hostile = [
        record(f"tampered-{tag}", sha256="0" * 64),
        record(f"missing-{tag}", uri=f"s3://models/{tag}/no-such-object.pt"),
        record(f"broken-{tag}", uri=f"s3://models/{tag}/garbage.pt", sha256=hashlib.sha256(garbage).hexdigest()),
        (f"junk-{tag}".encode(), b"{not json"),
        (f"fields-{tag}".encode(), orjson.dumps({"name": 5, "version": "1"})),
        (f"liar-{tag}".encode(), record(good)[1]),  # keyed by one name, naming another
    ]
    asyncio.run(produce(stack.bootstrap_servers, topics.models, hostile))

    objects = stage(stack, f"hostile-{tag}", 4, seed=3)
    keys = sorted(objects)
    asked = {
        f"tampered-{tag}": "model_unavailable",
        f"missing-{tag}": "model_unavailable",
        f"broken-{tag}": "model_unavailable",
        f"junk-{tag}": "model_not_found",
        f"fields-{tag}": "model_not_found",
        f"liar-{tag}": "model_not_found",
        f"{good}@7": "model_not_found",
        f"nobody-{tag}": "model_not_found",
    }
    worker = start_worker(MODEL_BACKEND="torch", WORKER_PROCESSES="1")
    worker.wait_started()
    tasks = []
    for i, model in enumerate([*asked, *asked]):
        # Each hostile frame sits between two good ones: a good model and the replica's own.
        tasks += [task(f"hostile-{tag}", 3 * i, keys[0], model=model), task(f"hostile-{tag}", 3 * i + 1, keys[1],
                  model=good), task(f"hostile-{tag}", 3 * i + 2, keys[2])]  # fmt: skip
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, [(f"hostile-{tag}".encode(), t) for t in tasks]))
    values = {v["frame_id"]: v for v in answers(stack, topics, len(tasks))}

    for i, model in enumerate([*asked, *asked]):
        failed = values[3 * i]
        assert failed["status"] == "error" and failed["error"]["code"] == asked[model], (model, failed)
        assert values[3 * i + 1]["status"] == "ok" and values[3 * i + 2]["status"] == "ok"
    assert "checksum mismatch" in values[0]["error"]["message"]
    assert worker.proc.poll() is None
    invalid = [line for line in worker.log_lines() if line.get("event") == "model_record_invalid"]
    assert {line["key"] for line in invalid} == {f"junk-{tag}", f"fields-{tag}", f"liar-{tag}"}
    assert all({"partition", "offset"} <= set(line) for line in invalid)
    # A failed version is remembered: its second frame fails without another download or load.
    downloads = [line for line in worker.log_lines() if line.get("event") == "model_downloaded"]
    assert sum(1 for line in downloads if line["model"] == f"broken-{tag}") == 1
    assert worker.terminate() == 0
