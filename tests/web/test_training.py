"""Datasets and training in Chromium: upload the tiny fixture zip, import, train, curves, promote.

Kept short: 60 PneumoniaMNIST images, 2 epochs at 32 px (the trainer tests do the same).
"""

from __future__ import annotations

import uuid
from pathlib import Path

from selenium.webdriver.common.by import By

from cli.stack import Stack
from tests.conftest import KeyFactory, client_for
from tests.fixtures.datasets import pneumonia_tiny_zip
from tests.web.browser import Browser

# Records every value the upload progress bar takes (the page changes route afterwards).
WATCH_PROGRESS = """
window.__progress = [];
const bar = document.getElementById('dataset-progress');
const proto = Object.getOwnPropertyDescriptor(HTMLProgressElement.prototype, 'value');
Object.defineProperty(bar, 'value', {
  set(v) { window.__progress.push(Number(v)); proto.set.call(this, v); },
  get() { return proto.get.call(this); },
});
"""


def test_upload_train_and_watch_curves(
    browser: Browser, make_key: KeyFactory, stack: Stack, tmp_path: Path
) -> None:
    tenant = f"lab-{uuid.uuid4().hex[:6]}"
    key = make_key(tenant=tenant, scopes=("admin",))
    archive = tmp_path / "pneumonia-tiny.zip"
    archive.write_bytes(pneumonia_tiny_zip())
    browser.sign_in(key)
    browser.go("#/datasets")
    assert "No datasets yet" in browser.text("main .empty")
    browser.find("#dataset-name").send_keys("pneumonia-tiny")
    browser.driver.find_element(By.ID, "dataset-file").send_keys(str(archive))
    browser.js(WATCH_PROGRESS)
    browser.find("#dataset-upload button[type=submit]").click()

    # The dataset page: import status, then counts per split and class, samples, train form.
    browser.wait(lambda d: "#/datasets/" in d.current_url, 60)
    assert browser.js("return window.__progress.at(-1)") == 1, "upload progress never reached 100%"
    heading = "return document.querySelector('main h2')?.textContent || ''"
    browser.wait(lambda d: "ready" in d.execute_script(heading), 120)
    counts = browser.find("#counts")
    assert "normal" in counts.text and "pneumonia" in counts.text and "train" in counts.text
    browser.wait(
        lambda d: (
            d.execute_script(
                "return [...document.querySelectorAll('#samples img')]"
                ".filter((i) => i.naturalWidth).length"
            )
            >= 6
        ),
        60,
    )
    browser.screenshot("dataset_page")

    # The form shows what the platform will choose; we set only what keeps the test short.
    form = browser.find("#train-form")
    assert "derived from the dataset" in form.text
    for field, value in (("epochs", "2"), ("image_size", "32"), ("batch_size", "8")):
        browser.find(f"#{field}").send_keys(value)
    browser.find("#model_name").send_keys(f"web-{uuid.uuid4().hex[:6]}")
    browser.find("#train").click()

    # The live page: the recipe, then curves that grow epoch by epoch.
    browser.wait(lambda d: "#/training/" in d.current_url, 30)
    recipe = browser.find("#recipe")
    assert "caller" in recipe.text and "derived" in recipe.text
    browser.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#loss-chart canvas"), 240)
    points = "return Number(document.getElementById('loss-chart')?.dataset.points || 0)"
    assert browser.js(points) >= 1
    browser.wait(lambda d: d.find_elements(By.ID, "promote"), 240)
    assert browser.js(points) == 2
    assert browser.find("#val-chart canvas")
    metrics = browser.text("#test-metrics")
    assert "AUROC" in metrics and "95% CI" in metrics
    assert browser.all("table.confusion td")
    browser.screenshot("training_done")

    # Promote asks first; cancelling changes nothing, accepting moves `production`.
    job_id = browser.driver.current_url.rsplit("/", 1)[1]
    with client_for(stack, key) as api:
        job = api.get(f"/v1/training-jobs/{job_id}").raise_for_status().json()
        name, version = job["model_version"].split(":")
        browser.find("#promote").click()
        browser.driver.switch_to.alert.dismiss()
        assert "production" not in api.get(f"/v1/models/{name}").json()["aliases"]
        browser.find("#promote").click()
        browser.driver.switch_to.alert.accept()
        browser.wait(lambda d: "production → v" in d.find_element(By.ID, "promote-msg").text)
        assert api.get(f"/v1/models/{name}").json()["aliases"]["production"] == int(version)

        # On the model card an admin moves any alias, after a confirmation naming the change.
        browser.go(f"#/models/{name}")
        alias = browser.find("#alias-name")
        alias.clear()
        alias.send_keys("staging")
        browser.find("#move-alias").click()
        prompt = browser.driver.switch_to.alert
        assert f'"staging" of {name}' in prompt.text and f"version {version}" in prompt.text
        prompt.accept()
        browser.wait(lambda d: "staging" in api.get(f"/v1/models/{name}").json()["aliases"], 30)
        assert api.get(f"/v1/models/{name}").json()["aliases"]["staging"] == int(version)
