"""runner.serve without Kafka or S3: settings, keys and rate limit, ids from file names, the page."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest
from fastapi import HTTPException

from inference.config import ConfigError, build
from runner.serve.auth import WINDOW_S, Guard, RateLimit
from runner.serve.console import console_page
from runner.serve.jobs import API_VIDEO_ID, new_video_id
from runner.serve.routes import PRIORITIES, _copy
from runner.serve.settings import GIB, ApiSettings, is_loopback
from runner.status import PriorityName
from tests.support import REPO_ROOT


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("API_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout


def test_defaults_are_loopback_port_8000_and_2_gib() -> None:
    settings = build(ApiSettings)
    assert (settings.host, settings.port, settings.max_upload_bytes) == ("127.0.0.1", 8000, 2 * GIB)
    assert settings.key_set == frozenset()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_keys(host: str) -> None:
    assert is_loopback(host)
    assert build(ApiSettings, host=host).keys is None


@pytest.mark.parametrize("keys", [None, "", " , "])
def test_another_host_without_keys_is_a_setting_error_naming_api_keys(keys: str | None) -> None:
    with pytest.raises(ConfigError, match=r"^invalid setting API_KEYS: must be set when API_HOST"):
        build(ApiSettings, host="0.0.0.0", keys=keys)


def test_keys_are_split_on_commas_and_never_shown() -> None:
    settings = build(ApiSettings, host="0.0.0.0", keys=" alpha, beta ,,")
    assert settings.key_set == {"alpha", "beta"}
    assert "alpha" not in repr(settings) and "alpha" not in str(settings.model_dump())


def test_serve_refuses_to_start_on_a_public_host_without_keys_in_one_line() -> None:
    env = {**os.environ, "API_HOST": "0.0.0.0", "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    env.pop("API_KEYS", None)
    done = subprocess.run([sys.executable, "-m", "runner", "serve"], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert line.startswith("runner: invalid setting API_KEYS:") and "0.0.0.0" in line


def test_a_key_is_checked_then_counted() -> None:
    guard = Guard(frozenset({"k1", "k2"}), RateLimit(2))
    with pytest.raises(HTTPException) as missing:
        guard.admit(None, "1.2.3.4")
    assert missing.value.status_code == 401
    with pytest.raises(HTTPException) as wrong:
        guard.admit("k3", "1.2.3.4")
    assert wrong.value.status_code == 403
    guard.admit("k1", "1.2.3.4")
    guard.admit("k1", "5.6.7.8")
    with pytest.raises(HTTPException) as limited:
        guard.admit("k1", "1.2.3.4")
    assert limited.value.status_code == 429
    assert 1 <= int(limited.value.headers["Retry-After"]) <= WINDOW_S
    guard.admit("k2", "1.2.3.4")


def test_without_keys_each_address_has_its_own_limit() -> None:
    guard = Guard(frozenset(), RateLimit(1))
    guard.admit(None, "1.2.3.4")
    guard.admit("anything", "5.6.7.8")
    with pytest.raises(HTTPException):
        guard.admit(None, "1.2.3.4")


def test_a_window_starts_over_after_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("runner.serve.auth.time.monotonic", lambda: now[0])
    limit = RateLimit(1)
    assert limit.admit("a") is None
    assert limit.admit("a") == WINDOW_S
    now[0] += WINDOW_S
    assert limit.admit("a") is None


@pytest.mark.parametrize(
    ("filename", "stem"),
    [
        ("clip.mp4", "clip"),
        ("../../etc/passwd.mp4", "passwd"),
        ("..", "video"),
        (None, "video"),
        ("cam 1 (day).mov", "cam-1-day"),
        ("/abs/path/.hidden.mp4", "hidden"),
    ],
)
def test_an_id_from_a_file_name_is_its_cleaned_stem_and_a_suffix(filename: str | None, stem: str) -> None:
    video_id = new_video_id(filename)
    assert video_id.rsplit("-", 1)[0] == stem
    assert API_VIDEO_ID.fullmatch(video_id) and "/" not in video_id
    assert new_video_id(filename) != video_id


@pytest.mark.parametrize("bad", ["", ".", "..", ".x", "a/b", "a b", "x" * 201])
def test_an_api_video_id_cannot_be_a_path(bad: str) -> None:
    assert API_VIDEO_ID.fullmatch(bad) is None


def test_a_copy_past_the_limit_keeps_nothing(tmp_path: Path) -> None:
    target = tmp_path / "upload"
    assert _copy(io.BytesIO(b"x" * 10), target, 10) and target.read_bytes() == b"x" * 10
    assert not _copy(io.BytesIO(b"x" * 11), target, 10) and not target.exists()


def test_the_page_says_whether_a_key_is_needed() -> None:
    assert 'data-key-required="true"' in console_page(True, 2 * GIB)
    page = console_page(False, 2 * GIB)
    assert 'data-key-required="false"' in page and "up to 2 GiB" in page and "{{" not in page


def test_the_form_accepts_exactly_the_status_priorities() -> None:
    assert set(PRIORITIES) == set(get_args(PriorityName))
