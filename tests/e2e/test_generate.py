"""The Generate page in a real browser, against a real daphne and a real infer worker: tokens stream in coloured by
probability, hovering one shows the alternatives, clicking one branches, Stop stops, and two settings compare side
by side. The last test does it all with the real SmolLM2 (marked smollm2)."""

import pytest
from playwright.sync_api import expect

from apps.registry.models import Model
from apps.registry.services import model_import_file
from tests.apps.registry.factories import make_model
from tests.smollm2 import smollm2_gguf  # noqa: F401  (fixture)

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


@pytest.fixture
def site(processes):
    url = processes.asgi_server()
    processes.worker("infer", "infer@browser")
    return url


def open_generate(page, url, model):
    page.goto(f"{url}/generate/?model={model.slug}")
    expect(page.locator("#ws-status")).to_have_text("live")


def shot(page, path, *, full=True):
    page.evaluate("window.scrollTo(0, 0)")  # the sticky header would otherwise be drawn mid-page
    page.screenshot(path=path, full_page=full)


def panel(page, key="a"):
    return page.locator(f'.out-panel[data-panel="{key}"]')


def test_tokens_stream_in_hover_shows_alternatives_and_a_click_branches(page, site, tmp_path, screenshots):
    model = make_model(tmp_path, name="Tiny", n_embd=64, ctx=64)
    open_generate(page, site, model)
    page.fill("#prompt", "First Citizen:")
    page.fill("#max_new_tokens", "24")
    page.fill("#seed", "3")
    page.click("#go")
    expect(panel(page).locator(".out-status")).to_have_text("done", timeout=60_000)
    tokens = panel(page).locator(".gen-tokens .gt")
    assert tokens.count() >= 2
    expect(panel(page).locator(".gen-stats")).to_contain_text("tokens/s")
    style = tokens.nth(1).get_attribute("style")
    assert "--p:" in style  # each token carries its probability, which its colour is made of

    tokens.nth(1).hover()
    pop = page.locator("#tok-pop")
    expect(pop).to_be_visible()
    expect(pop.locator(".alt-box")).to_have_count(2)  # after the filters, and raw
    expect(pop).to_contain_text("After temperature & filters")
    page.screenshot(path=screenshots / "generate-hover-tiny.png")
    alternative = pop.locator(".alt-box").nth(1).locator("button.alt:not([disabled])").first
    picked = alternative.locator(".alt-piece").inner_text()
    alternative.click()
    expect(panel(page).locator(".versions button")).to_have_count(2, timeout=30_000)
    expect(panel(page).locator(".out-status")).to_have_text("done", timeout=60_000)
    forced = panel(page).locator(".gen-tokens .gt.forced")
    expect(forced).to_have_count(1)
    assert forced.inner_text() == picked
    shot(page, screenshots / "generate-branched-tiny.png")
    panel(page).locator(".versions button").first.click()  # back to the original
    expect(panel(page).locator(".gen-tokens .gt.forced")).to_have_count(0)


def test_stop_ends_a_long_generation(page, site, tmp_path):
    model = make_model(tmp_path, name="Endless", n_embd=64, ctx=64)
    Model.objects.filter(pk=model.pk).update(stop_ids=[])  # no end-of-text: it runs until told
    open_generate(page, site, model)
    page.fill("#max_new_tokens", "2000")
    page.click("#go")
    expect(panel(page).locator(".gen-tokens .gt").first).to_be_visible(timeout=60_000)
    page.click("#stop-button")
    expect(panel(page).locator(".out-status")).to_have_text("stopped", timeout=10_000)
    expect(panel(page).locator(".gen-stats")).to_contain_text("stop: stopped")
    assert panel(page).locator(".gen-tokens .gt").count() < 2000
    expect(page.locator("#go")).to_be_enabled()


def test_compare_runs_two_settings_side_by_side(page, site, tmp_path, screenshots):
    model = make_model(tmp_path, name="Tiny", n_embd=64, ctx=64)
    open_generate(page, site, model)
    page.check("#compare")
    expect(panel(page, "b")).to_be_visible()
    page.click("[data-preset=greedy]")  # A: greedy
    page.click('[data-edit="b"]')
    page.click("[data-preset=creative]")  # B: creative
    page.fill("#max_new_tokens", "16")
    page.click('[data-edit="a"]')
    page.fill("#max_new_tokens", "16")
    page.click("#go")
    for key in "ab":
        expect(panel(page, key).locator(".out-status")).to_have_text("done", timeout=60_000)
    expect(panel(page, "a").locator(".out-title")).to_contain_text("greedy")
    expect(panel(page, "b").locator(".out-title")).to_contain_text("T 1.2")
    shot(page, screenshots / "generate-compare-tiny.png")


@pytest.mark.smollm2
def test_smollm2_answers_a_chat_with_probabilities_and_branches(page, site, smollm2_gguf, screenshots):  # noqa: F811
    model = model_import_file(source=smollm2_gguf, name="SmolLM2-135M-Instruct", status=Model.Status.PUBLISHED)
    open_generate(page, site, model)
    page.click("#tab-chat")
    page.fill("#message", "What is the capital of France?")
    page.click("[data-preset=greedy]")
    page.click("#go")
    expect(panel(page).locator(".out-status")).to_have_text("done", timeout=120_000)
    expect(panel(page).locator(".bubble.assistant")).to_contain_text("The capital of France is Paris.")
    shot(page, screenshots / "generate-smollm2-chat.png")
    paris = panel(page).locator(".bubble.assistant .gt", has_text="Paris")
    paris.hover()
    expect(page.locator("#tok-pop")).to_contain_text("London")  # the model considered it, at well under 1%
    page.screenshot(path=screenshots / "generate-smollm2-hover.png")
    page.locator("#tok-pop .alt-box").nth(0).locator("button.alt:not([disabled])", has_text="London").first.click()
    expect(panel(page).locator(".versions button")).to_have_count(2, timeout=30_000)
    expect(panel(page).locator(".out-status")).to_have_text("done", timeout=120_000)
    expect(panel(page).locator(".bubble.assistant .gt.forced")).to_have_text(" London")
    shot(page, screenshots / "generate-smollm2-branch.png")
