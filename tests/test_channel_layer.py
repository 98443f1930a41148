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


def _fragments_layer_of_another_process():
    """A second instance of the fragments layer, as another server process has (own connection)."""
    from lettachat.layers import PubSubChannelLayer

    return PubSubChannelLayer(**settings.CHANNEL_LAYERS[settings.FRAGMENTS_LAYER]["CONFIG"])


def test_with_pubsub_fragments_go_over_pub_sub_and_the_rest_over_the_layer_whose_messages_wait(
    redis_layer, fragments_over_pubsub
):
    from channels_redis.core import RedisChannelLayer
    from channels_redis.pubsub import RedisPubSubChannelLayer

    from lettachat.layers import fragments_layer

    assert isinstance(fragments_layer(), RedisPubSubChannelLayer)
    assert isinstance(redis_layer, RedisChannelLayer)  # stop, retry, snapshots, session ends


async def test_a_reply_s_fragments_reach_sockets_on_another_process_in_order(
    redis_layer, fragments_over_pubsub
):
    from lettachat.layers import fragments_layer

    here, there = fragments_layer(), _fragments_layer_of_another_process()
    near, far = await here.new_channel(), await there.new_channel()
    await here.group_add("conversation.pubsub", near)
    await there.group_add("conversation.pubsub", far)
    try:
        for n in range(500):
            await here.group_send("conversation.pubsub", {"type": "conversation.html", "n": n})
        for layer, channel in ((here, near), (there, far)):
            got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(500)]
            assert got == list(range(500))
    finally:
        await there.flush()


async def test_a_socket_that_left_the_group_gets_no_more_fragments(
    redis_layer, fragments_over_pubsub
):
    from lettachat.layers import fragments_layer

    layer = fragments_layer()
    staying, leaving = await layer.new_channel(), await layer.new_channel()
    for channel in (staying, leaving):
        await layer.group_add("conversation.leave", channel)
    await layer.group_discard("conversation.leave", leaving)
    await layer.group_send("conversation.leave", {"type": "conversation.html", "n": 1})
    assert (await asyncio.wait_for(layer.receive(staying), 5))["n"] == 1
    # A group message is handed to every member of the process in one go: had it been for the
    # one that left, it would be waiting for it by now.
    assert layer._get_layer().channels[leaving].empty()


async def test_a_socket_that_leaves_as_the_process_stops_unsubscribes_without_an_error(
    redis_layer, fragments_over_pubsub, caplog
):
    """Cancelled twice (the socket closing, then its task as the process stops): channels_redis's
    own receive logged an ERROR per socket, its unsubscribe cut off half-way."""
    from lettachat.layers import fragments_layer

    layer = fragments_layer()
    channel = await layer.new_channel()
    loop_layer = layer._get_layer()
    shard = loop_layer._get_shard(channel)
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0)  # one turn of the loop: it waits for a message
    async with shard._lock:  # the connection busy with other sockets' comings and goings
        receiving.cancel()
        await asyncio.sleep(0)  # one turn: it takes the cancel (and waits for the connection)
        receiving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await receiving
    await asyncio.gather(*loop_layer._leaving)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    assert channel not in loop_layer.channels
    assert channel not in shard._subscribed_to


async def test_replies_sending_at_once_share_their_round_trips_to_redis(
    redis_layer, fragments_over_pubsub, monkeypatch
):
    """channels_redis sends one PUBLISH at a time and waits for Redis's answer before the next,
    whichever reply it is for: a process relayed at most a fragment per round trip. Here what is
    asked for meanwhile goes out together; each reply's fragments still arrive in order."""
    from redis.asyncio.connection import AbstractConnection

    from lettachat.layers import fragments_layer

    layer = fragments_layer()
    replies, fragments = 10, 10
    channels = [await layer.new_channel() for _ in range(replies)]
    for reply, channel in enumerate(channels):
        await layer.group_add(f"conversation.batch{reply}", channel)
    writes = 0
    write = AbstractConnection.send_packed_command

    async def counted(self, command, check_health=True):  # type: ignore[no-untyped-def]
        nonlocal writes
        chunks = [command] if isinstance(command, bytes) else command
        writes += any(b"PUBLISH" in bytes(chunk) for chunk in chunks)
        return await write(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)

    async def relay(reply: int) -> None:
        for n in range(fragments):  # as a relay does: one fragment after the other
            await layer.group_send(f"conversation.batch{reply}", {"type": "t", "n": n})

    await asyncio.gather(*(relay(reply) for reply in range(replies)))
    for channel in channels:
        got = [(await asyncio.wait_for(layer.receive(channel), 5))["n"] for _ in range(fragments)]
        assert got == list(range(fragments))
    assert 0 < writes <= replies * fragments // 4  # about one write per round of the replies


async def test_fragments_that_cannot_reach_redis_fail_for_each_sender_without_hanging(
    fragments_over_pubsub,
):
    from redis.exceptions import ConnectionError as RedisConnectionError

    from lettachat.layers import PubSubChannelLayer

    nowhere = PubSubChannelLayer(hosts=["redis://127.0.0.1:9"])  # the discard port: refused
    for _ in range(2):  # and again: nothing of the first failure is left waiting
        sends = [nowhere.group_send(f"conversation.down{n}", {"type": "t"}) for n in range(3)]
        results = await asyncio.wait_for(asyncio.gather(*sends, return_exceptions=True), 10)
        assert all(isinstance(result, RedisConnectionError) for result in results), results
    await asyncio.wait_for(nowhere.flush(), 5)


async def test_fragments_on_their_way_as_the_layer_closes_end_for_their_senders(
    redis_layer, fragments_over_pubsub
):
    """The layer flushed (its event loop closing) with PUBLISHes under way: no sender waits on."""
    layer = _fragments_layer_of_another_process()  # its own, to flush
    sends = [
        asyncio.ensure_future(layer.group_send(f"conversation.closing{n}", {"type": "t"}))
        for n in range(20)
    ]
    await asyncio.sleep(0)  # one turn: all are asked for; what sends them has not started yet
    await layer.flush()  # directly (no task around it, which would let the sender start first)
    done, pending = await asyncio.wait(sends, timeout=5)
    assert not pending
    assert all(send.cancelled() or send.exception() is None for send in done)
    try:  # and the layer sends again
        await asyncio.wait_for(layer.group_send("conversation.closing0", {"type": "t"}), 5)
    finally:
        await layer.flush()
