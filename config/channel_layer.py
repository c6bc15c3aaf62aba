"""The channel layer: channels-redis, with a receive that outlives Redis going away.

channels-redis raises from receive() when Redis is unreachable, and Channels lets that escape a consumer's loop:
every open websocket closes with 1011 the moment Redis restarts. Here receive() waits and tries again instead, so
sockets stay open through a Redis restart.

A Redis that comes back without its data has also forgotten every group, so an open socket would hear nothing more.
The layer therefore remembers, per channel, the groups this process joined it to; when Redis answers again it joins
them again and hands the consumer one {"type": "layer.rejoined"} message (apps/system/consumers.LabConsumer turns it
into `rejoined()`), because whatever was published during the outage is lost: each consumer then sends its page what
it may have missed, from the database (a training dashboard asks for the steps after its last one, a shard job's row
is rendered again, a generation is finished from its row: apps/inference/consumers.py).
"""

import asyncio
import logging
from collections import defaultdict

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5
REJOINED = "layer.rejoined"


class PatientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.memberships: dict[str, set[str]] = defaultdict(set)  # channel -> groups joined from this process

    async def group_add(self, group, channel):
        await super().group_add(group, channel)
        self.memberships[channel].add(group)

    async def group_discard(self, group, channel):
        # forgotten first: a socket closing while Redis is away must not be joined again when it returns
        if (groups := self.memberships.get(channel)) is not None:
            groups.discard(group)
            if not groups:
                del self.memberships[channel]
        await super().group_discard(group, channel)

    async def receive(self, channel):
        lost = False
        while True:
            try:
                if lost:
                    for group in list(self.memberships.get(channel, ())):
                        await super().group_add(group, channel)
                    log.info("the channel layer has Redis again; %s rejoined its groups", channel)
                    return {"type": REJOINED}
                return await super().receive(channel)
            except (OSError, RedisError) as exc:
                if not lost:
                    log.warning("the channel layer lost Redis (%s); waiting for it to come back", exc)
                    lost = True
                await asyncio.sleep(RETRY_SECONDS)
