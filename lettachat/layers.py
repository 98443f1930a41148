"""The channel layers: the one for page fragments, and an in-memory layer fit for many sockets.

A conversation's page fragments (a token is one) go to its sockets in every process through
``fragments_layer()``: with Redis, a pub/sub layer of their own (settings.FRAGMENTS_LAYER), one
PUBLISH per fragment that Redis pushes to each process (the PUBLISHes of all replies sent in
pipelines, rather than one round trip after another). A fragment lost there (Redis restarting)
is not a reply lost: the reply is stored, and a page that reconnects catches up from a snapshot.
Everything that must arrive stays on the default layer, whose messages wait in Redis. In one
process (no Redis) both are the same in-memory layer.

The in-memory layer:

Channels' ``InMemoryChannelLayer`` sweeps for expired messages and group memberships on every
send, receive and group send, walking every channel and every group member of the process. With a
token relayed to each of a few hundred open sockets, those sweeps became the largest single cost
of the process (bench/RESULTS.md). Expiry is a matter of seconds (a message lives 60 s, a group
membership a day), so sweeping at most once a second changes nothing a client can see. Its
group send starts a task for every member and gathers them with ``as_completed``, and its send
builds a queue for every message whether the channel has one or not, which a token paid for too;
a send here never waits (a full channel is refused at once), so the members are sent to in turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from copy import deepcopy
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels.layers import get_channel_layer
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close
from django.conf import settings
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]  # channels is untyped
    _swept_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < SWEEP_INTERVAL:
            return
        self._swept_at = now
        super()._clean_expired()

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        try:
            queue.put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            with contextlib.suppress(ChannelFull):
                await self.send(channel, message)


def fragments_layer() -> Any:
    """The layer of conversations' page fragments: their group sends and group members."""
    found = get_channel_layer(settings.FRAGMENTS_LAYER) or get_channel_layer()
    assert found is not None, "CHANNEL_LAYERS is not configured"
    return found


class PubSubChannelLayer(RedisPubSubChannelLayer):  # type: ignore[misc]  # channels_redis is untyped
    """channels_redis's pub/sub layer, whose sockets leave quietly.

    Its ``receive``, cancelled as a socket closes, unsubscribes the socket's channel before it
    lets the cancel through; a second cancel meanwhile (the consumer's own task cancelled as the
    process stops or daphne gives up on it) interrupts that and logs an ERROR for each socket. Here
    the unsubscribe runs in a task of its own, which no cancel of the socket's reaches.
    """

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = _PubSubLoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
        return layer


class _PubSubLoopLayer(RedisPubSubLoopLayer):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._leaving: set[asyncio.Task[None]] = set()  # unsubscribes under way
        made: list[Any] = self._shards  # type: ignore[has-type]  # channels_redis is untyped
        self._shards = [_Shard(shard.host, self) for shard in made]  # the same hosts, batched

    async def receive(self, channel: str) -> Any:
        if channel not in self.channels:
            await self._subscribe_to_channel(channel)
        queue = self.channels[channel]
        try:
            message = await queue.get()
        except (asyncio.CancelledError, TimeoutError, GeneratorExit):
            if self.channels.pop(channel, None) is not None:
                task = asyncio.ensure_future(self._unsubscribe(channel))
                self._leaving.add(task)
                task.add_done_callback(self._leaving.discard)
            raise
        return self.channel_layer.deserialize(message)

    async def _unsubscribe(self, channel: str) -> None:
        try:
            await self._get_shard(channel).unsubscribe(channel)
        except (RedisError, OSError, RuntimeError) as exc:  # Redis gone, or the loop closing
            logger.info("could not unsubscribe %s: %s", channel, exc)


_Outgoing = tuple[str, bytes, "asyncio.Future[None]"]  # a PUBLISH: channel, message, its answer


class _Shard(RedisSingleShardConnection):  # type: ignore[misc]
    """A Redis host of the pub/sub layer, whose PUBLISHes do not wait for each other.

    channels_redis sends one PUBLISH at a time to a host, holding the host's lock until Redis has
    answered: every fragment of every reply in the process waited for the one before it to make a
    round trip, so a process relayed at most one fragment per round trip over Redis, however idle
    its CPU (bench/RESULTS.md). Here the PUBLISHes asked for while a batch is on its way go out
    together as the next one, in one pipeline on one connection, in the order they were asked for
    (a conversation's fragments stay in order); each caller still waits until Redis has taken its
    own, and gets the error if it could not.
    """

    def __init__(self, host: dict[str, Any], channel_layer: Any) -> None:
        super().__init__(host, channel_layer)
        self._outbox: list[_Outgoing] = []
        self._sending: asyncio.Task[None] | None = None

    async def publish(self, channel: str, message: bytes) -> None:
        taken = asyncio.get_running_loop().create_future()
        self._outbox.append((channel, message, taken))
        if self._sending is None or self._sending.done():
            self._sending = asyncio.ensure_future(self._send_outbox())
        await taken

    async def _send_outbox(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            try:
                self._ensure_redis()
                async with self._redis.pipeline(transaction=False) as pipeline:
                    for channel, message, _ in batch:
                        pipeline.publish(channel, message)
                    await pipeline.execute()
            except Exception as exc:  # noqa: BLE001 - each caller gets it, as it would alone
                _settle(batch, exc)
            except BaseException:  # cancelled (a flush, the loop closing): nobody waits for ever
                _settle(batch, asyncio.CancelledError())
                raise
            else:
                _settle(batch, None)

    async def flush(self) -> None:
        sending = self._sending
        if sending is not None:
            sending.cancel()
            await asyncio.wait({sending})  # its end, without taking a cancel of this task for it
        # Cancelled before it took them (or before it started): they are not sent.
        waiting, self._outbox = self._outbox, []
        _settle(waiting, asyncio.CancelledError())
        await super().flush()


def _settle(batch: list[_Outgoing], error: BaseException | None) -> None:
    """Tell each caller of a batch how its PUBLISH went (a cancel: it may or may not have)."""
    for *_, taken in batch:
        if taken.done():
            continue  # its caller stopped waiting (cancelled); the PUBLISH went out all the same
        if error is None:
            taken.set_result(None)
        elif isinstance(error, asyncio.CancelledError):
            taken.cancel()
        else:
            taken.set_exception(error)
