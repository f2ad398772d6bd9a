"""Headless Debian chromium driven by Playwright for the dashboard's browser tests (skips when either is missing)."""

from __future__ import annotations

import os
import pathlib
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# Playwright's own browser download cannot work here: drive Debian's chromium, headless, with nothing phoning home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@contextmanager
def chromium_page(width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A Playwright page in Debian's chromium; skips the test with the reason when it cannot run here."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/test does, as root)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            yield page
        finally:
            browser.close()


def keep_screenshot(page: Any, tmp_path: pathlib.Path, name: str) -> pathlib.Path:
    """Save a full-page screenshot under the test's tmp dir (and $SAILMESH_TEST_ARTIFACTS if set); print where."""
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    extra = os.environ.get("SAILMESH_TEST_ARTIFACTS")
    if extra:
        os.makedirs(extra, exist_ok=True)
        shutil.copy(path, os.path.join(extra, name))
    print(f"dashboard screenshot: {path}")
    return path
