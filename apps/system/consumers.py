import asyncio
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from apps.system import realtime, selectors

TICK_SECONDS = 1.0  # heartbeat ages on the page advance this often, and a silent (killed) worker turns "gone"
FORGET_AFTER_SECONDS = 300  # a gone worker disappears from the list after this long


class LabConsumer(AsyncWebsocketConsumer):
    """The base of every websocket consumer here: a Redis that restarted without its data forgot the groups, and
    the channel layer (config/channel_layer.py) joins this socket to them again, then says so with a
    "layer.rejoined" message. Events published while Redis was away are lost, so a consumer whose page would show
    a gap overrides `rejoined()` to send what the page may have missed (from the database, the source of truth)."""

    group = None  # the one group a socket that follows one thing joins; left on disconnect

    async def disconnect(self, code):
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        pass  # a socket that only sends ignores what the page says

    async def layer_rejoined(self, event):
        await self.rejoined()

    async def rejoined(self):
        pass  # nothing to repair: the next event (a heartbeat, a tick) brings the page up to date


class SystemConsumer(LabConsumer):
    """ws/system/: pushes the workers table and the health panel as htmx out-of-band fragments.

    Open to everyone, like the System page itself. It only sends: the page never needs to say anything.
    """

    async def connect(self):
        self.workers = await database_sync_to_async(selectors.worker_statuses)()
        await self.channel_layer.group_add(realtime.workers_group(), self.channel_name)
        await self.accept()
        await self.send_workers()
        self.ticker = asyncio.create_task(self.tick())

    async def disconnect(self, code):
        if ticker := getattr(self, "ticker", None):
            ticker.cancel()
        await self.channel_layer.group_discard(realtime.workers_group(), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=render_to_string("system/_notice.html", {"message": "This socket only sends updates; messages to it are ignored."}))

    async def system_heartbeat(self, event):
        status = event["worker"]
        known = self.workers.get(status["name"])
        if known is None or status["ts"] >= known["ts"]:  # events can arrive out of order: keep the newest
            self.workers[status["name"]] = status
        await self.send_workers()

    async def system_worker_gone(self, event):
        if status := self.workers.get(event["name"]):
            self.workers[event["name"]] = {**status, "stopped": True}
        await self.send_workers()

    async def tick(self):
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = time.time()
            self.workers = {n: s for n, s in self.workers.items() if now - s["ts"] < FORGET_AFTER_SECONDS}
            health = await database_sync_to_async(selectors.health)()
            await self.send_workers(health=health)

    async def send_workers(self, health=None):
        context = {"workers": selectors.worker_list(self.workers), "health": health, "oob": True}
        await self.send(text_data=render_to_string("system/_workers.html", context))
