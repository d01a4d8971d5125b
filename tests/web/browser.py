"""Debian's Chromium driven by Selenium, offline, with console logs and screenshots.

Selenium never downloads anything here: the driver path goes through `Service`, the browser
through `binary_location`, and `SE_OFFLINE` keeps Selenium Manager from going online. When
the packages are missing the helper installs them with apt as root, else fails naming them.
Every outside host is unresolvable inside the browser (`--host-resolver-rules`), so a page
that needed a CDN would break in these tests as it would on a clinical network.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PACKAGES = ("chromium", "chromium-driver")
LAPTOP = (1280, 900)
TABLET = (820, 1180)
# One folder for every screenshot of the browser tests (gitignored, like all of var/).
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "test-screenshots"

T = TypeVar("T")


def ensure_chromium() -> None:
    """Install Chromium and its driver with apt when missing and root; else fail naming them."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError(
            f"the browser tests need Debian packages {' '.join(PACKAGES)} "
            f"({CHROMIUM} and {CHROMEDRIVER}); install them: "
            f"sudo apt-get install -y {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], check=True, env=env)
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        raise RuntimeError(f"apt-get installed {PACKAGES} but {CHROMIUM} is still missing")


def start_chromium() -> webdriver.Chrome:
    ensure_chromium()
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager: never look anything up online
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespaces for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--lang=en-GB",
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
        # No outside host resolves: only this machine's servers answer.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.set_capability("unhandledPromptBehavior", "ignore")
    service = Service(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_window_size(*LAPTOP)
    driver.set_script_timeout(30)
    return driver


class Browser:
    """One Chromium for the session, with the helpers the tests share."""

    def __init__(self, driver: webdriver.Chrome, base_url: str) -> None:
        self.driver = driver
        self.base_url = base_url.rstrip("/")
        self.allowed_http: set[int] = set()

    # navigation and waiting
    def open(self, path: str = "/") -> None:
        self.driver.get(self.base_url + path)

    def go(self, hash_route: str) -> None:
        """Move inside the app, as a click on a link would (keeps sessionStorage)."""
        self.driver.execute_script("location.hash = arguments[0]", hash_route)

    def wait(self, what: Callable[[webdriver.Chrome], T], timeout: float = 30, msg: str = "") -> T:
        try:
            return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(what, msg)
        except TimeoutException:
            self.screenshot("timeout")
            raise

    def find(self, css: str, timeout: float = 30) -> WebElement:
        found = self.wait(lambda d: _visible(d, css), timeout, f"no visible {css}")
        assert isinstance(found, WebElement)
        return found

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str, timeout: float = 30) -> str:
        return self.find(css, timeout).text

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def signed_out(self, route: str = "#/predict") -> None:
        """A fresh page load of the app with nothing in sessionStorage."""
        # Cleared from a page of the same origin that runs no app code (the tab's storage).
        self.open("/static/favicon.svg")
        self.js("sessionStorage.clear()")
        self.open(f"/?fresh={time.monotonic_ns()}{route}")  # a new URL: a real page load

    def sign_in(self, key: str) -> None:
        self.signed_out()
        field = self.find("#api-key")
        field.send_keys(key)
        self.find("#signin button[type=submit]").click()
        self.find("#whoami .tenant")

    def set_range(self, css: str, value: float) -> None:
        """Move a range input as a user's drag would: set it, then fire `input`."""
        self.js(
            "const el = document.querySelector(arguments[0]); el.value = arguments[1];"
            "el.dispatchEvent(new Event('input', {bubbles: true}));",
            css,
            str(value),
        )

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        self.driver.save_screenshot(str(path))
        return path

    # console and network
    def console(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.driver.get_log("browser")  # type: ignore[no-untyped-call]
        return entries

    def console_errors(self, entries: list[dict[str, Any]]) -> list[str]:
        """SEVERE entries, less failed requests with a status this test expects (e.g. 422)."""
        errors = []
        for entry in entries:
            if entry["level"] != "SEVERE":
                continue
            status = re.search(r"status of (\d{3})", entry["message"])
            if entry.get("source") == "network" and status and int(status[1]) in self.allowed_http:
                continue
            errors.append(entry["message"])
        return errors

    def outside_references(self, example_links_ok: bool = False) -> list[str]:
        """Every URL of another origin that the page loaded or points at (src, href).

        With ``example_links_ok`` (API docs), a link whose text is its own URL is allowed:
        that is an example value of the API shown as text (e.g. `http://example.com` in a
        generated sample), nothing the page loads or sends anyone to.
        """
        urls: list[str] = self.js(
            "const own = location.origin, out = [];"
            "const outside = (u) => typeof u === 'string'"
            "  && /^(https?:|wss?:|\\/\\/)/.test(u)"
            "  && !u.startsWith(own + '/') && u !== own;"
            "for (const el of document.querySelectorAll('[src],[href],[srcset],[poster]')) {"
            "  const attrs = [el.src, el.href, el.getAttribute('srcset'),"
            "    el.getAttribute('poster')];"
            "  for (const u of attrs) {"
            "    if (!outside(u)) continue;"
            "    const text = (el.textContent || '').trim().replace(/\\/$/, '');"
            "    const example = el.tagName === 'A' && u.replace(/\\/$/, '') === text;"
            "    if (arguments[0] && example) continue;"
            "    out.push(u);"
            "  }"
            "}"
            "for (const e of performance.getEntriesByType('resource'))"
            "  if (outside(e.name)) out.push(e.name);"
            "return out;",
            example_links_ok,
        )
        return urls


def _visible(driver: webdriver.Chrome, css: str) -> WebElement | bool:
    try:
        for element in driver.find_elements(By.CSS_SELECTOR, css):
            if element.is_displayed():
                return element
    except WebDriverException:
        return False
    return False


def until(predicate: Callable[[], T], timeout: float = 30, interval: float = 0.2) -> T:
    """Poll a plain predicate (not a browser one) until truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            assert value, "condition not met in time"
            return value
        time.sleep(interval)
