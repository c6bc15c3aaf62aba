"""Every page on a 390 px phone: nothing scrolls sideways, nothing sticks out past the screen's edge, and the menu
button opens a list that reaches every page of the navigation."""

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from apps.system.context_processors import NAV
from tests.data_fixtures import *  # noqa: F401,F403
from tests.every_page import PAGES as EVERY_PAGE, every_page_rows

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

PHONE = {"width": 390, "height": 844}

# Every page (tests/every_page.py, shared with the Chinese check), as a function of the rows the test made.
PAGES = {name: url for name, url in EVERY_PAGE.items() if name not in ("login", "signup")}  # signed-in: redirects

# What sticks out past the right (or left) edge, outside any box that scrolls or clips on purpose (a wide table in
# its scrolling wrapper is fine; a paragraph half off the screen is not).
CUT_OFF = """() => {
  const W = document.documentElement.clientWidth, out = [];
  for (const el of document.body.querySelectorAll("*")) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || (r.right <= W + 1 && r.left >= -1)) continue;
    let p = el.parentElement, contained = false;
    for (; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX !== "visible") { contained = true; break; }
    }
    if (contained || getComputedStyle(el).position === "fixed" || el.closest("[hidden], .sr-only, template")) continue;
    out.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${el.className} [${Math.round(r.left)}, ${Math.round(r.right)}]`);
  }
  return out.slice(0, 8);
}"""


@pytest.fixture
def rows(user, tmp_path):
    user.is_staff = True  # staff see every page (the import page) and every control
    user.save()
    return every_page_rows(user, tmp_path)


def signed_in_phone(browser, url, user, *, sign_in="Sign in", **options):
    """A 390 px touch screen with `user` signed in through the form (its button reads `sign_in`)."""
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True, **options)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "analytical-engine-1843")
    page.get_by_role("button", name=sign_in).click()
    expect(page.locator(".who")).to_contain_text(user.username)
    return context, page


@pytest.fixture
def phone(browser, processes, user):
    url = processes.asgi_server()
    context, page = signed_in_phone(browser, url, user)
    yield page, url
    context.close()


def misfits(page, name) -> list[str]:
    """What is wrong with the open page at 390 px: sideways scroll, or elements past the screen's edge."""
    scroll_width, inner_width = page.evaluate("[document.scrollingElement.scrollWidth, innerWidth]")
    if scroll_width > inner_width:
        return [f"{name} scrolls sideways at 390 px: {scroll_width} > {inner_width}"]
    return [f"{name}: {what} sticks out past the screen's edge" for what in page.evaluate(CUT_OFF)]


@pytest.mark.parametrize("name", list(PAGES))
def test_the_page_fits_a_phone_without_sideways_scrolling(phone, rows, name, screenshots):
    page, url = phone
    response = page.goto(url + PAGES[name](rows))
    assert response.status == 200, f"{name}: {response.status}"
    page.wait_for_load_state("load")
    assert misfits(page, name) == []
    page.screenshot(path=screenshots / f"phone-{name}.png", full_page=True)


@pytest.mark.parametrize("name", ["login", "signup"])
def test_the_sign_in_pages_fit_a_phone(browser, processes, name, screenshots):
    url = processes.asgi_server()
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(url + EVERY_PAGE[name]({}))
    assert misfits(page, name) == []
    page.screenshot(path=screenshots / f"phone-{name}.png", full_page=True)
    context.close()


def test_every_page_fits_a_phone_in_chinese(browser, processes, user, rows, screenshots):
    """Chinese lines break differently and its words are shorter or longer than English ones: every page again, in
    zh-hans (Accept-Language), with Noto CJK for the glyphs (Debian's fonts-noto-cjk; see the screenshots)."""
    url = processes.asgi_server()
    context, page = signed_in_phone(browser, url, user, sign_in="登录", locale="zh-CN",
                                    extra_http_headers={"Accept-Language": "zh-hans"})
    problems = []
    for name, path in PAGES.items():
        response = page.goto(url + path(rows))
        assert response.status == 200, f"{name}: {response.status}"
        assert page.evaluate("document.documentElement.lang") == "zh-hans", name
        problems += misfits(page, name)
        page.screenshot(path=screenshots / f"phone-zh-{name}.png", full_page=True)
    context.close()
    assert problems == []


def test_the_menu_button_reaches_every_page(phone):
    page, url = phone
    page.goto(url + "/")
    links = page.locator("#main-nav a")
    expect(links.first).to_be_hidden()  # folded behind the button until asked
    for key, label, url_name in NAV:
        page.get_by_role("button", name="Menu").click()
        expect(page.locator("#menu-button")).to_have_attribute("aria-expanded", "true")
        link = page.locator(f'#main-nav a[data-nav="{key}"]')
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"{label} is cut off in the menu"
        link.click()
        expect(page).to_have_url(url + reverse(url_name))
        expect(page.locator(f'#main-nav a[data-nav="{key}"]')).to_have_attribute("aria-current", "page")
        expect(links.first).to_be_hidden()  # a new page starts with the menu folded


def test_generate_puts_the_prompt_and_button_above_the_folded_settings_on_a_phone(phone, rows):
    page, url = phone
    page.goto(url + PAGES["generate"](rows))
    prompt = page.locator("#prompt").bounding_box()
    go = page.locator("#go").bounding_box()
    assert go["y"] + go["height"] < PHONE["height"], "Generate is on the first screen"
    assert prompt["y"] < page.locator("#settings").bounding_box()["y"], "the prompt comes before the settings"
    expect(page.locator("#temperature")).to_be_hidden()
    page.locator("#gen-more > summary").click()
    expect(page.locator("#temperature")).to_be_visible()
