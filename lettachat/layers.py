"""The in-memory channel layer, fit for many sockets in one process.

Channels' ``InMemoryChannelLayer`` sweeps for expired messages and group memberships on every
send, receive and group send, walking every channel and every group member of the process. With a
token relayed to each of a few hundred open sockets, those sweeps became the largest single cost
of the process (bench/RESULTS.md). Expiry is a matter of seconds (a message lives 60 s, a group
membership a day), so sweeping at most once a second changes nothing a client can see.
"""

from __future__ import annotations

import time

from channels.layers import InMemoryChannelLayer as _InMemoryChannelLayer

SWEEP_INTERVAL = 1.0


class InMemoryChannelLayer(_InMemoryChannelLayer):  # type: ignore[misc]  # channels is untyped
    _swept_at = float("-inf")

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._swept_at < SWEEP_INTERVAL:
            return
        self._swept_at = now
        super()._clean_expired()
