"""The channel layer production uses (Redis), as configured in settings."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from tests.conftest import require


@pytest.fixture
def redis_layer():
    require(bool(settings.REDIS_URL), "REDIS_URL is not set: the Redis channel layer is untested")
    return get_channel_layer()


async def test_an_idle_socket_keeps_waiting_past_the_blocking_pop_timeout(redis_layer):
    """redis-py 8's 5 s default socket timeout used to kill every idle receive after 5 s."""
    channel = await redis_layer.new_channel()
    with pytest.raises(asyncio.TimeoutError):  # our own deadline, not Redis's error
        await asyncio.wait_for(redis_layer.receive(channel), timeout=redis_layer.brpop_timeout + 2)


async def test_a_group_message_reaches_every_member(redis_layer):
    first, second = await redis_layer.new_channel(), await redis_layer.new_channel()
    for channel in (first, second):
        await redis_layer.group_add("conversation.test", channel)
    await redis_layer.group_send("conversation.test", {"type": "conversation.html", "html": "hi"})
    for channel in (first, second):
        message = await asyncio.wait_for(redis_layer.receive(channel), timeout=5)
        assert message["html"] == "hi"
