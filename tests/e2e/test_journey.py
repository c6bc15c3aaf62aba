"""A newcomer, signed in with a small corpus of their own, follows links alone — the home page's "Start the journey",
then each page's "Next step" — from the home page to generating with a model they trained themselves, on a
1400 px screen and on a 390 px phone; the home page then shows their corpus, their run and their model."""

import re

import pytest
from django.conf import settings
from django.utils import translation
from playwright.sync_api import expect

from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

# A model that trains in seconds on one thread, yet writes checkpoints to promote.
TINY_FORM = {"n_layer": "2", "n_head": "2", "n_embd": "32", "block_size": "16", "batch_size": "4",
             "max_steps": "60", "eval_interval": "30", "checkpoint_interval": "30", "learning_rate": "0.01",
             "min_lr": "0.001", "warmup_steps": "5"}


def next_step(page, title):
    box = page.locator("#next-step")
    expect(box).to_be_visible()
    box.get_by_role("link", name=re.compile(re.escape(title))).click()


def translator(lang):
    """What the page says for an English msgid in `lang` (the server's own catalogue)."""
    def t(text, **params):
        with translation.override(lang):
            return translation.gettext(text) % params if params else translation.gettext(text)
    return t


@pytest.mark.parametrize("width,lang", [(1400, "en"), (390, "en"), (1400, "zh-hans")])
def test_a_newcomer_follows_links_from_home_to_generating_with_their_own_model(
        browser, processes, user, tiny_corpus, char_tok, encoded, width, lang, screenshots):
    t = translator(lang)
    url = processes.asgi_server()
    train_worker(processes, "train@journey")
    processes.worker("infer", "infer@journey")
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "analytical-engine-1843")
    page.get_by_role("button", name="Sign in").click()
    expect(page).not_to_have_url(re.compile("/accounts/login/"))
    if lang != "en":  # what the header's language switch sets
        context.add_cookies([{"name": settings.LANGUAGE_COOKIE_NAME, "value": lang, "url": url}])

    page.goto(url + "/")
    # their own corpus is step 1 done, so "Start here" has moved on to the tokens; the whole card opens a step
    expect(page.locator("#step-data .mine")).to_contain_text("Tiny")
    expect(page.locator("#step-tokenizers .start-badge")).to_be_visible()
    expect(page.locator("#start-journey")).to_contain_text(t("Continue the journey: %(step)s", step=t("Tokens")))
    page.locator("#step-data").click()  # anywhere on the card
    expect(page).to_have_url(url + "/data/")
    next_step(page, t("Tokens"))
    expect(page).to_have_url(url + "/tokenizers/")
    next_step(page, t("Pretraining"))
    expect(page).to_have_url(url + "/training/")

    page.get_by_role("link", name=t("New run")).first.click()
    page.select_option("#id_corpus", label="Tiny")
    page.select_option("#id_tokenizer", label="tiny-char")
    for name, value in TINY_FORM.items():
        page.fill(f"#id_{name}", value)
    page.fill("#id_name", "my first model")
    page.get_by_role("button", name=t("Start training")).click()
    expect(page).to_have_url(re.compile(r"/training/runs/\d+/$"))
    expect(page.locator("#run-status")).to_have_text(t("succeeded"), timeout=120_000)

    # the checkpoints say their order and which is best; the newcomer takes the obvious button
    expect(page.locator("#run-checkpoints h2")).to_contain_text(t("newest first"))
    expect(page.locator("#run-checkpoints tr.best .badge")).to_have_text(t("best"))
    page.get_by_test_id("promote-best").click()
    expect(page).to_have_url(re.compile(r"/models/[\w-]+/$"))
    page.get_by_role("link", name=t("Generate"), exact=True).last.click()
    expect(page).to_have_url(re.compile(r"/generate/\?model="))
    js = lambda text: page.evaluate("(s) => (window.gettext ? window.gettext(s) : s)", text)  # the JS catalogue
    expect(page.locator("#ws-status")).to_have_text(js("live"))
    expect(page.locator("#model option:checked")).to_contain_text("my first model")
    page.fill("#prompt", "First Citizen:")
    page.locator("#go").click()
    panel = page.locator('.out-panel[data-panel="a"]')
    expect(panel.locator(".out-status")).to_have_text(js("done"), timeout=60_000)
    assert panel.locator(".gen-tokens .gt").count() > 0, "the model's own tokens are on the page"
    # the reply outgrew block_size 16: a quiet note (not a warning) saying what a context window is, and the
    # hint that chat needs a chat template, both in the reader's language like the status chips
    notes = panel.locator(".out-notes")
    expect(notes).to_have_class(re.compile(r"\binfo\b"))
    expect(notes).to_contain_text("block_size")
    expect(page.locator("#chat-note")).to_have_text(js("chat needs a model with a chat template (SmolLM2 has one)"))
    if lang != "en":
        for english in ("live", "done", "chat needs a model with a chat template (SmolLM2 has one)"):
            assert js(english) != english, f"{english!r} has no {lang} translation"
        assert "context window" not in notes.inner_text() and "tokens/s" not in panel.inner_text()
    page.screenshot(path=screenshots / f"journey-generate-{width}-{lang}.png", full_page=True)
    next_step(page, t("Inside the model"))
    expect(page).to_have_url(url + "/explorer/")

    page.goto(url + "/")
    expect(page.locator("#step-training .mine")).to_contain_text("my first model")
    expect(page.locator("#step-generate .mine")).to_contain_text("my first model")
    expect(page.locator("#step-explorer .start-badge")).to_be_visible()
    page.screenshot(path=screenshots / f"journey-home-{width}-{lang}.png", full_page=True)
    assert not errors, errors
    context.close()
