"""The arena's pages: what anonymous visitors see, what bad requests get (a 4xx with its message, nothing changed),
and the battle → vote → names revealed flow as the browser's htmx requests make it."""

import json

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.arena import services
from apps.arena.models import Battle, Vote
from apps.inference.models import Generation
from tests.apps.arena.conftest import finish, make_chat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def signed_in(client, alice):
    client.force_login(alice)
    return client


def test_anonymous_visitors_get_a_sign_in_prompt_and_their_posts_are_refused(client, chat_models, queued):
    page = client.get(reverse("arena:page"))
    assert page.status_code == 200 and b'id="arena-signin"' in page.content and b'name="prompt"' not in page.content
    response = client.post(reverse("arena:battle_create"), {"prompt": "hi"}, **HTMX)
    assert response.status_code == 403 and b"Sign in" in response.content
    assert not Battle.objects.exists()


def test_the_nav_links_the_arena(client, db):
    assert b'data-nav="arena"' in client.get(reverse("system:home")).content


def test_too_few_models_shows_a_message_not_an_error(signed_in, tmp_path):
    make_chat(tmp_path, "Lonely")
    page = signed_in.get(reverse("arena:page"))
    assert page.status_code == 200 and b"two published models of the same kind" in page.content
    response = signed_in.post(reverse("arena:battle_create"), {"prompt": "hi"}, **HTMX)
    assert response.status_code == 409 and b"Publish another" in response.content


@pytest.mark.parametrize("prompt,status,words", [("", 400, b"empty"),
                                                 ("x" * (services.MAX_PROMPT_CHARS + 5), 400, b"at most")])
def test_bad_prompts_get_a_4xx_with_the_message(signed_in, chat_models, queued, prompt, status, words):
    response = signed_in.post(reverse("arena:battle_create"), {"prompt": prompt}, **HTMX)
    assert response.status_code == status and words in response.content
    assert not Battle.objects.exists() and not Generation.objects.exists()


def test_a_battle_streams_blind_then_a_vote_reveals_the_names(signed_in, chat_models, queued, alice):
    response = signed_in.post(reverse("arena:battle_create"), {"prompt": "Say hi"}, **HTMX)
    assert response.status_code == 200
    battle = Battle.objects.get()
    html = response.content.decode()
    assert f'data-ws="/ws/arena/battles/{battle.uid}/"' in html
    assert "Alpha" not in html and "Beta" not in html  # names hidden
    assert html.count("data-vote disabled") == 4  # every vote button, until both answers are in
    finish(battle)
    page = signed_in.get(reverse("arena:battle", args=[battle.uid]))
    assert b"answer A" in page.content and b"answer B" in page.content and b"data-vote disabled" not in page.content
    assert b"Alpha" not in page.content
    voted = signed_in.post(reverse("arena:vote", args=[battle.uid]), {"choice": "b"}, **HTMX)
    assert voted.status_code == 200 and b"You voted" in voted.content
    assert battle.model_a.name.encode() in voted.content and battle.model_b.name.encode() in voted.content
    assert Vote.objects.get().choice == "b"
    again = signed_in.post(reverse("arena:vote", args=[battle.uid]), {"choice": "a"}, **HTMX)
    assert again.status_code == 409 and b"already" in again.content and Vote.objects.get().choice == "b"


def test_a_plain_form_post_redirects_to_the_battle_page(signed_in, chat_models, queued):
    response = signed_in.post(reverse("arena:battle_create"), {"prompt": "Say hi"})
    battle = Battle.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("arena:battle", args=[battle.uid])


def test_vote_refusals_are_4xx_with_their_message(signed_in, client, chat_models, queued, alice):
    battle = services.battle_create(user=alice, prompt="hi")
    url = reverse("arena:vote", args=[battle.uid])
    early = signed_in.post(url, {"choice": "a"}, **HTMX)
    assert early.status_code == 409 and b"Wait until both answers" in early.content
    finish(battle)
    unknown = signed_in.post(url, {"choice": "maybe"}, **HTMX)
    assert unknown.status_code == 400 and b"choice must be one of" in unknown.content
    missing = signed_in.post(reverse("arena:vote", args=["00000000-0000-0000-0000-000000000000"]), {"choice": "a"},
                             **HTMX)
    assert missing.status_code == 404 and b"No such battle" in missing.content
    bob = User.objects.create_user("bob2", password="pw-bob-123")
    client.force_login(bob)
    theirs = client.post(url, {"choice": "a"}, **HTMX)
    assert theirs.status_code == 403 and b"someone else" in theirs.content
    assert battle.model_a.name.encode() not in theirs.content  # refusing does not reveal the names
    assert not Vote.objects.exists()


def test_someone_elses_battle_page_is_not_found(client, chat_models, queued, alice):
    battle = services.battle_create(user=alice, prompt="hi")
    client.force_login(User.objects.create_user("eve", password="pw-eve-123"))
    assert client.get(reverse("arena:battle", args=[battle.uid])).status_code == 404


def test_the_leaderboard_shows_ratings_intervals_and_win_rates(client, chat_models, queued, alice):
    assert b"No votes yet" in client.get(reverse("arena:leaderboard")).content
    for _ in range(2):
        battle = services.battle_create(user=alice, prompt="hi")
        finish(battle)
        services.vote_create(battle=battle, user=alice, choice="a")
    page = client.get(reverse("arena:leaderboard"))
    html = page.content.decode()
    assert page.status_code == 200 and 'id="ratings"' in html and 'id="win-rates"' in html
    assert "Alpha" in html and "Beta" in html and "2 votes from 2 battles" in html
    fragment = client.get(reverse("arena:leaderboard"), **HTMX)
    assert fragment.content.decode().lstrip().startswith('<div id="leaderboard"')


def test_the_vote_log_is_jsonl_for_staff_only(client, chat_models, queued, alice):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    services.vote_create(battle=battle, user=alice, choice="tie")
    url = reverse("arena:votes_export")
    client.force_login(alice)
    assert client.get(url).status_code == 302  # to the admin's sign-in
    client.force_login(User.objects.create_user("staff", password="pw-staff-123", is_staff=True))
    response = client.get(url)
    assert response.status_code == 200 and response["Content-Type"].startswith("application/x-ndjson")
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert [json.loads(line)["choice"] for line in lines] == ["tie"]


def test_staff_remove_a_users_votes_from_the_admin(client, chat_models, queued, alice, bob):
    for user in (alice, alice, bob):
        battle = services.battle_create(user=user, prompt="hi")
        finish(battle)
        services.vote_create(battle=battle, user=user, choice="a")
    client.force_login(User.objects.create_superuser("root", password="pw-root-123"))
    one_of_alices = Vote.objects.filter(user=alice).first()
    response = client.post(reverse("admin:arena_vote_changelist"),
                           {"action": "remove_users_votes", "_selected_action": [one_of_alices.pk]}, follow=True)
    assert response.status_code == 200 and b"Removed 2 vote(s) of alice" in response.content
    assert list(Vote.objects.values_list("user__username", flat=True)) == ["bob"]
