"""Browser fixtures: one headless Chromium per session against the session `stack`.

After every test the page is screenshotted into var/test-screenshots/<test>.png and the
browser console must hold no error (failed requests only where the test allowed the status).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from selenium.common.exceptions import WebDriverException

from cli.stack import Stack
from tests.web.browser import LAPTOP, SCREENSHOTS, Browser, start_chromium


@pytest.fixture(scope="session")
def browser_session(stack: Stack) -> Iterator[Browser]:
    driver = start_chromium()
    try:
        yield Browser(driver, stack.api_url)
    finally:
        driver.quit()
        print(f"\nbrowser test screenshots: {SCREENSHOTS}")


@pytest.fixture
def browser(browser_session: Browser, request: pytest.FixtureRequest) -> Iterator[Browser]:
    b = browser_session
    try:
        b.driver.set_window_size(*LAPTOP)
    except WebDriverException:  # e.g. "tab crashed" (a renderer killed when memory ran out)
        with contextlib.suppress(WebDriverException):
            b.driver.quit()
        b.driver = start_chromium()
    b.allowed_http = set()
    b.console()  # drain what earlier tests left
    yield b
    b.screenshot(request.node.name)
    errors = b.console_errors(b.console())
    if errors:
        pytest.fail(f"browser console errors in {request.node.name}: {errors}")
