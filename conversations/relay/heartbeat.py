"""The heartbeats of this process's relays, told to the database together.

Every ``LETTACHAT_RELAY_HEARTBEAT_SECONDS`` one task per event loop marks every relay of the loop
alive (``Run.relay_seen_at``) and reads back, for each, whether its run is still its own and
whether a Stop was recorded on it: two statements for all of them, where each relay made two of
its own (at 200 replies in flight, 80 statements a second at the default 5 s). Each relay is
told what concerns it (``ReplyRelay.heard``).

A relay that joins is marked alive when it starts (``services.run_set_relay``, or the claim
that gave it its run), so its first beat may come up to one period later.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from typing import TYPE_CHECKING

from django.conf import settings

from conversations import services
from lettachat.aio import db

if TYPE_CHECKING:
    from conversations.relay.loop import ReplyRelay

logger = logging.getLogger(__name__)


class _Beats:
    def __init__(self) -> None:
        self.relays: dict[ReplyRelay, None] = {}  # in the order they joined
        self.task: asyncio.Task[None] | None = None


_loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Beats] = weakref.WeakKeyDictionary()


def join(relay: ReplyRelay) -> None:
    """Beat for ``relay`` from now on, until it leaves."""
    loop = asyncio.get_running_loop()
    beats = _loops.get(loop)
    if beats is None:
        beats = _loops[loop] = _Beats()
    beats.relays[relay] = None
    if beats.task is None or beats.task.done():
        beats.task = loop.create_task(_beat_while_any(beats), name="lettachat-heartbeats")


def leave(relay: ReplyRelay) -> None:
    """No more beats for ``relay``; with the loop's last relay gone, its beat task ends now."""
    beats = _loops.get(asyncio.get_running_loop())
    if beats is None:
        return
    beats.relays.pop(relay, None)
    if not beats.relays and beats.task is not None:
        beats.task.cancel()
        beats.task = None


async def beat_once(beats: _Beats) -> None:
    relays = list(beats.relays)
    seen = await db(services.runs_seen)(runs=[(r.run.pk, r.channel) for r in relays])
    for relay in relays:
        if relay in beats.relays:  # it may have ended while the database answered
            relay.heard(seen[relay.channel])


async def _beat_while_any(beats: _Beats) -> None:
    while beats.relays:
        try:
            await beat_once(beats)
        except Exception:
            logger.exception("the heartbeat of %d relays failed", len(beats.relays))
        await asyncio.sleep(settings.LETTACHAT_RELAY_HEARTBEAT_SECONDS)
