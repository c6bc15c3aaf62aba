import asyncio
import json
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from apps.inference import realtime, selectors, services
from apps.inference.models import Generation
from apps.inference.openai import text_check
from apps.system.consumers import LabConsumer
from apps.system.limits import client_address

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 256 * 1024  # a prompt of INFERENCE_MAX_PROMPT_CHARS fits; anything larger is refused unread
MAX_RUNNING = 4  # generations one page may have running at once (compare mode needs two)


class GenerateConsumer(LabConsumer):
    """ws/inference/: the Generate page's socket. Open to everyone, like generation on published models (anonymous
    visitors are rate-limited by address); which models a user may use is checked per request.

    The page sends JSON:
        {"action": "generate", "panel": "a", "model": "<slug or id>", "mode": "completion" | "chat",
         "prompt": "...", "messages": [{"role", "content"}...], "params": {temperature, top_k, ...}}
        {"action": "branch", "panel": "a", "generation": "<uid>", "index": 5, "token": 1234}
        {"action": "stop", "generation": "<uid>"}
    and receives {"type": "created", "panel", "generation", ...}, then the worker's events as
    {"type": "tokens", "generation", "offset", "tokens": [...]} and {"type": "state", "generation", "status", ...},
    or {"type": "error", "panel", "message", "param"} for a request it refused (which then changed nothing).

    A generation is joined to this socket's groups before it is started, so no event can be missed; and it belongs
    to the socket: only the socket that started it (or its signed-in owner) may stop or branch it. When the page
    goes away, its running generations are stopped and the worker is freed.
    """

    async def connect(self):
        self.started: dict[str, int] = {}  # uid -> generation id, for generations this socket started
        self.running: set[str] = set()
        self.watchdog: asyncio.Task | None = None
        await self.accept()

    async def disconnect(self, code):
        if self.watchdog is not None:
            self.watchdog.cancel()
        for uid in list(self.running):
            await database_sync_to_async(self._stop)(self.started[uid], Generation.StopReason.DISCONNECTED)
        for gid in self.started.values():
            await self.channel_layer.group_discard(realtime.completion_group(gid), self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        panel = None
        try:
            if text_data is None or len(text_data) > MAX_MESSAGE_BYTES:
                raise services.InferenceError("send one JSON text message (at most 256 KB)")
            try:
                message = json.loads(text_data)
            except ValueError:
                raise services.InferenceError("that message is not JSON") from None
            except RecursionError:
                raise services.InferenceError("that message nests too deeply") from None
            if not isinstance(message, dict):
                raise services.InferenceError('a message is a JSON object with an "action"')
            panel = message.get("panel") if isinstance(message.get("panel"), str) else None
            text_check(message)
            action = message.get("action")
            if action == "generate":
                await self.generate(message, panel)
            elif action == "branch":
                await self.branch(message, panel)
            elif action == "stop":
                await self.stop(message)
            else:
                raise services.InferenceError('action must be "generate", "branch" or "stop"', param="action")
        except services.InferenceError as e:
            await self.send_json({"type": "error", "panel": panel, "message": str(e), "param": e.param})
        except Exception:  # a bug, not the sender's fault: keep the socket (and the page's other generations) alive
            log.exception("ws/inference/ could not handle a message")
            await self.send_json({"type": "error", "panel": panel, "param": None,
                                  "message": "the server could not handle that message (its log says why): "
                                             "try again, or reload the page"})

    # -- actions --------------------------------------------------------------------------------------------------

    async def generate(self, message: dict, panel):
        self._check_capacity()
        user = self.scope.get("user")
        generation = await database_sync_to_async(services.generation_create)(
            user=user, model_ref=message.get("model"), mode=message.get("mode") or "completion",
            prompt=message.get("prompt") or "", messages=message.get("messages"), params=message.get("params") or {},
            via="web", client=client_address(self.scope))
        await self.start(generation, panel)

    async def branch(self, message: dict, panel):
        self._check_capacity()
        parent = await self._controlled(message.get("generation"))
        generation = await database_sync_to_async(services.generation_branch)(
            parent=parent, index=message.get("index"), token_id=message.get("token"), user=self.scope.get("user"),
            client=client_address(self.scope))
        await self.start(generation, panel)

    async def stop(self, message: dict):
        generation = await self._controlled(message.get("generation"))
        await database_sync_to_async(self._stop)(generation.pk, Generation.StopReason.USER)

    async def start(self, generation: Generation, panel):
        uid = str(generation.uid)
        await self.channel_layer.group_add(realtime.completion_group(generation.pk), self.channel_name)
        self.started[uid] = generation.pk
        self.running.add(uid)
        view = await database_sync_to_async(selectors.generation_created_view)(generation)
        await self.send_json({"type": "created", "panel": panel, **view})
        await database_sync_to_async(self._start)(generation)
        if self.watchdog is None or self.watchdog.done():
            self.watchdog = asyncio.create_task(self.watch_workers())

    async def watch_workers(self):
        """While generations run: one whose worker stopped beating its heart is failed with "the worker went
        silent" (its final event then arrives like any other), within WORKER_GONE_SECONDS."""
        poll = max(0.5, settings.WORKER_HEARTBEAT_SECONDS)
        finished_unheard: dict[str, int] = {}  # uid -> rounds its row has been finished without its final event
        while self.running:
            await asyncio.sleep(poll)
            for uid in list(self.running):
                try:
                    if await database_sync_to_async(services.generation_worker_lost)(generation_id=self.started[uid]):
                        continue  # its final event is on its way through the group
                    final = await database_sync_to_async(selectors.generation_final_event)(
                        generation_id=self.started[uid])
                except Exception:  # Redis or the database away for a moment: the next round asks again
                    log.warning("could not check the worker of generation %s", uid, exc_info=True)
                    continue
                if final is None:
                    continue
                # finished in the database; two rounds without its final event means the event was lost (Redis
                # restarted and forgot this socket's groups): send it from the row
                finished_unheard[uid] = finished_unheard.get(uid, 0) + 1
                if finished_unheard[uid] >= 2 and uid in self.running:
                    await self.inference_state(final)

    # -- events from the worker, named after their types ----------------------------------------------------------

    async def inference_tokens(self, event):
        await self.send_json({**event, "type": "tokens"})

    async def inference_state(self, event):
        if event["status"] in realtime.FINISHED:
            self.running.discard(event["generation"])
        await self.send_json({**event, "type": "state"})

    # -- helpers --------------------------------------------------------------------------------------------------

    def _check_capacity(self):
        if len(self.running) >= MAX_RUNNING:
            raise services.InferenceError(f"{MAX_RUNNING} generations are running on this page already: wait for "
                                          f"one to finish or stop it")

    async def _controlled(self, uid) -> Generation:
        if not isinstance(uid, str) or not uid:
            raise services.InferenceError('"generation" must name a generation this page started', param="generation")
        generation = await database_sync_to_async(selectors.generation_by_uid)(uid)
        user = self.scope.get("user")
        mine = generation is not None and (
            uid in self.started or services.generation_may_control(generation=generation, user=user))
        if not mine:
            raise services.InferenceError("no such generation on this page", param="generation")
        return generation

    @staticmethod
    def _start(generation):
        from django.db import transaction

        with transaction.atomic():
            services.generation_start(generation=generation)

    @staticmethod
    def _stop(generation_id: int, reason: str):
        generation = Generation.objects.filter(pk=generation_id).first()
        if generation is not None and not generation.finished_state:
            services.generation_stop(generation=generation, reason=reason)

    async def send_json(self, data: dict):
        await self.send(text_data=json.dumps(data))
