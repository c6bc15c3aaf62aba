"""Browser tests of steps 1 and 2: the playground as a person types, a comparison with Chinese text, the state in
the URL, the merge explorer's slider, and a corpus encoded with its progress arriving live."""

import re
from urllib.parse import parse_qs, urlparse

import pytest
from playwright.sync_api import expect

from tests.data_fixtures import builtins, bundled, user  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

CHINESE = "青山遮不住，毕竟东流去。江晚正愁余，山深闻鹧鸪。"


def count(page, pane: int) -> int:
    return int(page.locator(f"#pane-{pane} .n-tokens").inner_text().replace(",", ""))


def test_tokens_appear_as_you_type_with_ids_linked_on_hover(page, processes, builtins):
    url = processes.asgi_server()
    page.goto(url + "/tokenizers/?t=gpt2&text=")
    expect(page.locator("#pane-0 .n-tokens")).to_have_text("0")
    page.locator("#text").press_sequentially("Hello world, hello tokens!", delay=15)
    expect(page.locator("#pane-0 .n-tokens")).to_have_text("6")
    expect(page.locator("#tokens-0 .tk")).to_have_count(6)
    expect(page.locator("#ids-0 .id").first).to_have_text("15496")  # "Hello"
    # hover a token: its id lights up, and the other way round
    page.locator('#tokens-0 .tk[data-i="1"]').hover()
    expect(page.locator('#ids-0 [data-i="1"]')).to_have_class(re.compile(r"\bhl\b"))
    page.locator('#ids-0 [data-i="3"]').hover()
    expect(page.locator('#tokens-0 .tk[data-i="3"]')).to_have_class(re.compile(r"\bhl\b"))
    # the explanation quotes this text's numbers
    expect(page.locator("#why")).to_contain_text("26 characters")
    expect(page.locator("#why")).to_contain_text("6 integers")
    # ids beside the tokens, without a round trip; the URL keeps the state
    page.locator("#show-ids").check()
    expect(page.locator("#results")).to_have_class(re.compile(r"show-ids"))
    page.wait_for_function("location.search.includes('ids=1')")
    query = parse_qs(urlparse(page.url).query)
    assert query["t"] == ["gpt2"] and query["text"] == ["Hello world, hello tokens!"]
    # the special-token switch is visible and changes the ids
    page.locator("#text").fill("a<|endoftext|>b")
    expect(page.locator(".special-note")).to_contain_text("plain text")
    page.locator("#special").check()
    expect(page.locator(".special-note")).to_contain_text("one special token")
    expect(page.locator("#pane-0 .n-tokens")).to_have_text("3")


def test_compare_chinese_across_tokenizers_and_share_the_view(page, processes, builtins, screenshots):
    url = processes.asgi_server()
    page.goto(url + "/tokenizers/?t=gpt2&text=")
    page.locator("#text").fill(CHINESE * 20)
    expect(page.locator("#pane-0 .n-tokens")).not_to_have_text("0")
    page.locator("#add-tokenizer").select_option("cl100k_base")
    expect(page.locator(".pane")).to_have_count(2)
    page.locator("#add-tokenizer").select_option("o200k_base")
    expect(page.locator(".pane")).to_have_count(3)
    gpt2, cl100k, o200k = count(page, 0), count(page, 1), count(page, 2)
    assert gpt2 > cl100k > o200k, (gpt2, cl100k, o200k)
    expect(page.locator("#pane-2 .badge.ok")).to_have_text("fewest")
    expect(page.locator("#why")).to_contain_text("gpt2 needs")
    # a Chinese character split over two gpt2 tokens is one span carrying both ids, bytes in the id list
    expect(page.locator('#tokens-0 .tk.multi').first).to_be_visible()
    expect(page.locator("#ids-0 .idg small").first).to_have_text(re.compile(r"^[0-9a-f]{2}( [0-9a-f]{2})*$"))
    page.screenshot(path=screenshots / "playground-compare-chinese.png", full_page=True)
    # the long text travels compressed in the URL; opening the link restores the whole view
    page.wait_for_function("location.search.includes('z=')")
    shared = page.url
    page.goto(shared)
    expect(page.locator("#text")).to_have_value(CHINESE * 20)
    expect(page.locator(".pane")).to_have_count(3)
    assert (count(page, 0), count(page, 1), count(page, 2)) == (gpt2, cl100k, o200k)
    # removing a pane
    page.locator("#pane-1 button.icon").click()
    expect(page.locator(".pane")).to_have_count(2)


def test_a_megabyte_pasted_stays_responsive(page, processes, builtins):
    url = processes.asgi_server()
    page.goto(url + "/tokenizers/?t=gpt2&text=")
    page.evaluate("""() => { const t = document.getElementById('text');
        t.value = 'All the world is a stage, and all the men and women merely players. '.repeat(15000);
        t.dispatchEvent(new Event('input', {bubbles: true})); }""")
    expect(page.locator("#pane-0 .n-tokens")).to_have_text(re.compile(r"^[\d,]{7,}$"), timeout=20_000)
    assert page.locator("#tokens-0 .tk").count() <= 1500  # only the first screens are rendered
    page.locator("#tokens-0 .more").scroll_into_view_if_needed()
    expect(page.locator("#tokens-0 .tk")).to_have_count(5500)  # the next window arrived when scrolled to
    page.wait_for_function("location.search.length > 0")
    assert "z=" in page.url and len(page.url) < 60_000  # compressed: a repeated line deflates very well


def test_the_merge_explorer_slider_fuses_the_words(page, processes, builtins, screenshots):
    url = processes.asgi_server()
    text = "The tokenizer learns to glue frequent neighbours together."
    page.goto(url + f"/tokenizers/gpt2/merges/?n=0&text={text}")
    tokens = page.locator("#merge-step .n-tokens")
    expect(tokens).to_have_text(str(len(text)))
    page.locator("#merge-next").click()
    expect(page.locator("#merge-step")).to_have_attribute("data-n", "1")
    expect(page.locator(".merge-now")).to_contain_text("Merge 1:")
    expect(page.locator(".tk.fresh")).to_have_count(3)  # " t" in " tokenizer", " to" and " together"
    page.evaluate("""() => { const s = document.getElementById('merge-n'); s.value = 3000;
        s.dispatchEvent(new Event('input', {bubbles: true})); }""")
    expect(page.locator("#merge-step")).to_have_attribute("data-n", "3000")
    fused = int(tokens.inner_text())
    assert fused < len(text) // 2
    expect(page.locator("#merge-n-num")).to_have_value("3000")
    page.screenshot(path=screenshots / "merge-explorer.png", full_page=True)
    # clicking a token jumps to the merge that made it
    page.locator('.merge-tokens .tk[data-merge]').first.click()
    expect(page.locator("#merge-step")).not_to_have_attribute("data-n", "3000")


def test_a_corpus_page_encodes_with_live_progress(page, processes, bundled, builtins, user, screenshots):
    url = processes.asgi_server()
    processes.worker("infer", "infer@browser-data")
    page.goto(url + "/accounts/login/?next=/data/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", "analytical-engine-1843")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name=re.compile("Shakespeare")).click()
    expect(page.locator("h1")).to_contain_text("Shakespeare")
    expect(page.locator("#corpus-stats")).to_contain_text("1,319,312 bytes")
    page.locator("#id_tokenizer").select_option(label="cl100k_base")
    page.get_by_role("button", name="Encode").click()
    row = page.locator("tr.shards-row").first
    expect(row).to_have_attribute("data-status", "succeeded", timeout=60_000)  # pushed over the websocket
    expect(row).to_contain_text("uint32")
    expect(row).to_contain_text(re.compile(r"0\.2\d\d · 0\.2\d\d"))  # tokens per character and per byte
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=screenshots / "corpus-page.png", full_page=True)
