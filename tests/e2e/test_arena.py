"""The arena in Chromium, against a real daphne and a real infer worker: a signed-in user writes a prompt, two
blind answers stream side by side, the vote opens when both are done, a vote reveals the names, and the
leaderboard shows the ratings."""

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect

from apps.arena.models import Vote
from tests.apps.registry.factories import make_model

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

PASSWORD = "analytical-engine-1843"


@pytest.fixture
def site(processes):
    url = processes.asgi_server()
    processes.worker("infer", "infer@arena")
    return url


def test_a_battle_streams_two_blind_answers_and_a_vote_reveals_them(page, site, tmp_path, screenshots):
    for name in ("Tiny Alpha", "Tiny Beta"):
        (tmp_path / name).mkdir()
        make_model(tmp_path / name, name=name, n_embd=64, ctx=64)
    User.objects.create_user("ada", password=PASSWORD)
    page.goto(site + "/accounts/login/?next=/arena/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#prompt")).to_be_visible()

    page.fill("#prompt", "First Citizen:")
    page.click("#battle-start")
    for side in ("a", "b"):
        expect(page.locator(f"#side-{side} [data-status]")).to_have_text("done", timeout=90_000)
        assert page.locator(f"#side-{side} [data-text]").inner_text().strip()
    assert page.locator("[data-name]").count() == 0  # names hidden until the vote
    expect(page.locator('#vote button[value="a"]')).to_be_enabled()
    page.screenshot(path=screenshots / "arena-battle.png", full_page=True)

    page.click('#vote button[value="a"]')
    expect(page.locator("#vote-result")).to_contain_text("You voted: A is better")
    names = sorted(page.locator("[data-name]").all_inner_texts())
    assert names == ["Tiny Alpha", "Tiny Beta"]
    assert Vote.objects.get().choice == "a"

    page.goto(site + "/arena/leaderboard/")
    expect(page.locator("#ratings tbody tr")).to_have_count(2)
    expect(page.locator("#leaderboard")).to_contain_text("1 vote from 1 battle")
    page.screenshot(path=screenshots / "arena-leaderboard.png", full_page=True)
