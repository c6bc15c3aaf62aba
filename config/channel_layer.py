"""The channel layer: channels-redis, with a receive that outlives Redis going away.

channels-redis raises from receive() when Redis is unreachable, and Channels lets that escape a consumer's loop:
every open websocket closes with 1011 the moment Redis restarts. Here receive() waits and tries again instead, so
sockets stay open through a Redis restart. (Group memberships live in Redis and are lost with its data; what a
socket then misses, its consumer rebuilds from the database — see apps/inference/consumers.py.)
"""

import asyncio
import logging

from channels_redis.core import RedisChannelLayer
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.5


class PatientRedisChannelLayer(RedisChannelLayer):
    async def receive(self, channel):
        warned = False
        while True:
            try:
                return await super().receive(channel)
            except (OSError, RedisError) as exc:
                if not warned:
                    log.warning("the channel layer lost Redis (%s); waiting for it to come back", exc)
                    warned = True
                await asyncio.sleep(RETRY_SECONDS)
