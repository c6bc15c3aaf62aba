"""The explorer in headless Chromium, against a real ASGI server and a real infer worker: WebGL through SwiftShader
(software rendering), so the 3D scene draws here as on a laptop. Screenshots go to $LAB_SCREENSHOTS when set."""

from urllib.parse import parse_qs, quote, urlparse

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from tests.apps.explorer.factories import char_tokenizer, tiny_run
from tests.e2e.conftest import CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

TEXT = "ROMEO:\nBut soft, what light through yonder window breaks?"


@pytest.fixture
def webgl_page(browser):
    """A page in a Chromium whose WebGL runs on SwiftShader. The shared `browser` fixture passes --disable-gpu, which
    turns WebGL off; this one has its own browser, launched without it. (Requesting `browser` first makes sure the
    session's Playwright is running, so this second one shares its event loop.)"""
    pw_browser = browser.browser_type.launch(
        executable_path=CHROMIUM,
        args=["--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist",
              "--disable-background-networking", "--disable-component-update", "--no-first-run"])
    context = pw_browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()
    pw_browser.close()


@pytest.fixture
def lab(processes):
    """ada, her run (a 3-layer GPT with checkpoints at steps 0, 100, 200), the web server and an infer worker."""
    ada = User.objects.create_user("ada", password="pw-analytical-1843")
    run, checkpoints = tiny_run(owner=ada, tokenizer=char_tokenizer(), n_layer=3, n_head=4, n_embd=32, block_size=64)
    url = processes.asgi_server()
    processes.worker("infer", "infer@explorer")
    return url, checkpoints


def _sign_in(page, url):
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", "pw-analytical-1843")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who")).to_contain_text("ada")


def _query(page) -> dict:
    return {k: v[0] for k, v in parse_qs(urlparse(page.url).query).items()}


def test_the_3d_scene_draws_and_clicking_a_head_opens_its_heatmap(webgl_page, lab, screenshots):
    page = webgl_page
    url, checkpoints = lab
    _sign_in(page, url)
    latest = checkpoints[-1]
    page.goto(f"{url}/explorer/?model=checkpoint:{latest.pk}&text={quote(TEXT)}")
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "ready", timeout=60_000)
    key = page.locator("#trace-status").get_attribute("data-key")
    expect(page.locator("body")).to_have_attribute("data-trace", key, timeout=30_000)  # fetched, parsed and drawn
    assert page.evaluate("document.body.dataset.webgl") == "on"
    expect(page.locator("#tokens .tk")).to_have_count(len(TEXT))

    # the canvas is not blank: read its pixels back
    stats = page.evaluate("window.explorerScene.pixelStats()")
    assert stats["colours"] > 40, stats
    assert stats["litFraction"] > 0.02, stats
    page.screenshot(path=screenshots / "explorer-3d.png")

    # click a head in the 3D scene: its heatmap opens, and the URL remembers it
    point = page.evaluate("window.explorerScene.headScreenPoint(2, 3)")
    page.mouse.click(point["x"], point["y"])
    expect(page.locator("#heat-title")).to_have_text("layer 2 · head 3")
    assert _query(page)["layer"] == "2" and _query(page)["head"] == "3"
    assert page.locator("#layer").input_value() == "2" and page.locator("#head").input_value() == "3"
    page.wait_for_timeout(800)  # the camera's focus animation
    page.screenshot(path=screenshots / "explorer-3d-focus.png")

    # the heatmap answers hover with the weight under the pointer
    page.locator("#heatmap").scroll_into_view_if_needed()
    box = page.locator("#heatmap").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 12, box["y"] + box["height"] - 12)
    expect(page.locator(".heatmap-wrap .tip")).to_contain_text("→")

    # the walk-through tells the attention step with this head's numbers
    page.locator("#walk-steps button", has_text="Attention").click()
    expect(page.locator("#walk-body")).to_contain_text("In layer 2, head 3")
    expect(page.locator("#walk-body")).to_contain_text("%")

    # temperature changes the probabilities
    page.locator("#temperature").fill("0.3")
    expect(page.locator("#prob-summary")).to_contain_text("At temperature 0.30")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "explorer-page.png", full_page=True)

    # a shared URL opens the same view
    shared = page.url
    page.goto(shared)
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "ready", timeout=30_000)
    expect(page.locator("#heat-title")).to_have_text("layer 2 · head 3")

    # across training: the slider re-traces the same text through the run's first checkpoint
    first_key = page.locator("#trace-status").get_attribute("data-key")
    page.locator("#ckpt").fill("0")
    expect(page.locator("#ckpt-out")).to_contain_text("step 0")
    expect(page.locator("#trace-status")).not_to_have_attribute("data-key", first_key, timeout=30_000)
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "ready", timeout=60_000)
    page.wait_for_function(f"location.search.includes('checkpoint%3A{checkpoints[0].pk}')")
    expect(page.locator("#heat-title")).to_have_text("layer 2 · head 3")  # the view stays on the same head
    page.locator("#across").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "explorer-slider-step0.png")
    # new text through the checkpoint on screen, not the run's latest that the picker names
    page.fill("#id_text", "JULIET: Romeo")
    page.get_by_role("button", name="Trace").click()
    expect(page.locator("#trace-status")).to_have_attribute("data-source", f"checkpoint:{checkpoints[0].pk}")
    expect(page.locator("#tokens .tk")).to_have_count(len("JULIET: Romeo"), timeout=60_000)


def test_without_webgl_the_2d_views_still_work_and_bad_input_gets_a_message(browser, lab, screenshots):
    url, checkpoints = lab
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.add_init_script("HTMLCanvasElement.prototype.getContext = new Proxy(HTMLCanvasElement.prototype.getContext, "
                         "{apply: (f, self, args) => /webgl/.test(args[0]) ? null : Reflect.apply(f, self, args)})")
    _sign_in(page, url)
    page.goto(f"{url}/explorer/?model=checkpoint:{checkpoints[-1].pk}&text=ROMEO")
    expect(page.locator("#no-webgl")).to_be_visible()
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "ready", timeout=60_000)
    expect(page.locator("#heat-title")).to_have_text("layer 0 · head 0")
    # click a head in the model view: its heatmap opens
    page.locator("#modelview").scroll_into_view_if_needed()
    box = page.locator("#modelview").bounding_box()
    page.mouse.click(box["x"] + box["width"] - 20, box["y"] + box["height"] - 20)
    expect(page.locator("#heat-title")).to_have_text("layer 2 · head 3")
    expect(page.locator("#prob-bars li")).to_have_count(10)
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "explorer-no-webgl.png", full_page=True)

    # bad input is answered in the page, and changes nothing
    page.fill("#id_text", "   ")
    page.get_by_role("button", name="Trace").click()
    expect(page.locator("#trace-status")).to_contain_text("Type some text first")
    expect(page.locator("#heat-title")).to_have_text("layer 2 · head 3")
    page.goto(f"{url}/explorer/?model=checkpoint:99999")
    expect(page.locator("#explorer-problem")).to_contain_text("does not exist any more")
    context.close()


def test_a_deep_model_folds_its_middle_blocks_and_opens_the_selected_one(webgl_page, processes, screenshots):
    """Six blocks: the first two and the last are drawn, the middle three fold into one slab with their count;
    choosing a folded block draws its row; the toolbar's button unfolds them all. The selected block is opened up
    into its operations beside the tower."""
    page = webgl_page
    ada = User.objects.create_user("ada", password="pw-analytical-1843")
    _, checkpoints = tiny_run(owner=ada, tokenizer=char_tokenizer(), n_layer=6, n_head=2, n_embd=16, block_size=32)
    url = processes.asgi_server()
    processes.worker("infer", "infer@explorer")
    _sign_in(page, url)
    page.goto(f"{url}/explorer/?model=checkpoint:{checkpoints[-1].pk}&text={quote('ROMEO: soft')}")
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "ready", timeout=120_000)
    expect(page.locator("body")).to_have_attribute("data-trace", page.locator("#trace-status").get_attribute("data-key"),
                                                   timeout=30_000)
    fold = page.locator("#scene-fold")
    expect(fold).to_have_text("show all 6 blocks")
    assert page.evaluate("window.explorerScene.shown") == [0, 1, 5]
    assert page.evaluate("window.explorerScene.opsLayer") == 0  # the selected block, opened up
    page.locator("#layer").select_option("3")
    assert page.evaluate("window.explorerScene.shown") == [0, 1, 3, 5]
    assert page.evaluate("window.explorerScene.opsLayer") == 3
    fold.click()
    expect(fold).to_have_text("fold the middle blocks")
    assert page.evaluate("window.explorerScene.shown") == [0, 1, 2, 3, 4, 5]
    page.wait_for_timeout(500)
    page.screenshot(path=screenshots / "explorer-unfolded.png")


def test_the_walk_through_reads_in_chinese_with_its_token_chips(page, lab):
    url, checkpoints = lab
    _sign_in(page, url)
    page.context.add_cookies([{"name": "django_language", "value": "zh-hans", "url": url}])
    page.goto(f"{url}/explorer/?model=checkpoint:{checkpoints[-1].pk}&text={quote(TEXT)}")
    expect(page.locator("#trace-status")).to_have_attribute("data-status", "ready", timeout=60_000)
    body = page.locator("#walk-body")
    for step, words in (("嵌入", "嵌入表"), ("注意力", "softmax"), ("MLP", "神经元"), ("残差流", "残差流"),
                        ("Logits", "逻辑值"), ("概率", "温度")):
        page.locator("#walk-steps button", has_text=step).first.click()
        expect(body).to_contain_text(words)
        text = body.inner_text()
        assert "%(" not in text and " the " not in text, text  # every placeholder filled, no English sentence left
    # a token is a chip (an element, its text set as text), not parsed markup
    page.locator("#walk-steps button", has_text="注意力").first.click()
    assert body.locator(".tok").count() >= 2
