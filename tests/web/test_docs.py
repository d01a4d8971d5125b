"""Offline docs and the no-outside-host rule, in Chromium with every outside host unresolvable."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By

from cli.stack import Stack
from tests.conftest import KeyFactory
from tests.web.browser import Browser

STATIC = Path(__file__).resolve().parents[2] / "services/api/src/api/web/static"
APP_ROUTES = (
    ("#/predict", "#drop"),
    ("#/jobs", "#jobs-table"),
    ("#/models", "#models-table"),
    ("#/models/pneumonia-resnet18", "#roc canvas"),
    ("#/datasets", "#dataset-upload"),
    ("#/compare", "#compare section"),
)


def test_vendored_files_match_their_provenance() -> None:
    readme = (STATIC / "vendor" / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| `[^`]+`[^|]* \| `([0-9a-f]{64})` \|$", readme, re.M)
    assert len(rows) >= 10
    for name, digest in rows:
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    listed = {name for name, _ in rows}
    on_disk = {
        p.relative_to(STATIC / "vendor").as_posix()
        for p in (STATIC / "vendor").rglob("*")
        if p.is_file() and p.name != "README.md"
    }
    assert on_disk == listed, "every vendored file needs a provenance row"


def test_swagger_ui_renders_offline_with_authorize(browser: Browser) -> None:
    browser.open("/docs")
    browser.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 10, 60)
    operations = {e.text for e in browser.all(".opblock-summary-path")}
    assert "/v1/jobs" in operations and "/v1/me" in operations
    browser.find("button.authorize").click()
    dialog = browser.find(".dialog-ux .modal-ux")
    assert "Bearer" in dialog.text or "HTTPBearer" in dialog.text or "apiKey" in dialog.text
    assert browser.outside_references() == []


def test_redoc_renders_offline(browser: Browser) -> None:
    browser.open("/redoc")
    browser.wait(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-section-id*='operation/']")) > 10,
        90,
    )
    assert "/v1/jobs" in browser.text(".api-content", 30)
    assert browser.outside_references(example_links_ok=True) == []


@pytest.mark.parametrize("path", ["/", "/docs", "/redoc"])
def test_pages_csp_allows_only_this_origin(stack: Stack, path: str) -> None:
    response = httpx.get(stack.api_url + path, timeout=10)
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "http" not in csp and "*" not in csp, csp
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["script-src"] == "'self'"
    if path == "/":
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    # Nothing in the HTML itself points elsewhere.
    assert not re.search(r"""(src|href)=["'](https?:)?//""", response.text)


def test_no_app_page_references_an_outside_host(browser: Browser, make_key: KeyFactory) -> None:
    browser.sign_in(make_key(scopes=("admin",)))
    for route, ready in APP_ROUTES:
        browser.go(route)
        browser.find(ready)
        assert browser.outside_references() == [], route
    # No inline script or style attribute anywhere in the HTML the app ships.
    for html in STATIC.glob("*.html"):
        text = html.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", text), html.name
        assert " style=" not in text and "<style" not in text, html.name
