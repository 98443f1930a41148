"""The channel layer production uses (Redis), as configured in settings."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings

from tests.conftest import require

pytestmark = pytest.mark.production_stack


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


async def test_many_replies_sending_at_once_do_not_run_out_of_connections(redis_layer):
    """redis-py 8 caps a pool at 100 connections by default and fails the 101st command at once:
    with a few hundred replies streaming in one process, their sends failed."""
    channel = await redis_layer.new_channel()
    await redis_layer.group_add("conversation.many", channel)
    await asyncio.gather(
        *(
            redis_layer.group_send("conversation.many", {"type": "conversation.html", "n": n})
            for n in range(300)
        )
    )
    received = {(await redis_layer.receive(channel))["n"] for _ in range(300)}
    assert received == set(range(300))
