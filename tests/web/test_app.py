"""The web app at `/` in a real Chromium: sign-in, predict, result view, jobs, errors, layout."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from cli.stack import Stack
from shared.apikeys import revoke_key
from shared.auth import split_prefix
from tests.conftest import FIXTURES, KeyFactory, client_for
from tests.web.browser import TABLET, Browser

DICOM = FIXTURES / "pneumoniamnist" / "test_0000_pneumonia.dcm"
PNG = FIXTURES / "pneumoniamnist" / "test_0001_normal.png"
SMEAR = FIXTURES / "datasets" / "bccd_tiny" / "JPEGImages" / "BloodImage_00000.jpg"
CLASSIFIER = "pneumonia-resnet18"
DETECTOR = "bccd-frcnn-efficientnet-lite0-fpn"


def job_id_from(browser: Browser) -> str:
    match = browser.wait(lambda d: re.search(r"#/jobs/([0-9a-f-]{36})$", d.current_url), 60)
    assert match is not None
    return match[1]


def predict(browser: Browser, files: list[Path], model: str, gradcam: bool = False) -> str:
    """Fill the Predict form as a person would and return the new job's id."""
    browser.go("#/predict")
    browser.find("#drop")
    browser.driver.find_element(By.ID, "files").send_keys("\n".join(str(f) for f in files))
    Select(browser.find("#model")).select_by_value(model)
    browser.wait(lambda d: model in d.find_element(By.ID, "card-summary").text)
    if gradcam:
        browser.find("#gradcam").click()
    browser.find("#submit").click()
    job_id = job_id_from(browser)
    browser.wait(lambda d: d.find_element(By.ID, "main").get_attribute("data-ready"), 120)
    return job_id


def test_sign_in_shows_tenant_scopes_and_explains_missing_actions(
    browser: Browser, make_key: KeyFactory
) -> None:
    tenant = f"ward-{uuid.uuid4().hex[:6]}"
    browser.sign_in(make_key(tenant=tenant, scopes=("jobs:read",)))
    assert browser.text("#whoami .tenant") == tenant
    assert browser.text("#scopes") == "jobs:read"
    # No key in the URL, nor in localStorage; only in this tab's sessionStorage.
    assert "mk_" not in browser.driver.current_url
    assert browser.js("return localStorage.length") == 0
    assert browser.js("return sessionStorage.getItem('medimg.apiKey')").startswith("mk_")
    # Predict needs jobs:write: the page says so instead of offering a form that would fail.
    assert "lacks the `jobs:write` scope" in browser.text("main .empty")
    assert not browser.all("#submit")
    # Uploading a dataset needs `train`: the button is disabled and says why.
    browser.go("#/datasets")
    upload = browser.find("#dataset-upload button[type=submit]")
    assert not upload.is_enabled()
    assert "Needs the `train` scope" in (upload.get_attribute("title") or "")
    assert "lacks the `train` scope" in browser.text("#dataset-upload")


def test_wrong_key_gets_the_servers_words(browser: Browser) -> None:
    browser.allowed_http = {401}
    browser.signed_out()
    browser.find("#api-key").send_keys("mk_00000000_not-a-real-key", Keys.ENTER)
    message = browser.text("#signin-status .error")
    assert "API key" in message or "key" in message.lower(), message
    assert browser.js("return sessionStorage.length") == 0


def test_predict_dicom_shows_the_label(
    browser: Browser, make_key: KeyFactory, stack: Stack
) -> None:
    key = make_key(scopes=("jobs:write",))
    browser.sign_in(key)
    job_id = predict(browser, [DICOM], CLASSIFIER)
    with client_for(stack, key) as api:
        job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    expected = job["images"][0]["output"]["label"]
    assert browser.text("#label-0") == expected == "pneumonia"
    assert browser.text("#model-ref") == job["model"]["ref"]
    # The operating point in words, the probabilities as bars, the DICOM rendered as PNG.
    assert "sensitivity" in browser.text("#operating-point")
    assert len(browser.all("#stage-0 ~ .side .bar, .side .bar")) >= 2
    browser.wait(
        lambda d: (
            d.execute_script("return document.querySelector('#stage-0 img.base').naturalWidth") > 0
        )
    )
    # The JSON and CSV downloads are offered for every finished job.
    downloads = browser.text(".downloads")
    assert "Download JSON" in downloads and "Download CSV" in downloads


def test_detector_boxes_match_the_json_and_the_slider_filters(
    browser: Browser, make_key: KeyFactory, stack: Stack
) -> None:
    key = make_key(scopes=("jobs:write",))
    browser.sign_in(key)
    job_id = predict(browser, [SMEAR], DETECTOR)
    with client_for(stack, key) as api:
        job = api.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    detections = job["images"][0]["output"]["detections"]
    assert detections, "the detector found nothing on a BCCD smear"
    drawn = browser.all("#stage-0 svg.boxes g.det")
    assert len(drawn) == len(detections)
    assert sorted(float(g.get_attribute("data-score") or 0) for g in drawn) == sorted(
        d["score"] for d in detections
    )
    # The slider filters on the client: only boxes at or above it stay.
    scores = sorted(d["score"] for d in detections)
    cut = scores[len(scores) // 2]
    browser.set_range("#score-slider", cut)
    kept = sum(s >= round(cut, 2) for s in scores)
    browser.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#stage-0 g.det")) == kept)
    assert browser.text("#box-count").startswith(f"{kept} of {len(detections)} boxes")
    # Labels toggle off: the boxes stay, their text goes.
    browser.find("#show-labels").click()
    browser.find("#show-scores").click()
    assert not browser.all("#stage-0 g.det text")
    assert len(browser.all("#stage-0 g.det rect")) == kept


def test_gradcam_overlay_toggles(browser: Browser, make_key: KeyFactory) -> None:
    browser.sign_in(make_key(scopes=("jobs:write",)))
    predict(browser, [PNG], CLASSIFIER, gradcam=True)
    overlay = browser.driver.find_element(By.ID, "gradcam-0")
    assert not overlay.is_displayed()
    browser.find("#gradcam-toggle").click()
    browser.wait(lambda d: overlay.is_displayed())
    browser.wait(lambda d: d.execute_script("return arguments[0].naturalWidth", overlay) > 0)
    browser.set_range("#gradcam-opacity", 0.3)
    assert overlay.value_of_css_property("opacity") == "0.3"
    browser.find("#gradcam-toggle").click()
    browser.wait(lambda d: not overlay.is_displayed())


def test_api_error_shows_the_problem_detail(
    browser: Browser, make_key: KeyFactory, stack: Stack
) -> None:
    key = make_key(scopes=("jobs:write",))
    browser.sign_in(key)
    bad = Path(browser_tmp(stack)) / "not-an-image.png"
    bad.write_bytes(b"this is a text file, not a PNG\n" * 4)
    with client_for(stack, key) as api:
        response = api.post(
            "/v1/jobs",
            data={"model": CLASSIFIER},
            files={"files": (bad.name, bad.read_bytes(), "image/png")},
        )
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    browser.allowed_http = {response.status_code}
    browser.go("#/predict")
    browser.find("#drop")
    browser.driver.find_element(By.ID, "files").send_keys(str(bad))
    Select(browser.find("#model")).select_by_value(CLASSIFIER)
    browser.find("#submit").click()
    shown = browser.text("#predict-status .error")
    assert problem["detail"] in shown
    assert problem["title"] in shown


def browser_tmp(stack: Stack) -> Path:
    folder = Path(stack.config.data_dir).parent / "web-uploads"
    folder.mkdir(exist_ok=True)
    return folder


def test_revoked_key_gets_a_clear_message(
    browser: Browser, make_key: KeyFactory, db: object
) -> None:
    key = make_key(tenant="revoked-ward", scopes=("jobs:read",))
    browser.sign_in(key)
    browser.go("#/jobs")
    browser.find("#jobs-table")
    prefix = split_prefix(key)
    assert prefix
    with db() as session:  # type: ignore[operator]
        revoke_key(session, prefix)
        session.commit()
    browser.allowed_http = {401}
    # The next request the page makes is refused (API processes hear of the revocation
    # through Postgres NOTIFY, so allow them a moment): the sign-in form says why.
    signed_out = "return document.querySelector('#signin-status .error')?.textContent || ''"
    for attempt in range(20):
        browser.go("#/models" if attempt % 2 == 0 else "#/jobs")
        time.sleep(1)
        if browser.js(signed_out):
            break
    message = browser.text("#signin-status .error", timeout=5)
    assert "Signed out" in message and "revoked" in message.lower(), message
    assert browser.js("return sessionStorage.length") == 0


def test_jobs_list_filters_and_empty_state(browser: Browser, make_key: KeyFactory) -> None:
    browser.sign_in(make_key(tenant=f"empty-{uuid.uuid4().hex[:6]}", scopes=("jobs:write",)))
    browser.go("#/jobs")
    assert "Submit images on the Predict page" in browser.text("main .empty")
    predict(browser, [PNG], CLASSIFIER)
    browser.go("#/jobs")
    browser.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")) == 1)
    Select(browser.find("#f-status")).select_by_value("failed")
    browser.wait(lambda d: not d.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr"))
    Select(browser.find("#f-status")).select_by_value("succeeded")
    browser.wait(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#jobs-table tbody tr")) == 1)


def test_keyboard_only_sign_in_and_navigation(browser: Browser, make_key: KeyFactory) -> None:
    key = make_key(scopes=("jobs:write",))
    browser.signed_out("#/models")
    field = browser.find("#api-key")
    assert browser.driver.switch_to.active_element == field  # focus starts in the key field
    field.send_keys(key, Keys.ENTER)
    browser.find("#models-table")
    # The skip link comes first in the tab order; Enter on it lands in <main> and keeps the page.
    browser.js("document.querySelector('.brand').focus()")
    ActionChains(browser.driver).key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(
        Keys.SHIFT
    ).perform()
    active = browser.driver.switch_to.active_element
    assert active.get_attribute("class") == "skip"
    assert active.is_displayed()  # visible once focused
    active.send_keys(Keys.ENTER)
    browser.wait(lambda d: d.switch_to.active_element.get_attribute("id") == "main")
    assert browser.driver.current_url.endswith("#/models")
    # A model link opens its card with the keyboard.
    link = browser.find(f"#models-table a[href='#/models/{CLASSIFIER}']")
    link.send_keys(Keys.ENTER)
    browser.find("#roc canvas")


def test_tablet_layout_has_no_horizontal_scroll(browser: Browser, make_key: KeyFactory) -> None:
    browser.sign_in(make_key(scopes=("admin",)))
    browser.driver.set_window_size(*TABLET)
    for route, ready in (
        ("#/predict", "#drop"),
        ("#/jobs", "#jobs-table"),
        ("#/models", "#models-table"),
        (f"#/models/{CLASSIFIER}", "#roc canvas"),
        ("#/datasets", "#dataset-upload"),
        ("#/compare", "#compare section"),
    ):
        browser.go(route)
        browser.find(ready)
        overflow = browser.js(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{route} scrolls sideways by {overflow}px at {TABLET[0]}px"
        browser.screenshot(f"tablet_{route.strip('#/').replace('/', '_')}")


def test_model_card_shows_roc_operating_point_and_confusion(
    browser: Browser, make_key: KeyFactory
) -> None:
    browser.sign_in(make_key(scopes=("jobs:read",)))
    browser.go(f"#/models/{CLASSIFIER}")
    browser.find("#roc canvas")
    # The operating point is a dot on the ROC and a sentence under it.
    assert browser.find("#roc").get_attribute("data-points") not in (None, "0")
    assert "Operating point: threshold 0.076" in browser.text("main")
    metrics = browser.text("#test-metrics")
    assert "AUROC 0.973" in metrics and "n = 624" in metrics
    # The bundled card has no intervals, and the page says so rather than inventing them.
    assert "no confidence intervals" in browser.text("main")
    assert [td.text for td in browser.all("table.confusion td")] == ["187", "47", "6", "384"]
    assert "Intended use" in browser.text("main") and "Licence" in browser.text("main")
    # Moving an alias needs models:admin: disabled, and the reason is on the button.
    move = browser.find("#move-alias")
    assert not move.is_enabled() and "models:admin" in (move.get_attribute("title") or "")
