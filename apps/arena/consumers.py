import json

from channels.db import database_sync_to_async

from apps.arena import selectors, services
from apps.inference import realtime
from apps.system.consumers import LabConsumer

STATE_FIELDS = ("status", "stop_reason", "n_tokens", "text", "error")  # never "model": names stay hidden


class BattleConsumer(LabConsumer):
    """ws/arena/battles/<uid>/: both answers of one battle, side by side. Only the battle's owner may listen.

    On connect it joins the two generations' groups (apps/inference/realtime.py), sends each side as stored
    ({"type": "side", "side": "a", status, text, ...}), and only then sets the battle off if nobody has yet, so no
    token is missed. Then it forwards the workers' events with the side they belong to:
    {"type": "tokens", "side", "offset", "pieces": ["tok", ...]} and {"type": "state", "side", "status", ...}.
    Events are filtered to what a blind vote may see: a loading event names the model, and that is dropped.
    """

    async def connect(self):
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        battle = await database_sync_to_async(selectors.battle_get)(uid=self.scope["url_route"]["kwargs"]["uid"],
                                                                     user=user)
        if battle is None:
            await self.close(code=4403)  # someone else's battle, or none: the same answer
            return
        self.battle_id = battle.pk
        self.sides = {str(battle.generation_a.uid): "a", str(battle.generation_b.uid): "b"}
        self.groups_joined = [realtime.completion_group(battle.generation_a_id),
                              realtime.completion_group(battle.generation_b_id)]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        view = await self.send_sides(battle)
        self.started_here = await database_sync_to_async(services.battle_start)(battle=battle)
        self.finished: set[str] = {s for s in ("a", "b") if view[s]["finished"]}

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)
        if getattr(self, "started_here", False) and len(self.finished) < 2:
            await database_sync_to_async(services.battle_abandon)(battle_id=self.battle_id)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send_json({"type": "error", "message": "this socket only streams the battle; vote with the "
                                                          "buttons on the page"})

    # -- events from the workers, named after their types -----------------------------------------------------------

    async def inference_tokens(self, event):
        side = self.sides.get(event.get("generation"))
        if side:
            await self.send_json({"type": "tokens", "side": side, "offset": event["offset"],
                                  "pieces": [t.get("t", "") for t in event["tokens"]]})

    async def inference_state(self, event):
        side = self.sides.get(event.get("generation"))
        if not side:
            return
        if event["status"] in realtime.FINISHED:
            self.finished.add(side)
        await self.send_json({"type": "state", "side": side, **{k: event[k] for k in STATE_FIELDS if k in event}})

    async def rejoined(self):
        # Redis came back without its data: tokens published meanwhile are lost, so each side is sent as stored
        battle = await database_sync_to_async(selectors.battle_get)(uid=self.scope["url_route"]["kwargs"]["uid"],
                                                                     user=self.scope.get("user"))
        if battle is not None:
            await self.send_sides(battle)

    async def send_sides(self, battle) -> dict:
        view = await database_sync_to_async(selectors.battle_view)(battle)
        for side in ("a", "b"):
            await self.send_json({"type": "side", "side": side, **{k: view[side][k] for k in STATE_FIELDS}})
        return view

    async def send_json(self, data: dict):
        await self.send(text_data=json.dumps(data))
