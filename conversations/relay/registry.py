"""The relays running in this process, by conversation (the tasks are kept referenced here)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conversations.relay.loop import ReplyRelay

_relays: dict[int, ReplyRelay] = {}
# Every relay task of this process until it is done, its quiet end after a stop included.
_tasks: set[asyncio.Task[None]] = set()


def running_here(conversation_pk: int) -> ReplyRelay | None:
    relay = _relays.get(conversation_pk)
    return relay if relay is not None and not relay.done else None


def add(relay: ReplyRelay) -> None:
    _relays[relay.pk] = relay
    if relay.task is not None:
        _tasks.add(relay.task)
        relay.task.add_done_callback(_tasks.discard)


def remove(relay: ReplyRelay) -> None:
    if _relays.get(relay.pk) is relay:
        _relays.pop(relay.pk, None)


def all_running() -> list[ReplyRelay]:
    return [relay for relay in _relays.values() if not relay.done]


async def wait_all_done() -> None:
    """Until every relay task of this process has ended (a stopped reply's settling included)."""
    while pending := [t for t in _tasks if not t.done()]:
        await asyncio.wait(pending)
