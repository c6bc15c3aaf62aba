"""A scaling sweep from the browser: the grid is previewed as the form changes, the launch queues ordinary runs that
a real train worker trains, and the sweep page fills in (table, iso-FLOP chart) as they finish."""

import re

import pytest
from playwright.sync_api import expect

from apps.training.models import Run, Sweep
from tests.data_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import *  # noqa: F401,F403
from tests.training_fixtures import train_worker
from workers.gpt.scaling import TINY_PRESET

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def sign_in(page, url, user):
    page.goto(url + "/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "analytical-engine-1843")
    page.get_by_role("button", name="Sign in").click()


def test_a_tiny_sweep_is_previewed_launched_and_trained(page, processes, screenshots, user, no_enqueue,
                                                         tiny_corpus, char_tok, encoded):
    url = processes.asgi_server()
    train_worker(processes, "train@sweep")
    errors = []
    page.on("pageerror", lambda e: errors.append(f"{e}\n{e.stack}"))
    sign_in(page, url, user)
    page.goto(url + "/training/")
    page.get_by_role("link", name="Scaling sweep").click()
    page.select_option("#id_corpus", label="Tiny")
    page.select_option("#id_tokenizer", label="tiny-char")
    page.select_option("#id_preset", TINY_PRESET.key)
    page.fill("#id_budgets", "1e6")
    expect(page.locator("#sweep-grid .errors")).to_contain_text("raise the budget")
    page.fill("#id_budgets", "3e8")
    page.fill("#id_per_budget", "3")
    rows = page.locator("#sweep-grid tbody tr")
    expect(rows).to_have_count(3)
    expect(page.locator("#sweep-grid")).to_contain_text("3 runs: 1 budget(s) × 3 sizes")
    page.screenshot(path=screenshots / "sweep-new.png", full_page=True)
    page.get_by_role("button", name="Launch the sweep").click()
    expect(page).to_have_url(re.compile(r"/training/sweeps/\d+/$"))
    sweep = Sweep.objects.get()
    assert sweep.runs.count() == 3 and all(r.kind == Run.Kind.PRETRAIN for r in sweep.runs.all())
    # the page follows the runs over its socket, without a reload
    expect(page.locator(".sweep-status")).to_contain_text("3 of 3 runs finished", timeout=240_000)
    expect(page.locator("#chart-isoflop canvas")).to_have_count(1)
    expect(page.locator(".sweep-problems")).to_contain_text("the power laws need 3 budgets")
    page.screenshot(path=screenshots / "sweep-page-tiny.png", full_page=True)
    assert not errors, errors
