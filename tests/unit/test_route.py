"""Routing a task's model reference: current and pinned versions, rollouts that wait for the warm-up,
failures remembered, and versions compacted out of the topic."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from inference.backends import ModelTarget
from inference.detector import DetectOutput
from inference.errors import ModelNotFound, ModelUnavailable
from inference.messages import ModelInfo, ModelRecord
from inference.metrics import Metrics
from inference.route import ModelRouter

LOCAL = ModelInfo(name="best.pt", conf=0.25, iou=0.45, version="local", sha256="0" * 64)


def record(name: str, version: str, digit: str = "a") -> ModelRecord:
    return ModelRecord(name=name, version=version, uri=f"s3://models/{name}/{version}/w.pt", sha256=digit * 64,
                       imgsz=320)  # fmt: skip


class Registry:
    def __init__(self, *records: ModelRecord) -> None:
        self.latest_records = {r.name: r for r in records}
        self.seen = {(r.name, r.version): r for r in records}
        self.published_later: list[ModelRecord] = []
        self.catch_ups = 0

    def latest(self, name: str) -> ModelRecord | None:
        return self.latest_records.get(name)

    def version(self, name: str, version: str) -> ModelRecord | None:
        return self.seen.get((name, version)) if name in self.latest_records else None

    async def catch_up(self) -> bool:
        """Reads what was published before the call: the records held back until now."""
        self.catch_ups += 1
        for late in self.published_later:
            self.latest_records[late.name] = late
            self.seen[(late.name, late.version)] = late
        return True


class Weights:
    def __init__(self, manifests: dict[tuple[str, str], ModelRecord] | None = None) -> None:
        self.manifests = manifests or {}
        self.failing: set[str] = set()
        self.downloads: list[str] = []

    async def local_file(self, wanted: ModelRecord) -> Path:
        self.downloads.append(wanted.ref)
        if wanted.ref in self.failing:
            raise ModelUnavailable(f"model {wanted.ref}: checksum mismatch")
        return Path(f"/cache/{wanted.sha256}/w.pt")

    async def manifest(self, name: str, version: str) -> ModelRecord | None:
        return self.manifests.get((name, version))


class Warm:
    """The pool's warm-up, held until released, so a test sees routing before and after it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.release.set()
        self.warmed: list[str] = []

    async def __call__(self, target: ModelTarget) -> list[DetectOutput]:
        await self.release.wait()
        self.warmed.append(target.label)
        return [DetectOutput(0, 0, (), 0.0, load_ms=5.0)]


def router(registry: Registry, weights: Weights | None = None, warm: Warm | None = None) -> ModelRouter:
    return ModelRouter(registry, weights or Weights(), warm or Warm(), "torch", LOCAL, Metrics())  # type: ignore[arg-type]


async def test_no_reference_is_the_replicas_own_model() -> None:
    routed = await router(Registry()).route(None)
    assert routed.info == LOCAL and routed.target is None


async def test_a_name_routes_to_its_current_version_and_a_pin_to_its_own() -> None:
    table = Registry(record("shapes", "1", "a"), record("shapes", "2", "b"))
    table.latest_records["shapes"] = record("shapes", "2", "b")
    routes = router(table)
    current, pinned = await routes.route("shapes"), await routes.route("shapes@1")
    assert (current.info.version, current.info.sha256) == ("2", "b" * 64)
    assert (pinned.info.version, pinned.info.sha256) == ("1", "a" * 64)
    assert pinned.target == ModelTarget("/cache/" + "a" * 64 + "/w.pt", 320, "shapes@1")


async def test_a_name_published_just_before_its_task_is_found_after_a_catch_up() -> None:
    table = Registry()
    table.published_later.append(record("late", "1"))
    assert (await router(table).route("late")).info.version == "1"
    assert table.catch_ups == 1


async def test_unknown_names_and_versions_are_model_not_found() -> None:
    routes = router(Registry(record("shapes", "1")))
    with pytest.raises(ModelNotFound, match="no model named 'nope'"):
        await routes.route("nope")
    with pytest.raises(ModelNotFound, match="no version '9' of model 'shapes'"):
        await routes.route("shapes@9")


async def test_a_pinned_version_compacted_out_of_the_topic_is_served_from_its_manifest() -> None:
    old = record("shapes", "1", "c")
    routes = router(Registry(record("shapes", "2")), Weights({("shapes", "1"): old}))
    assert (await routes.route("shapes@1")).info.sha256 == "c" * 64


async def test_a_version_that_fails_is_remembered_and_not_fetched_again_for_every_frame() -> None:
    weights = Weights()
    weights.failing.add("shapes@1")
    routes = router(Registry(record("shapes", "1")), weights)
    for _ in range(3):
        with pytest.raises(ModelUnavailable, match="checksum mismatch"):
            await routes.route("shapes")
    assert weights.downloads == ["shapes@1"]


async def test_a_rollout_routes_to_the_new_version_only_once_it_is_warm() -> None:
    table, warm = Registry(record("shapes", "1", "a")), Warm()
    routes = router(table, warm=warm)
    assert (await routes.route("shapes")).info.version == "1"
    warm.release.clear()
    new = record("shapes", "2", "b")
    table.latest_records["shapes"] = new
    routes.on_change("shapes", new)
    await asyncio.sleep(0)  # the rollout starts and waits on the warm-up
    assert (await routes.route("shapes")).info.version == "1", "not warm yet: frames stay on the old version"
    warm.release.set()
    for _ in range(20):
        if (await routes.route("shapes")).info.version == "2":
            break
        await asyncio.sleep(0.01)
    assert (await routes.route("shapes")).info.version == "2"
    assert warm.warmed == ["shapes@2"]


async def test_a_name_never_used_here_needs_no_rollout_and_a_retired_one_is_gone() -> None:
    table, warm = Registry(record("shapes", "1")), Warm()
    routes = router(table, warm=warm)
    routes.on_change("shapes", record("shapes", "2"))
    assert warm.warmed == []
    await routes.route("shapes")
    del table.latest_records["shapes"]
    routes.on_change("shapes", None)
    with pytest.raises(ModelNotFound):
        await routes.route("shapes")
