import os
import signal

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def test_a_visitor_walks_from_the_home_page_through_the_navigation(page, processes, screenshots):
    url = processes.asgi_server()
    page.goto(url + "/")
    expect(page.locator(".journey .step")).to_have_count(5)  # four steps and the explorer
    page.screenshot(path=screenshots / "home.png", full_page=True)
    page.get_by_role("link", name="Tokenizers", exact=True).click()
    expect(page).to_have_url(url + "/tokenizers/")
    expect(page.locator("nav a.active")).to_have_text("Tokenizers")
    expect(page.locator("h1")).to_have_text("Tokenizer playground")
    page.goto(url + "/")
    page.locator("#step-training a").click()
    expect(page.locator("h1")).to_have_text("Training")


def test_sign_up_sign_out_and_sign_in_again(page, processes):
    url = processes.asgi_server()
    page.goto(url + "/")
    page.get_by_role("link", name="Sign up").click()
    page.fill("#id_username", "grace")
    page.fill("#id_password1", "cobol-compiler-1959")
    page.fill("#id_password2", "cobol-compiler-1959x")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".errors")).to_contain_text("match")
    assert not User.objects.filter(username="grace").exists()
    page.fill("#id_password1", "cobol-compiler-1959")
    page.fill("#id_password2", "cobol-compiler-1959")
    page.get_by_role("button", name="Create account").click()
    expect(page.locator(".who")).to_contain_text("grace")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("link", name="Sign in").click()
    page.fill("#id_username", "grace")
    page.fill("#id_password", "cobol-compiler-1959")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".who")).to_contain_text("grace")


def test_system_page_shows_workers_live_a_killed_one_gone_and_a_restarted_one_back(page, processes, screenshots):
    url = processes.asgi_server()
    page.goto(url + "/system/")
    expect(page.locator("#connection")).to_have_text("live")
    expect(page.get_by_text("No worker has reported in")).to_be_visible()
    train = processes.worker("train", "train@browser")
    processes.worker("infer", "infer@browser")
    expect(page.locator('tr[data-worker="train@browser"]')).to_have_attribute("data-state", "live", timeout=60_000)
    expect(page.locator('tr[data-worker="infer@browser"]')).to_have_attribute("data-state", "live", timeout=60_000)
    expect(page.locator("#health li.ok")).to_have_count(2)
    page.screenshot(path=screenshots / "system-live.png", full_page=True)
    os.killpg(train.pid, signal.SIGKILL)
    expect(page.locator('tr[data-worker="train@browser"]')).to_have_attribute(
        "data-state", "gone", timeout=(settings.WORKER_GONE_SECONDS + 5) * 1000
    )
    expect(page.locator('tr[data-worker="infer@browser"]')).to_have_attribute("data-state", "live")
    page.screenshot(path=screenshots / "system-gone.png", full_page=True)
    processes.worker("train", "train@browser")  # restarting the killed worker brings it back
    expect(page.locator('tr[data-worker="train@browser"]')).to_have_attribute("data-state", "live", timeout=60_000)


def test_narrow_screens_keep_the_navigation_usable(browser, processes):
    url = processes.asgi_server()
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    page.goto(url + "/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"page scrolls sideways on a phone ({width}px)"
    page.get_by_role("button", name="Menu").click()  # the links fold behind a menu button on a phone
    page.locator("nav a", has_text="System").click()
    expect(page.locator("h1")).to_have_text("System")
    context.close()
