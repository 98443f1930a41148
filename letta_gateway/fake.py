"""A scripted stand-in for the Letta gateway: for speed, and for faults that are hard to cause.

fake.enqueue([ContentDelta(...), Stopped("end_turn")])   # the next reply, event by event
fake.enqueue(LettaUnavailable("down"))                      # the next send fails at once
gate = fake.enqueue([...], hold_after=2)                    # pause after 2 events until gate.set()
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from letta_gateway import (
    AgentConfig,
    AgentInfo,
    ApprovalAnswer,
    CompactionInfo,
    ContentDelta,
    ConversationDetails,
    ConversationInfo,
    LettaError,
    LettaNotFound,
    LettaUnavailable,
    MemoryBlockInfo,
    MessageInfo,
    MessageKind,
    RunStarted,
    RunState,
    Stopped,
    StreamEvent,
    ToolInfo,
    ToolReturn,
)


@dataclass(frozen=True)
class Pause:
    """In a script: the upstream says nothing for this long (a slow model, a silent run)."""

    seconds: float


def system_alert(summary: str) -> str:
    """What Letta 0.16.8 puts in the context window where it compacted: a user message whose
    content is a JSON system alert carrying the summary of what was hidden."""
    return json.dumps(
        {
            "type": "system_alert",
            "message": "Note: prior messages from the beginning of the conversation have been "
            "hidden from view due to conversation memory constraints.\nThe following is a "
            f"summary of the previous messages:\n{summary}",
            "time": "2026-01-01 12:00:00 PM UTC+0000",
        }
    )


@dataclass
class Script:
    # Events, or an exception where the stream breaks; or an error the send raises at once.
    events: Sequence[StreamEvent | BaseException | Pause] | LettaError
    hold_after: int | None = None
    gate: asyncio.Event | None = None
    cancelled: bool = False
    # One piece at a time, as a model streams: after the first piece each event waits for step().
    pieces: asyncio.Semaphore | None = None

    @property
    def run_id(self) -> str:
        """The run this script plays (its first RunStarted's), "" if it names none."""
        if isinstance(self.events, LettaError):
            return ""
        return next((e.run_id for e in self.events if isinstance(e, RunStarted)), "")


@dataclass
class ScriptedGateway:
    agents: list[AgentInfo] = field(default_factory=list)
    scripts: deque[Script] = field(default_factory=deque)
    sent: list[dict[str, str]] = field(default_factory=list)
    stored: dict[str, list[MessageInfo]] = field(default_factory=dict)
    down: LettaError | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    # Conversations (threads): what Letta holds, and what was asked of it.
    conversations: dict[str, ConversationInfo] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)  # ids Letta answers 404 for
    # Which stored messages are in a conversation's context window (all of them when not set).
    in_context: dict[str, tuple[str, ...]] = field(default_factory=dict)
    retrieve_error: LettaError | None = None  # what retrieve_conversation raises, if anything
    deleted: list[str] = field(default_factory=list)
    forks: list[dict[str, str | None]] = field(default_factory=list)
    fork_honours_message_id: bool = False  # like Letta 0.16.8, which copies everything
    # Runs: scripted resumptions, stop requests, and the script now streaming.
    resumes: deque[Script] = field(default_factory=deque)
    resumed: list[dict[str, object]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    cancelled_runs: list[str] = field(default_factory=list)  # run ids given, '' for none
    cancel_seen: asyncio.Event = field(default_factory=asyncio.Event)  # set at each cancel
    cancels_unreachable: bool = False  # cancels fail as if Letta could not be reached
    active: Script | None = None
    cancels_succeed: bool = True
    # What Letta says of runs (arun_state), and how often it was asked.
    run_states: dict[str, RunState | None] = field(default_factory=dict)
    state_checks: list[str] = field(default_factory=list)
    state_checked: asyncio.Event = field(default_factory=asyncio.Event)  # set at each check
    run_state_gate: asyncio.Event | None = None  # when set: Letta hangs on it until it is set

    # The conversation of each run, as Letta would report it; a run not listed: cannot be told.
    run_conversations: dict[str, str] = field(default_factory=dict)
    # Memory: each agent's blocks (by agent id), and how often they were read.
    blocks: dict[str, list[MemoryBlockInfo]] = field(default_factory=dict)
    block_reads: list[str] = field(default_factory=list)
    # Agents of their own: configs by agent id, copies made, identities, standalone blocks.
    configs: dict[str, AgentConfig] = field(default_factory=dict)
    copies: list[dict[str, object]] = field(default_factory=list)
    reapplied: list[str] = field(default_factory=list)
    deleted_agents: list[str] = field(default_factory=list)
    identities: dict[str, str] = field(default_factory=dict)
    standalone_blocks: dict[str, MemoryBlockInfo] = field(default_factory=dict)
    # Tool approvals: the answers sent (each a list of answers), and which tools of each agent
    # wait for approval (set through ``set_tool_approval``).
    approvals_sent: list[dict[str, object]] = field(default_factory=list)
    approval_tools: dict[str, set[str]] = field(default_factory=dict)

    # scripting --------------------------------------------------------------------------------
    def enqueue(
        self,
        events: Sequence[StreamEvent | BaseException] | LettaError,
        *,
        hold_after: int | None = None,
    ) -> asyncio.Event | None:
        gate = asyncio.Event() if hold_after is not None else None
        self.scripts.append(Script(events, hold_after, gate))
        return gate

    def enqueue_text(self, *pieces: str, message_id: str = "", one_by_one: bool = False) -> str:
        """A plain reply streamed in the given pieces; returns its message id.

        Otherwise the pieces come in one burst; ``one_by_one``: each after the test's ``step()``
        (once it saw the one before), as a model streams them.
        """
        message_id = message_id or f"message-{next(self._ids)}"
        events: list[StreamEvent] = [RunStarted("run-1")]
        events += [ContentDelta(message_id, "assistant", p, "run-1") for p in pieces]
        events.append(Stopped("end_turn"))
        self.enqueue(events)
        if one_by_one:
            self.scripts[-1].pieces = asyncio.Semaphore(0)
        return message_id

    def step(self) -> None:
        """Let the next piece of a one-by-one reply come."""
        for script in (self.active, *self.scripts):
            if script is not None and script.pieces is not None:
                script.pieces.release()
                return

    # the Gateway protocol ---------------------------------------------------------------------
    def health(self) -> str:
        if self.down:
            raise self.down
        return "fake"

    async def ahealth(self, *, timeout: float) -> str:
        return self.health()

    def list_agents(self) -> list[AgentInfo]:
        if self.down:
            raise self.down
        return list(self.agents)

    def create_agent(
        self, *, name: str, model: str, description: str, blocks: dict[str, str]
    ) -> AgentInfo:
        if self.down:
            raise self.down
        info = AgentInfo(
            f"agent-{next(self._ids)}", name, description, model, context_window=30_000
        )
        self.agents.append(info)
        self.set_blocks(info.letta_id, **blocks)
        return info

    def retrieve_agent(self, *, agent_id: str) -> AgentInfo:
        if self.down:
            raise self.down
        agent = next((a for a in self.agents if a.letta_id == agent_id), None)
        if agent is None:
            raise LettaNotFound("Letta does not know this item.", status=404)
        return agent

    def create_conversation(self, *, agent_id: str) -> ConversationInfo:
        if self.down:
            raise self.down
        info = ConversationInfo(f"conv-{next(self._ids)}", agent_id, "", datetime.now(UTC), None)
        self.conversations[info.letta_id] = info
        return info

    def list_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]:
        if self.down:
            raise self.down
        messages = list(self.stored.get(conversation_id, []))
        if after:
            ids = [m.letta_id for m in messages]
            messages = messages[ids.index(after) + 1 :] if after in ids else []
        return messages[:limit]

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
        async for event in self._play(script):
            yield event

    def stream_reply(self, *, conversation_id: str, text: str, otid: str) -> Iterator[StreamEvent]:
        """The next script, in this thread (no holds); Letta then stores the exchange."""
        if self.down:
            raise self.down
        self._check(conversation_id)
        script = self.scripts.popleft()
        if isinstance(script.events, LettaError):
            raise script.events
        self.sent.append({"conversation_id": conversation_id, "text": text, "otid": otid})
        stored = self.stored.setdefault(conversation_id, [])
        stored.append(self._stored("user", text, otid=otid))
        replies: dict[str, str] = {}
        for event in script.events:
            if isinstance(event, BaseException):
                raise event
            if isinstance(event, Pause):
                time.sleep(event.seconds)  # the upstream says nothing for a while
                continue
            if isinstance(event, ContentDelta) and event.kind == "assistant":
                replies[event.message_id] = replies.get(event.message_id, "") + event.text
            if isinstance(event, ToolReturn):
                stored.append(self._stored("tool_return", event.content, name=event.status))
            yield event
        stored.extend(
            replace(self._stored("assistant", text), letta_id=message_id)
            for message_id, text in replies.items()
        )

    def _stored(self, kind: MessageKind, content: str, **extra: Any) -> MessageInfo:
        return MessageInfo(f"message-{next(self._ids)}", kind, content, datetime.now(UTC), **extra)

    async def astream_approval(
        self, *, conversation_id: str, answers: Sequence[ApprovalAnswer], otid: str
    ) -> AsyncIterator[StreamEvent]:
        """The next script, as the continuation of a reply after its tool calls were answered."""
        if self.down:
            raise self.down
        script = self.scripts.popleft()
        if isinstance(script.events, LettaError):
            raise script.events
        self.approvals_sent.append(
            {"conversation_id": conversation_id, "answers": list(answers), "otid": otid}
        )
        async for event in self._play(script):
            yield event

    def set_tool_approval(self, *, agent_id: str, tool_name: str, required: bool) -> None:
        if self.down:
            raise self.down
        tools = self.approval_tools.setdefault(agent_id, set())
        if required:
            tools.add(tool_name)
        else:
            tools.discard(tool_name)
        if agent_id in self.configs:
            config = self.configs[agent_id]
            rules = tuple(
                r
                for r in config.tool_rules
                if not (r.get("type") == "requires_approval" and r.get("tool_name") == tool_name)
            )
            if required:
                rules += ({"type": "requires_approval", "tool_name": tool_name},)
            self.configs[agent_id] = replace(config, tool_rules=rules)

    def enqueue_resume(
        self,
        events: Sequence[StreamEvent | BaseException] | LettaError,
        *,
        hold_after: int | None = None,
    ) -> asyncio.Event | None:
        """What the next ``astream_resume`` yields."""
        gate = asyncio.Event() if hold_after is not None else None
        self.resumes.append(Script(events, hold_after, gate))
        return gate

    async def astream_resume(
        self,
        *,
        conversation_id: str,
        run_id: str = "",
        after_seq: int | None = None,
        otid: str = "",
    ) -> AsyncIterator[StreamEvent]:
        if self.down:
            raise self.down
        self.resumed.append(
            {"run_id": run_id, "after_seq": after_seq, **({"otid": otid} if otid else {})}
        )
        if not self.resumes:  # nothing scripted: Letta has no such run (any more)
            if otid:
                raise LettaNotFound(f"No run found for otid={otid}.", status=404)
            raise LettaError("No active runs found for this conversation.", status=400)
        script = self.resumes.popleft()
        if isinstance(script.events, LettaError):
            raise script.events
        async for event in self._play(script):
            yield event

    async def arun_state(self, *, run_id: str) -> RunState | None:
        """What Letta says of a run: as scripted in ``run_states``, else still running."""
        if self.down:
            raise self.down
        self.state_checks.append(run_id)
        self.state_checked.set()
        if self.run_state_gate is not None:
            await self.run_state_gate.wait()
        return self.run_states.get(run_id, RunState(run_id, "running"))

    async def arun_conversation(self, *, run_id: str) -> str | None:
        if self.down:
            raise self.down
        return self.run_conversations.get(run_id)

    async def acancel(self, *, conversation_id: str, run_id: str = "", agent_id: str = "") -> bool:
        if self.down:
            raise self.down
        self.cancels.append(conversation_id)
        self.cancelled_runs.append(run_id)
        self.cancel_seen.set()
        if self.cancels_unreachable:
            raise LettaUnavailable("The Letta server cannot be reached.")
        script = self.active
        if script is None or script.cancelled or not self.cancels_succeed:
            return False
        if run_id and run_id != script.run_id:
            return True  # that run is over; the one going (a next turn's) is not touched
        script.cancelled = True
        if script.gate is not None:
            script.gate.set()
        return True

    async def _play(self, script: Script) -> AsyncIterator[StreamEvent]:
        """Yield a script's events, pausing at ``hold_after``; a cancel ends it like Letta does."""
        self.active = script
        try:
            streaming = False
            assert not isinstance(script.events, LettaError)
            for index, event in enumerate(script.events):
                if script.hold_after is not None and index == script.hold_after and script.gate:
                    await script.gate.wait()
                if streaming and script.pieces is not None:
                    await script.pieces.acquire()
                streaming = streaming or isinstance(event, ContentDelta)
                if script.cancelled:
                    yield Stopped("cancelled")
                    return
                if isinstance(event, BaseException):
                    raise event  # a stream that breaks here
                if isinstance(event, Pause):
                    await asyncio.sleep(event.seconds)  # the upstream's own timing
                    continue
                yield event
        finally:
            if self.active is script:
                self.active = None

    # conversations (threads) ------------------------------------------------------------------
    def _check(self, conversation_id: str) -> None:
        if self.down:
            raise self.down
        if conversation_id in self.unknown:
            raise LettaNotFound("Letta does not know this item.", status=404)

    def list_conversations(
        self,
        *,
        agent_id: str,
        after: str | None = None,
        limit: int = 50,
        summary_search: str | None = None,
    ) -> list[ConversationInfo]:
        if self.down:
            raise self.down
        found = [
            c
            for c in reversed(self.conversations.values())
            if c.agent_id == agent_id and (not summary_search or summary_search in c.summary)
        ]
        if after:
            ids = [c.letta_id for c in found]
            found = found[ids.index(after) + 1 :] if after in ids else []
        return found[:limit]

    def update_conversation(self, *, conversation_id: str, summary: str) -> ConversationInfo:
        self._check(conversation_id)
        known = self.conversations.get(conversation_id)
        info = ConversationInfo(
            conversation_id,
            known.agent_id if known else "",
            summary,
            known.created_at if known else datetime.now(UTC),
            known.last_message_at if known else None,
        )
        self.conversations[conversation_id] = info
        return info

    def retrieve_conversation(self, *, conversation_id: str) -> ConversationDetails:
        self._check(conversation_id)
        if self.retrieve_error is not None:
            raise self.retrieve_error
        info = self.conversations.get(conversation_id)
        if info is None:
            raise LettaNotFound("Letta does not know this item.", status=404)
        ids = self.in_context.get(conversation_id)
        if ids is None:
            ids = tuple(m.letta_id for m in self.stored.get(conversation_id, []))
        return ConversationDetails(
            info.letta_id, info.agent_id, info.summary, info.created_at, info.last_message_at, ids
        )

    def compact_conversation(self, *, conversation_id: str, keep: int = 2) -> CompactionInfo:
        """Like Letta: a system alert with a summary replaces all but the last ``keep`` messages
        in the context window; the history keeps them all."""
        self._check(conversation_id)
        stored = self.stored.setdefault(conversation_id, [])
        before = self.retrieve_conversation(conversation_id=conversation_id)
        summary = f"{len(stored) - keep} earlier messages."
        alert = self._stored("user", system_alert(summary))
        stored.append(alert)
        kept = tuple(m.letta_id for m in stored[-keep - 1 : -1]) if keep else ()
        self.in_context[conversation_id] = (alert.letta_id, *kept)
        return CompactionInfo(len(before.in_context_message_ids), keep + 1, summary)

    def delete_conversation(self, *, conversation_id: str) -> None:
        self._check(conversation_id)
        self.conversations.pop(conversation_id, None)
        self.stored.pop(conversation_id, None)
        self.deleted.append(conversation_id)

    def fork_conversation(
        self, *, conversation_id: str, message_id: str | None = None
    ) -> ConversationInfo:
        self._check(conversation_id)
        origin = self.conversations.get(conversation_id)
        info = ConversationInfo(
            f"conv-{next(self._ids)}",
            origin.agent_id if origin else "",
            "",
            datetime.now(UTC),
            None,
        )
        messages = list(self.stored.get(conversation_id, []))
        if message_id and self.fork_honours_message_id:
            ids = [m.letta_id for m in messages]
            if message_id in ids:
                last = len(ids) - ids[::-1].index(message_id)
                messages = messages[:last]
        self.stored[info.letta_id] = messages
        self.conversations[info.letta_id] = info
        self.forks.append(
            {"origin": conversation_id, "message_id": message_id, "fork": info.letta_id}
        )
        return info

    # memory blocks ----------------------------------------------------------------------------
    def set_blocks(self, agent_id: str, **values: str | tuple[str, int | None]) -> None:
        """The agent's blocks: ``human="…"`` or ``human=("…", limit)``."""
        self.blocks[agent_id] = [
            MemoryBlockInfo(
                label, *(v if isinstance(v, tuple) else (v, 5000)), f"block-{agent_id}-{label}"
            )
            for label, v in values.items()
        ]

    def list_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]:
        if self.down:
            raise self.down
        self.block_reads.append(agent_id)
        if agent_id in self.blocks:
            return list(self.blocks[agent_id])
        agent = next((a for a in self.agents if a.letta_id == agent_id), None)
        return list(agent.blocks) if agent else []

    async def alist_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]:
        return self.list_blocks(agent_id=agent_id)

    # agents of their own ----------------------------------------------------------------------
    def agent_config(self, *, agent_id: str) -> AgentConfig:
        if self.down:
            raise self.down
        if agent_id in self.configs:
            return self.configs[agent_id]
        agent = next((a for a in self.agents if a.letta_id == agent_id), None)
        if agent is None:
            raise LettaNotFound("Letta does not know this item.", status=404)
        return AgentConfig(
            letta_id=agent_id,
            name=agent.name,
            description=agent.description,
            model=agent.model,
            agent_type="letta_v1_agent",
            system="You are a test agent.",
            tools=(ToolInfo("tool-search", "conversation_search"),),
            tool_rules=tuple(
                {"type": "requires_approval", "tool_name": name}
                for name in sorted(self.approval_tools.get(agent_id, ()))
            ),
            blocks=tuple(self.list_blocks(agent_id=agent_id)),
        )

    def create_agent_copy(
        self,
        *,
        template: AgentConfig,
        name: str,
        skip_labels: frozenset[str] = frozenset(),
        block_ids: tuple[str, ...] = (),
        identity_id: str = "",
        tags: tuple[str, ...] = (),
    ) -> AgentInfo:
        if self.down:
            raise self.down
        info = AgentInfo(f"agent-{next(self._ids)}", name, template.description, template.model)
        self.agents.append(info)
        own = [
            MemoryBlockInfo(b.label, b.value, b.limit, f"block-{next(self._ids)}")
            for b in template.blocks
            if b.label not in skip_labels
        ]
        self.blocks[info.letta_id] = own + [self.standalone_blocks[i] for i in block_ids]
        self.copies.append(
            {"template": template.letta_id, "agent": info.letta_id, "identity": identity_id}
        )
        return info

    def reapply_agent_config(self, *, agent_id: str, template: AgentConfig) -> None:
        if self.down:
            raise self.down
        self.reapplied.append(agent_id)

    def delete_agent(self, *, agent_id: str, keep_block_ids: frozenset[str] = frozenset()) -> None:
        if self.down:
            raise self.down
        if agent_id not in {a.letta_id for a in self.agents}:
            raise LettaNotFound("Letta does not know this item.", status=404)
        self.agents = [a for a in self.agents if a.letta_id != agent_id]
        self.blocks.pop(agent_id, None)
        self.deleted_agents.append(agent_id)

    def identity_ensure(self, *, identifier_key: str, name: str) -> str:
        if self.down:
            raise self.down
        return self.identities.setdefault(identifier_key, f"identity-{next(self._ids)}")

    def delete_identity(self, *, identifier_key: str) -> None:
        if self.down:
            raise self.down
        if self.identities.pop(identifier_key, None) is None:
            raise LettaNotFound("Letta has no such identity.", status=404)

    def create_block(
        self, *, label: str, value: str, limit: int | None, read_only: bool, description: str = ""
    ) -> MemoryBlockInfo:
        if self.down:
            raise self.down
        block = MemoryBlockInfo(label, value, limit, f"block-{next(self._ids)}", read_only)
        self.standalone_blocks[block.block_id] = block
        return block

    def attach_block(self, *, agent_id: str, block_id: str) -> None:
        self.blocks.setdefault(agent_id, []).append(self.standalone_blocks[block_id])

    def retrieve_block(self, *, block_id: str) -> MemoryBlockInfo:
        if self.down:
            raise self.down
        for block in [*self.standalone_blocks.values(), *itertools.chain(*self.blocks.values())]:
            if block.block_id == block_id:
                return block
        raise LettaNotFound("Letta does not know this item.", status=404)

    def update_block(self, *, block_id: str, value: str) -> MemoryBlockInfo:
        if self.down:
            raise self.down
        for agent_id, blocks in self.blocks.items():
            self.blocks[agent_id] = [
                replace(b, value=value) if b.block_id == block_id else b for b in blocks
            ]
        if block_id in self.standalone_blocks:
            self.standalone_blocks[block_id] = replace(
                self.standalone_blocks[block_id], value=value
            )
        found = [b for bs in self.blocks.values() for b in bs if b.block_id == block_id]
        if not found and block_id not in self.standalone_blocks:
            raise LettaNotFound("Letta does not know this item.", status=404)
        return found[0] if found else self.standalone_blocks[block_id]

    def delete_block(self, *, block_id: str) -> None:
        self.standalone_blocks.pop(block_id, None)
