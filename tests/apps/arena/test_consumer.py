"""ws/arena/battles/<uid>/: only the owner listens; it gets both sides as stored, then sets the battle off, then
the workers' events per side, with nothing that names a model."""

import json

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser, User

from apps.arena import services
from apps.arena.consumers import BattleConsumer
from apps.arena.models import Battle
from apps.inference import realtime
from apps.inference.models import Generation
from tests.conftest import run_async

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("redis_clean")]


def communicator_for(battle, user):
    c = WebsocketCommunicator(BattleConsumer.as_asgi(), f"/ws/arena/battles/{battle.uid}/")
    c.scope["user"] = user
    c.scope["url_route"] = {"kwargs": {"uid": battle.uid}}
    return c


def test_the_owner_gets_both_sides_then_live_events_without_model_names(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    ga, gb = battle.generation_a, battle.generation_b

    async def scenario():
        c = communicator_for(battle, alice)
        connected, _ = await c.connect()
        assert connected
        first = [json.loads(await c.receive_from(timeout=10)) for _ in range(2)]
        layer = get_channel_layer()
        await layer.group_send(realtime.completion_group(ga.pk),
                               realtime.state_event(str(ga.uid), status=realtime.LOADING, model="Alpha"))
        await layer.group_send(realtime.completion_group(gb.pk), realtime.tokens_event(
            str(gb.uid), offset=0, tokens=[{"i": 0, "id": 5, "t": "Hel", "p": 0.5}, {"i": 1, "id": 6, "t": "lo"}]))
        await layer.group_send(realtime.completion_group(gb.pk), realtime.state_event(
            str(gb.uid), status="done", stop_reason="eos", n_tokens=2, text="Hello", stats={}, notes=[], error=""))
        later = [json.loads(await c.receive_from(timeout=10)) for _ in range(3)]
        await c.disconnect()
        return first, later

    first, later = run_async(scenario())
    assert [(m["type"], m["side"], m["status"]) for m in first] == [("side", "a", "queued"), ("side", "b", "queued")]
    assert sorted(queued) == sorted([ga.pk, gb.pk])  # started after the socket joined
    assert Battle.objects.get().started is not None
    loading, tokens, state = later
    assert loading == {"type": "state", "side": "a", "status": "loading"}  # the model's name was dropped
    assert tokens == {"type": "tokens", "side": "b", "offset": 0, "pieces": ["Hel", "lo"]}
    assert state["side"] == "b" and state["status"] == "done" and state["text"] == "Hello"
    assert "Alpha" not in json.dumps(later) and "Beta" not in json.dumps(later)
    # the page went away mid-answer: A (still queued) is stopped, to free the workers
    assert Generation.objects.get(pk=ga.pk).status == "stopped"


def test_strangers_and_anonymous_visitors_are_turned_away(chat_models, alice, queued):
    battle = services.battle_create(user=alice, prompt="hi")
    eve = User.objects.create_user("eve", password="pw-eve-123")

    async def attempt(user):
        c = communicator_for(battle, user)
        connected, code = await c.connect()
        return connected, code

    assert run_async(attempt(AnonymousUser())) == (False, 4401)
    assert run_async(attempt(eve)) == (False, 4403)
    assert queued == [] and Battle.objects.get().started is None
