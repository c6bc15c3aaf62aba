from channels.db import database_sync_to_async
from django.template.loader import render_to_string

from apps.corpora import realtime, selectors
from apps.corpora.models import Corpus
from apps.system.consumers import LabConsumer


class CorpusConsumer(LabConsumer):
    """ws/corpora/corpus/<id>/: the corpus's token-shard jobs, each row an htmx out-of-band fragment (#shards-<id>).

    Only someone who may see the corpus joins its group. On connect every job still under way is sent, so a page
    opened (or reconnected) mid-job shows where it is now; then every event re-renders its row. After Redis restarted
    (its events meanwhile lost) every row is sent again, so a job that ended in the outage shows how it ended."""

    async def connect(self):
        self.corpus_id = int(self.scope["url_route"]["kwargs"]["corpus_id"])
        active = await database_sync_to_async(self._visible_shards)(active_only=True)
        if active is None:
            await self.close(code=4404)
            return
        self.group = realtime.corpus_group(self.corpus_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        for shards in active:
            await self.send_row(shards)

    def _visible_shards(self, *, active_only: bool):
        corpus = Corpus.objects.visible_to(self.scope.get("user")).filter(id=self.corpus_id).first()
        if corpus is None:
            return None
        return [selectors.shards_view(s) for s in selectors.shards_list(corpus=corpus)
                if not active_only or s.status in ("queued", "running")]

    async def rejoined(self):
        # Redis came back without its data: a job may have moved on, or ended, while its events were lost
        for shards in await database_sync_to_async(self._visible_shards)(active_only=False) or []:
            await self.send_row(shards)

    async def corpora_shards_progress(self, event):
        await self.send_row(event["shards"])

    async def corpora_shards_state(self, event):
        await self.send_row(event["shards"])

    async def send_row(self, shards: dict):
        user = self.scope.get("user")
        context = {"s": shards, "oob": True, "user_id": getattr(user, "id", None),
                   "is_staff": getattr(user, "is_staff", False)}
        await self.send(text_data=render_to_string("corpora/_shards_row.html", context))
