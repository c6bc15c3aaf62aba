import json

from channels.db import database_sync_to_async

from apps.system.consumers import LabConsumer
from apps.training import realtime, selectors
from apps.training.models import Run

MAX_MESSAGE_BYTES = 1024  # the page only ever says {"type": "since", ...}


class RunConsumer(LabConsumer):
    """ws/training/runs/<id>/: one run's dashboard, for its owner (and staff).

    Forwards the worker's events as JSON ({"type": "metrics" | "sample" | "status" | "checkpoint" | "rewind" |
    "preparing" | "queue", ...}). The page draws its history from the database first, then sends
    {"type": "since", "step": S, "eval": E, "epoch": N}: the answer ("history") holds everything after step S and
    evaluation E — or everything, when the run was rewound since (epoch differs). Because the group is joined before
    that query, and workers publish only what is already in the database, the page misses nothing; rows it gets
    twice it merges by step.
    """

    async def connect(self):
        user = self.scope.get("user")
        self.run_id = self.scope["url_route"]["kwargs"]["run_id"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(self.may_view)(user):
            await self.close(code=4403)  # another user's run, or no such run: the same answer
            return
        self.groups_joined = [realtime.run_group(self.run_id), realtime.queue_group()]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
                raise ValueError("send one small JSON text message")
            message = json.loads(text_data)
            if not isinstance(message, dict) or message.get("type") != "since":
                raise ValueError('the only message this socket takes is {"type": "since", "step": …, "eval": …, '
                                 '"epoch": …}')
            step, eval_step, epoch = (_int(message.get(k, -1), k) for k in ("step", "eval", "epoch"))
        except ValueError as exc:
            await self.send_json({"type": "error", "message": f"ignored: {exc}"})
            return
        history = await database_sync_to_async(self.backfill)(step, eval_step, epoch)
        await self.send_json(history)

    async def rejoined(self):
        # Redis came back without its data: what the worker published meanwhile is lost, so the page is asked to
        # send "since" again, as after a reconnection, and gets the missing rows from the database
        await self.send_json({"type": "resync"})

    # -- events from the worker, named after their types ---------------------------------------------------------

    async def training_metrics(self, event):
        await self.forward(event)

    async def training_sample(self, event):
        await self.forward(event)

    async def training_status(self, event):
        await self.forward(event)

    async def training_checkpoint(self, event):
        await self.forward(event)

    async def training_rewind(self, event):
        await self.forward(event)

    async def training_preparing(self, event):
        await self.forward(event)

    async def training_rollout(self, event):
        await self.forward(event)

    async def training_queue(self, event):
        queue = await database_sync_to_async(self.queue_position)()
        if queue is not None:
            await self.send_json({"type": "queue", **queue})

    # -- helpers --------------------------------------------------------------------------------------------------

    async def forward(self, event):
        await self.send_json({**event, "type": event["type"].split(".", 1)[1]})

    async def send_json(self, data):
        await self.send(text_data=json.dumps(data, separators=(",", ":")))

    def may_view(self, user) -> bool:
        try:
            run = selectors.run_get(run_id=self.run_id, user=user)
        except selectors.RunNotFound:
            return False
        return selectors.run_may_view(run=run, user=user)

    def backfill(self, step: int, eval_step: int, epoch: int) -> dict:
        run = Run.objects.get(pk=self.run_id)
        reset = epoch != run.epoch
        history = selectors.run_history(run=run, after_step=-1 if reset else step,
                                        after_eval=-1 if reset else eval_step)
        return {"type": "history", "reset": reset, **history, "progress": selectors.run_progress(run=run),
                "status": run.status, "queue": selectors.run_queue_position(run=run)}

    def queue_position(self) -> dict | None:
        run = Run.objects.filter(pk=self.run_id).first()
        return selectors.run_queue_position(run=run) if run is not None else None


def _int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value < 2**53:
        raise ValueError(f"{name} must be an integer >= -1, got {str(value)[:30]!r}")
    return value


class SweepConsumer(LabConsumer):
    """ws/training/sweeps/<id>/: a sweep's page, for its owner (and staff). Forwards {"type": "sweep", "run",
    "status"} whenever one of its runs changes status; the page then fetches the refitted results over HTTP (a
    dropped message costs only a late redraw: the next one, or a reload, catches up). It takes no messages."""

    async def connect(self):
        user = self.scope.get("user")
        self.sweep_id = self.scope["url_route"]["kwargs"]["sweep_id"]
        if user is None or not user.is_authenticated:
            await self.close(code=4401)
            return
        if not await database_sync_to_async(self.may_view)(user):
            await self.close(code=4403)
            return
        self.group = realtime.sweep_group(self.sweep_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def rejoined(self):
        await self.send_json({"type": "sweep"})  # a run may have finished while Redis was away: refit

    async def send_json(self, data):
        await self.send(text_data=json.dumps(data, separators=(",", ":")))

    async def training_sweep(self, event):
        await self.send_json({**event, "type": "sweep"})

    def may_view(self, user) -> bool:
        from apps.training.sweeps import SweepNotFound, sweep_get

        try:
            sweep_get(sweep_id=self.sweep_id, user=user)
        except SweepNotFound:
            return False
        return True
