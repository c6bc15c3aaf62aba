"""Exporting a model in Chromium, against a real daphne and a real infer worker: Export on the model page queues the
job, the page follows it by htmx polling until the download link appears, and the download is the zipped Hugging
Face directory."""

import zipfile

import pytest
from playwright.sync_api import expect

from tests.apps.registry.factories import make_model

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def test_a_visitor_exports_a_model_and_downloads_the_zip(page, processes, tmp_path, screenshots):
    url = processes.asgi_server()
    processes.worker("infer", "infer@browser")
    model = make_model(tmp_path, name="Tiny export")
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/models/{model.slug}/")
    page.select_option("#exports select[name=format]", value="hf")
    page.locator("#exports").get_by_role("button", name="Export").click()
    job = page.locator('#exports .export-job[data-format="hf"]')
    expect(job).to_have_attribute("data-status", "succeeded", timeout=60_000)
    page.screenshot(path=screenshots / "export-done.png", full_page=True)
    with page.expect_download() as download:
        job.get_by_role("link", name="Hugging Face layout (.zip)").click()
    assert download.value.suggested_filename == f"{model.slug}-hf.zip"
    names = set(zipfile.ZipFile(download.value.path()).namelist())
    assert {f"{model.slug}/config.json", f"{model.slug}/model.safetensors", f"{model.slug}/tokenizer.json"} <= names
    assert not errors, errors
