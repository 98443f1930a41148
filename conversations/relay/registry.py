"""The relays running in this process, by conversation (the tasks are kept referenced here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conversations.relay.loop import ReplyRelay

_relays: dict[int, ReplyRelay] = {}


def running_here(conversation_pk: int) -> ReplyRelay | None:
    relay = _relays.get(conversation_pk)
    return relay if relay is not None and not relay.done else None


def add(relay: ReplyRelay) -> None:
    _relays[relay.pk] = relay


def remove(relay: ReplyRelay) -> None:
    if _relays.get(relay.pk) is relay:
        _relays.pop(relay.pk, None)


def all_running() -> list[ReplyRelay]:
    return [relay for relay in _relays.values() if not relay.done]
