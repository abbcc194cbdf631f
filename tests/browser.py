"""Headless Chromium for the tests that need a real browser (the web console, gcloud's sign-in): Debian's
``chromium`` and ``chromedriver`` driven by Selenium, on a throwaway in-memory profile, resolving no name but this
machine's, so that nothing a test does leaves it."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

# Incognito: cookies and cache stay in memory (a profile on a disk busy with fsyncs stalled the browser).
BASE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--incognito",
              "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
              # Names resolve nowhere but to this machine: nothing leaves it.
              "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1")


def required_tool(name: str, *candidates: str, needed_by: str) -> str:
    """The path of a tool a test needs: a failure under CI=true (CI must run every test), a skip elsewhere."""
    for candidate in (name, *candidates):
        found = shutil.which(candidate)
        if found:
            return found
    message = f"{name} is not installed"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}: CI must run {needed_by}")
    pytest.skip(message)


@contextlib.contextmanager
def headless_chromium(*flags: str, needed_by: str, page_load_strategy: str | None = None,
                      browser_log: bool = False) -> Iterator[Any]:
    """A Selenium driver of headless Chromium with ``BASE_FLAGS`` and ``flags``, quit on exit."""
    chromium = required_tool("chromium", "chromium-browser", needed_by=needed_by)
    chromedriver = required_tool("chromedriver", needed_by=needed_by)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*BASE_FLAGS, *flags):
        options.add_argument(flag)
    if page_load_strategy is not None:
        options.page_load_strategy = page_load_strategy
    if browser_log:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    try:
        yield driver
    finally:
        driver.quit()
