"""GET /: the console, one server-rendered page; static/console.js fills it from the /v1 API."""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"


@cache
def _template() -> str:
    return (STATIC_DIR / "console.html").read_text(encoding="utf-8")


def console_page(key_required: bool, max_upload_bytes: int) -> str:
    return (
        _template()
        .replace("{{key_required}}", "true" if key_required else "false")
        .replace("{{max_upload}}", html.escape(_size(max_upload_bytes)))
    )


def _size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:g} {unit}"
        value /= 1024
    return f"{value:g} GiB"
