from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from apps.system.consumers import LabConsumer
from apps.tokenization import realtime, selectors
from apps.tokenization.models import Tokenizer


class TokenizerConsumer(LabConsumer):
    """ws/tokenization/tokenizer/<id>/: a training job's progress as an htmx out-of-band fragment (#training).

    Only someone who may see the tokenizer joins its group; the current state is sent on connect, so a page opened
    mid-training (or reconnecting after a dropped event) is right at once."""

    async def connect(self):
        self.tokenizer_id = int(self.scope["url_route"]["kwargs"]["tokenizer_id"])
        view = await database_sync_to_async(self._visible_view)()
        if view is None:
            await self.close(code=4404)
            return
        self.group = realtime.tokenizer_group(self.tokenizer_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_state(view)

    def _visible_view(self):
        row = Tokenizer.objects.visible_to(self.scope.get("user")).filter(id=self.tokenizer_id).first()
        return selectors.tokenizer_view(row) if row else None

    async def rejoined(self):
        if view := await database_sync_to_async(self._visible_view)():
            await self.send_state(view)  # the state now: events published while Redis was away are lost

    async def tokenization_training_progress(self, event):
        await self.send_state(event["tokenizer"])

    async def tokenization_training_state(self, event):
        await self.send_state(event["tokenizer"])

    async def send_state(self, view: dict):
        await self.send(text_data=render_to_string("tokenization/_training.html", {"view": view, "oob": True}))
