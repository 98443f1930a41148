"""The channel layers: the one for page fragments, and an in-memory layer fit for many sockets.

A conversation's page fragments (a token is one) go to its sockets in every process through
``fragments_layer()``: with Redis, a pub/sub layer of their own (settings.FRAGMENTS_LAYER), one
PUBLISH per fragment that Redis pushes to each process. A fragment lost there (Redis restarting)
is not a reply lost: the reply is stored, and a page that reconnects catches up from a snapshot.
Everything that must arrive stays on the default layer, whose messages wait in Redis. In one
process (no Redis) both are the same in-memory layer.

The in-memory layer:

Channels' ``InMemoryChannelLayer`` sweeps for expired messages and group memberships on every
send, receive and group send, walking every channel and every group member of the process. With a
token relayed to each of a few hundred open sockets, those sweeps became the largest single cost
of the process (bench/RESULTS.md). Expiry is a matter of seconds (a message lives 60 s, a group
membership a day), so sweeping at most once a second changes nothing a client can see.
"""

from __future__ import annotations

import time
from typing import Any

from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer
from channels.layers import get_channel_layer
from django.conf import settings

SWEEP_INTERVAL = 1.0


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]  # channels is untyped
    _swept_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < SWEEP_INTERVAL:
            return
        self._swept_at = now
        super()._clean_expired()


def fragments_layer() -> Any:
    """The layer of conversations' page fragments: their group sends and group members."""
    found = get_channel_layer(settings.FRAGMENTS_LAYER) or get_channel_layer()
    assert found is not None, "CHANNEL_LAYERS is not configured"
    return found
