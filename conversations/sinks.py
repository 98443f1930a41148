"""Where events go: the sinks that turn them into what each kind of client needs.

Every process registers the sinks of its clients once (the web registers its sink when its app
loads: ``chat.apps``), and ``emit`` hands each event to all of them. A reply relay may carry
sinks of its own besides (the terminal chat prints the reply it started). Sinks are told an
event after the write it reports has committed: whoever emits must have finished writing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from conversations.events import NO_STAMP, Event, Stamp
from conversations.models import Conversation


class Sink(Protocol):
    async def emit(self, conversation: Conversation, event: Event, stamp: Stamp) -> None: ...


_registered: list[Sink] = []


def register(sink: Sink) -> None:
    """Add a sink for every event of this process (once per sink)."""
    if sink not in _registered:
        _registered.append(sink)


async def emit(
    conversation: Conversation,
    event: Event,
    stamp: Stamp = NO_STAMP,
    *,
    also: tuple[Sink, ...] = (),
) -> None:
    for sink in (*_registered, *also):
        await sink.emit(conversation, event, stamp)


@dataclass
class CollectingSink:
    """Keeps what it is told: a reply's events as data, for tests."""

    events: list[tuple[Event, Stamp]] = field(default_factory=list)

    async def emit(self, conversation: Conversation, event: Event, stamp: Stamp) -> None:
        self.events.append((event, stamp))

    def of(self, kind: type) -> list[Event]:
        return [event for event, _ in self.events if isinstance(event, kind)]
