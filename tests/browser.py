"""A real headless browser for the self-tests of pages: Chromium through Selenium.

Without Selenium (the `browser` extra) or Chromium and its driver on PATH (Debian:
`apt-get install chromium chromium-driver`), a test that asks for the browser skips,
saying what is missing; with CONFORMANCE_REQUIRE_BROWSER=1 (CI's) it fails instead.
Screenshots go to results/screenshots/ (or CONFORMANCE_SCREENSHOTS), and the run's
summary lists those it took."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
REPOSITORY = Path(__file__).resolve().parent.parent


def missing_browser() -> str:
    """What is missing for a browser test, or ''."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'conformance[browser]')"
    if not any(shutil.which(name) for name in BROWSERS):
        return f"no Chromium on PATH (one of {', '.join(BROWSERS)})"
    if not shutil.which("chromedriver"):
        return "no chromedriver on PATH (Debian: apt-get install chromium-driver)"
    return ""


def start_browser():
    """A headless Chromium, or the test skipped (failed under CONFORMANCE_REQUIRE_BROWSER)."""
    missing = missing_browser()
    if missing:
        (pytest.fail if os.environ.get("CONFORMANCE_REQUIRE_BROWSER") else pytest.skip)(missing)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = next(shutil.which(n) for n in BROWSERS if shutil.which(n))
    # headless, and as root in a container: no sandbox, no small /dev/shm
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                 "--window-size=1280,800"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("CONFORMANCE_SCREENSHOTS") or REPOSITORY / "results" /
                  "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
