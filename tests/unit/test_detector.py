"""A pool process's models: loaded on first use, least recently used out, a load failure as the model's error."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest

from inference import detector
from inference.backends import DetectorConfig, ModelTarget
from inference.errors import ModelUnavailable

LOCAL = DetectorConfig("local.onnx", "onnx", "cpu", 320, 0.25, 0.45, 1, 10**6, max_models=2)


def target(name: str) -> ModelTarget:
    return ModelTarget(f"/cache/{name}.onnx", 320, f"{name}@1")


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The labels of the models "loaded", in order, with the process state of a fresh pool process."""
    loaded: list[str] = []

    def warmed(config: DetectorConfig, wanted: ModelTarget) -> Any:
        if "broken" in wanted.path:
            raise RuntimeError("not an ONNX model")
        loaded.append(wanted.label)
        return detector._Loaded(wanted, object())

    monkeypatch.setattr(detector, "_warmed", warmed)
    monkeypatch.setattr(detector._State, "config", LOCAL)
    monkeypatch.setattr(detector._State, "models", OrderedDict())
    return loaded


def test_a_model_loads_once_and_the_least_recently_used_goes_first(loads: list[str]) -> None:
    a, b, c = target("a"), target("b"), target("c")
    assert detector._model_for(a)[2] == ()
    assert detector._model_for(b)[1] > 0
    assert detector._model_for(a)[1] == 0.0, "already loaded: no load time"
    _, _, evicted = detector._model_for(c)
    assert evicted == ("b@1",), "b was used less recently than a"
    assert loads == ["a@1", "b@1", "c@1"]
    assert list(detector._State.models) == [(a.path, 320), (c.path, 320)]


def test_a_warm_up_loads_the_model_and_detects_nothing(loads: list[str]) -> None:
    ((ok, output),) = detector.detect_batch([(detector.WARM_ONLY, target("a"))])
    assert ok and isinstance(output, detector.DetectOutput)
    assert output.detections == () and output.load_ms > 0
    assert loads == ["a@1"]


def test_weights_that_do_not_load_are_model_unavailable_and_evict_nothing(loads: list[str]) -> None:
    detector._model_for(target("a"))
    with pytest.raises(ModelUnavailable, match=r"broken@1 does not load: RuntimeError: not an ONNX model"):
        detector._model_for(target("broken"))
    assert list(detector._State.models) == [("/cache/a.onnx", 320)]
