"""The console in a real headless Chromium (Debian's, driven by Playwright): upload through the form,
progress to 100%, the result's annotated frames and detections. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.synthetic import write_demo_video
from tests.support import ServeProcess

CHROMIUM = Path("/usr/bin/chromium")
KEY = "console-test-key"
FRAMES = 24
DEADLINE_MS = 240_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        message = "Debian's chromium is not at /usr/bin/chromium: `apt-get install -y chromium` (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Chromium's sandbox refuses to run as root, which is what CI containers are.
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


def test_the_console_uploads_a_video_shows_its_progress_and_its_annotated_result(
    browser: Any, start_server: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    video = tmp_path / "shapes.mp4"
    write_demo_video(video, tmp_path / "truth.json", n_frames=FRAMES)
    server = start_server(f"console-{uuid.uuid4().hex[:8]}", API_KEYS=KEY).wait_ready()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(server.url)
    expect(page.locator("h1")).to_contain_text("Frame detection")
    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.set_input_files("#file", str(video))
    page.fill("input[name=video_id]", "browser-clip")
    page.click("#upload-button")
    expect(page.locator("#upload-message")).to_contain_text("Accepted as browser-clip", timeout=60_000)
    row = page.locator('#videos tr[data-video-id="browser-clip"]')
    expect(row).to_be_visible()
    page.screenshot(path=str(tmp_path / "1-uploaded.png"), full_page=True)

    expect(row.locator(".progress-text")).to_contain_text("100%", timeout=DEADLINE_MS)
    expect(row).to_have_attribute("data-state", "completed", timeout=DEADLINE_MS)
    page.screenshot(path=str(tmp_path / "2-completed.png"), full_page=True)

    row.click()
    expect(page.locator("#detail-title")).to_have_text("browser-clip")
    expect(page.locator("#detail-message")).to_contain_text(f"{FRAMES} frames", timeout=30_000)
    images = page.locator("#frames img")
    expect(images.first).to_be_visible()
    page.wait_for_function(
        "() => { const shown = [...document.querySelectorAll('#frames img')];"
        " return shown.length > 0 && shown.every((i) => i.complete && i.naturalWidth > 0); }",
        timeout=60_000,
    )
    assert images.count() >= 4
    assert page.locator("#detections tbody tr").count() > 0
    page.locator("#detail").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "3-result.png"), full_page=True)
    print(f"console screenshots: {tmp_path}")  # noqa: T201
    assert errors == [], errors
    page.close()
