"""Headless Chromium for the report tests: a screenshot and the DOM after the page has loaded.

Chromium is required (Debian: ``apt-get install -y chromium``); the tests fail without it.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--hide-scrollbars",
]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    pytest.fail("chromium not found: install it (Debian: apt-get install -y chromium)")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"chromium failed ({r.returncode}): {r.stderr[-2000:]}"
    return r


def screenshot(html: Path, png: Path, tmp: Path, size: str = "1280,2000") -> Path:
    """Render ``html`` and save a PNG of the top ``size`` pixels."""
    _run(
        [f"--screenshot={png}", f"--window-size={size}", html.resolve().as_uri()],
        tmp / "profile-shot",
    )
    assert png.is_file(), "chromium wrote no screenshot"
    return png


def dump_dom(html: Path, tmp: Path) -> str:
    """The DOM after load (scripts run; virtual time lets every image decode)."""
    r = _run(
        ["--virtual-time-budget=10000", "--dump-dom", html.resolve().as_uri()],
        tmp / "profile-dom",
    )
    return r.stdout
