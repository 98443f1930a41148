"""A scripted stand-in for the Letta gateway: for speed, and for faults that are hard to cause.

fake.enqueue([ContentDelta(...), Stopped("end_turn")])   # the next reply, event by event
fake.enqueue(LettaUnavailable("down"))                      # the next send fails at once
gate = fake.enqueue([...], hold_after=2)                    # pause after 2 events until gate.set()
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from conversations.letta_gateway import (
    AgentInfo,
    ContentDelta,
    ConversationInfo,
    LettaError,
    MessageInfo,
    RunStarted,
    Stopped,
    StreamEvent,
)


@dataclass
class Script:
    events: list[StreamEvent] | LettaError
    hold_after: int | None = None
    gate: asyncio.Event | None = None


@dataclass
class ScriptedGateway:
    agents: list[AgentInfo] = field(default_factory=list)
    scripts: deque[Script] = field(default_factory=deque)
    sent: list[dict[str, str]] = field(default_factory=list)
    stored: dict[str, list[MessageInfo]] = field(default_factory=dict)
    down: LettaError | None = None
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    # scripting --------------------------------------------------------------------------------
    def enqueue(
        self, events: list[StreamEvent] | LettaError, *, hold_after: int | None = None
    ) -> asyncio.Event | None:
        gate = asyncio.Event() if hold_after is not None else None
        self.scripts.append(Script(events, hold_after, gate))
        return gate

    def enqueue_text(self, *pieces: str, message_id: str = "") -> str:
        """A plain reply streamed in the given pieces; returns its message id."""
        message_id = message_id or f"message-{next(self._ids)}"
        events: list[StreamEvent] = [RunStarted("run-1")]
        events += [ContentDelta(message_id, "assistant", p, "run-1") for p in pieces]
        events.append(Stopped("end_turn"))
        self.enqueue(events)
        return message_id

    # the Gateway protocol ---------------------------------------------------------------------
    def health(self) -> str:
        if self.down:
            raise self.down
        return "fake"

    def list_agents(self) -> list[AgentInfo]:
        if self.down:
            raise self.down
        return list(self.agents)

    def create_agent(
        self, *, name: str, model: str, description: str, blocks: dict[str, str]
    ) -> AgentInfo:
        info = AgentInfo(f"agent-{next(self._ids)}", name, description, model)
        self.agents.append(info)
        return info

    def create_conversation(self, *, agent_id: str) -> ConversationInfo:
        if self.down:
            raise self.down
        return ConversationInfo(f"conv-{next(self._ids)}", agent_id, "", datetime.now(UTC), None)

    def list_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]:
        return list(self.stored.get(conversation_id, []))

    async def alist_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]:
        return self.list_messages(conversation_id=conversation_id, after=after, limit=limit)

    async def astream_reply(
        self, *, conversation_id: str, text: str, otid: str
    ) -> AsyncIterator[StreamEvent]:
        if self.down:
            raise self.down
        script = self.scripts.popleft()
        if isinstance(script.events, LettaError):
            raise script.events
        self.sent.append({"conversation_id": conversation_id, "text": text, "otid": otid})
        for index, event in enumerate(script.events):
            if script.hold_after is not None and index == script.hold_after and script.gate:
                await script.gate.wait()
            yield event
