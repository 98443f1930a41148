"""Talking to a running relay from anywhere (any process, over the channel layer).

A relay listens on a channel of its own, recorded with its run (``Run.relay_channel``), for:
a snapshot for a (re)connecting client, a stop, a retry (stop, then send the message again), and
its own closing message. Payloads are plain strings and numbers.
"""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer

# {"reply_to", "after", "drafts", "request"}: answered to reply_to, with the request's id
SNAPSHOT_REQUEST = "relay.snapshot"
STOP_REQUEST = "relay.stop"
RETRY_REQUEST = "relay.retry"  # stop, then send the message again
CLOSE_REQUEST = "relay.close"  # from the relay to its own control reader: the reply is over


def layer() -> Any:
    found = get_channel_layer()
    assert found is not None, "CHANNEL_LAYERS is not configured"
    return found


async def relay_channel_new() -> str:
    """A channel for a relay about to start, to record with its run (``Run.relay_channel``).

    The default prefix: channels_redis reads all of a process's channels with one loop per
    prefix, and a second prefix would make its receive starve the sockets' (and vice versa).
    """
    return str(await layer().new_channel())


async def request_snapshot(
    relay_channel: str, *, reply_to: str, after: int, drafts: bool, request: str = ""
) -> None:
    await layer().send(
        relay_channel,
        {
            "type": SNAPSHOT_REQUEST,
            "reply_to": reply_to,
            "after": after,
            "drafts": drafts,
            "request": request,
        },
    )


async def request_stop(relay_channel: str, *, retry: bool = False) -> None:
    await layer().send(relay_channel, {"type": RETRY_REQUEST if retry else STOP_REQUEST})
