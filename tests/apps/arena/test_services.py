"""The arena's rules: who may battle and vote, when, and how often; the pairing keeps like with like."""

import random

import pytest
from django.contrib.auth.models import AnonymousUser

from apps.arena import selectors, services
from apps.arena.models import Battle, Vote
from apps.arena.services import ArenaError
from apps.inference.models import Generation
from apps.registry.models import Model
from tests.apps.arena.conftest import finish, make_base, make_chat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def test_a_battle_pairs_two_different_chat_models_and_queues_nothing_until_started(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="  Say hello  ")
    assert {battle.model_a.name, battle.model_b.name} == {"Alpha", "Beta"}
    assert battle.prompt == "Say hello" and battle.mode == "chat"
    for g, m in ((battle.generation_a, battle.model_a), (battle.generation_b, battle.model_b)):
        assert g.model == m and g.mode == "chat" and g.messages == [{"role": "user", "content": "Say hello"}]
        assert g.user == alice and g.via == "arena" and g.params == battle.generation_a.params
    assert queued == []
    assert services.battle_start(battle=battle) is True
    assert sorted(queued) == sorted([battle.generation_a_id, battle.generation_b_id])
    assert services.battle_start(battle=battle) is False and len(queued) == 2  # a second socket starts nothing


def test_base_models_battle_base_models_and_continue_the_text(tmp_path, alice, queued):
    make_chat(tmp_path, "Chatty")  # the only chat model: no chat pair
    make_base(tmp_path, "Base1")
    make_base(tmp_path, "Base2")
    make_base(tmp_path, "Draft", status=Model.Status.DRAFT)  # not published: never drawn
    for seed in range(6):
        battle = services.battle_create(user=alice, prompt="Once upon a time", rng=random.Random(seed))
        assert {battle.model_a.name, battle.model_b.name} == {"Base1", "Base2"}
        assert battle.mode == "completion" and battle.generation_a.prompt == "Once upon a time"
        finish(battle)


def test_the_order_of_the_two_models_is_random(chat_models, alice, queued):
    firsts = set()
    for seed in range(8):
        battle = services.battle_create(user=alice, prompt="hi", rng=random.Random(seed))
        firsts.add(battle.model_a.name)
        finish(battle)
    assert firsts == {"Alpha", "Beta"}


def test_fewer_than_two_models_of_a_kind_is_a_clear_refusal(tmp_path, alice, queued):
    make_chat(tmp_path, "Chatty")
    make_base(tmp_path, "Base1")
    with pytest.raises(ArenaError, match="two published models of the same kind") as e:
        services.battle_create(user=alice, prompt="hi")
    assert e.value.status == 409 and not Battle.objects.exists() and not Generation.objects.exists()


@pytest.mark.parametrize("prompt,words", [("", "empty"), ("   ", "empty"), (None, "empty"),
                                          ("x" * (services.MAX_PROMPT_CHARS + 1), "at most")])
def test_bad_prompts_are_refused_and_change_nothing(chat_models, alice, queued, prompt, words):
    with pytest.raises(ArenaError, match=words) as e:
        services.battle_create(user=alice, prompt=prompt)
    assert e.value.status == 400 and not Battle.objects.exists() and not Generation.objects.exists()


def test_anonymous_users_may_not_battle_or_vote(chat_models, alice, queued):
    with pytest.raises(ArenaError, match="Sign in") as e:
        services.battle_create(user=AnonymousUser(), prompt="hi")
    assert e.value.status == 403
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    with pytest.raises(ArenaError, match="Sign in"):
        services.vote_create(battle=battle, user=AnonymousUser(), choice="a")
    assert not Vote.objects.exists()


def test_a_user_may_not_have_more_than_two_battles_answering(chat_models, alice, queued):
    first = services.battle_create(user=alice, prompt="one")
    services.battle_create(user=alice, prompt="two")
    with pytest.raises(ArenaError, match="still answering") as e:
        services.battle_create(user=alice, prompt="three")
    assert e.value.status == 429 and Battle.objects.count() == 2
    finish(first)
    services.battle_create(user=alice, prompt="three")


def test_a_vote_is_recorded_once_and_reveals_the_names(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    assert "model" not in selectors.battle_view(battle)["a"]
    vote = services.vote_create(battle=battle, user=alice, choice="tie")
    assert vote.choice == "tie" and vote.user == alice
    view = selectors.battle_view(battle)
    assert view["a"]["model"] == battle.model_a.name and view["b"]["model"] == battle.model_b.name


def test_a_second_vote_is_refused(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    services.vote_create(battle=battle, user=alice, choice="a")
    with pytest.raises(ArenaError, match="voted on this battle already") as e:
        services.vote_create(battle=battle, user=alice, choice="b")
    assert e.value.status == 409 and Vote.objects.get().choice == "a"


def test_a_vote_on_someone_elses_battle_is_refused(chat_models, alice, bob, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    with pytest.raises(ArenaError, match="someone else's") as e:
        services.vote_create(battle=battle, user=bob, choice="a")
    assert e.value.status == 403 and not Vote.objects.exists()


def test_a_vote_before_both_answers_finished_is_refused(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    services.battle_start(battle=battle)
    with pytest.raises(ArenaError, match="Wait until both answers") as e:
        services.vote_create(battle=battle, user=alice, choice="a")
    assert e.value.status == 409
    services_finish_one = battle.generation_a
    Generation.objects.filter(pk=services_finish_one.pk).update(status="done")
    with pytest.raises(ArenaError, match="Wait until both answers"):
        services.vote_create(battle=battle, user=alice, choice="a")
    assert not Vote.objects.exists()


def test_a_battle_whose_answer_failed_cannot_be_judged(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle, b="failed")
    with pytest.raises(ArenaError, match="Answer B did not complete"):
        services.vote_create(battle=battle, user=alice, choice="a")


@pytest.mark.parametrize("choice", ["c", "", None, "A", 1])
def test_an_unknown_choice_is_refused(chat_models, alice, queued, choice):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    with pytest.raises(ArenaError, match="choice must be one of") as e:
        services.vote_create(battle=battle, user=alice, choice=choice)
    assert e.value.status == 400 and not Vote.objects.exists()


def test_removing_a_users_votes_changes_the_leaderboard(chat_models, alice, bob, queued):
    for user, choice in ((alice, "a"), (alice, "a"), (bob, "b")):
        battle = services.battle_create(user=user, prompt="hi", rng=random.Random(0))
        finish(battle)
        services.vote_create(battle=battle, user=user, choice=choice)
    board = selectors.leaderboard()
    assert board["votes"] == 3 and sum(r["battles"] for r in board["ratings"]) == 6
    assert services.votes_remove(users=[alice]) == 2
    board = selectors.leaderboard()
    assert board["votes"] == 1 and [r["battles"] for r in board["ratings"]] == [1, 1]


def test_the_leaderboard_rates_the_model_that_wins(chat_models, alice, queued):
    for seed in range(6):
        battle = services.battle_create(user=alice, prompt="hi", rng=random.Random(seed))
        finish(battle)
        services.vote_create(battle=battle, user=alice, choice="a" if battle.model_a.name == "Alpha" else "b")
    board = selectors.leaderboard()
    assert [r["model"] for r in board["ratings"]] == ["Alpha", "Beta"]
    top = board["ratings"][0]
    assert top["wins"] == 6 and top["low"] <= top["rating"] <= top["high"]
    assert board["matrix"][0]["cells"][1] == {"rate": 1.0, "n": 6, "opponent": "Beta"}


def test_the_vote_log_has_one_line_per_vote(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    finish(battle)
    services.vote_create(battle=battle, user=alice, choice="both_bad")
    [row] = list(selectors.vote_log())
    assert row["battle"] == str(battle.uid) and row["choice"] == "both_bad" and row["winner"] == "tie"
    assert row["user"] == "alice" and {row["model_a"], row["model_b"]} == {"Alpha", "Beta"}
