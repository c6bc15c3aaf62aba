"""Waiting for a generation's events on the channel layer, for the API's views (api.py).

The view joins the generation's group on a private channel before the worker starts, so nothing is missed, then reads
`generation_events`: the worker's events, normalised to four kinds, which both the JSON answer and the server-sent
events render. A worker that stops sending heartbeats is noticed here (`next_event`), not left to hang a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import RedisError

from apps.inference import realtime, selectors, services
from apps.inference.models import Generation
from apps.inference.openai import Result

log = logging.getLogger(__name__)


class Listener:
    """A private channel in the generation's group: the worker's events, in order, with timeouts."""

    def __init__(self, generation_id: int):
        self.generation_id = generation_id
        self.group = realtime.completion_group(generation_id)
        self.layer = get_channel_layer()
        self.channel = None

    async def join(self):
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(self.group, self.channel)

    async def leave(self):
        if self.channel is not None:
            await self.layer.group_discard(self.group, self.channel)

    async def next(self, timeout: float) -> dict | None:
        try:
            return await asyncio.wait_for(self.layer.receive(self.channel), timeout)
        except asyncio.TimeoutError:
            return None
        except (OSError, RedisError):  # Redis is away for a moment: wait as if nothing came, then ask again
            log.warning("the channel layer is unreachable while waiting for generation %s", self.generation_id)
            await asyncio.sleep(timeout)
            return None


async def next_event(listener: Listener) -> dict | None:
    """The generation's next event; None when its worker went silent: it stopped sending heartbeats (noticed within
    WORKER_GONE_SECONDS, the generation is then marked failed) or sent nothing for INFERENCE_EVENT_TIMEOUT."""
    generation_id = listener.generation_id
    deadline = time.monotonic() + settings.INFERENCE_EVENT_TIMEOUT
    poll = max(0.5, settings.WORKER_HEARTBEAT_SECONDS)
    while (left := deadline - time.monotonic()) > 0:
        event = await listener.next(min(poll, left))
        if event is not None:
            return event
        try:
            if await sync_to_async(services.generation_worker_lost)(generation_id=generation_id):
                return None
            # finished, but its final event never came (Redis restarted and forgot the group): the row has it
            if (final := await sync_to_async(selectors.generation_final_event)(generation_id=generation_id)):
                return final
        except (OSError, RedisError):
            log.warning("could not check on generation %s: Redis is away", generation_id)
    return None


TOKENS, FINAL, FAILED, SILENT = "tokens", "final", "failed", "silent"


@dataclass
class Step:
    """One normalised event: TOKENS (`records`: the new ones, already added to the result), FINAL (`final`: the
    worker's final event; the result's records are complete), FAILED (`final` says why) or SILENT (the worker went
    away). FINAL, FAILED and SILENT are last."""

    kind: str
    records: list[dict] = field(default_factory=list)
    final: dict | None = None


async def generation_events(listener: Listener, first: dict, result: Result):
    """The generation's events from `first` on, as Steps, feeding `result` along the way."""
    event = first
    while True:
        if event is None:
            yield Step(SILENT)
            return
        if event["type"] == realtime.TOKENS:
            yield Step(TOKENS, records=result.add(event))
        elif event["status"] in realtime.FINISHED:
            if event["status"] == Generation.Status.FAILED:
                yield Step(FAILED, final=event)
                return
            if len(result.records) < event.get("n_tokens", 0):  # a batch was dropped: the row has every record
                row = await sync_to_async(Generation.objects.get)(pk=listener.generation_id)
                result.records = row.tokens
            yield Step(FINAL, final=event)
            return
        event = await next_event(listener)
