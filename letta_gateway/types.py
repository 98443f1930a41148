"""What the Letta integration hands back: frozen dataclasses, and the gateway's protocol.

Nothing here imports ``letta_client``: the rest of lettachat (and the scripted fake gateway) know
Letta only through these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class MemoryBlockInfo:
    label: str
    value: str
    limit: int | None


@dataclass(frozen=True, slots=True)
class AgentInfo:
    letta_id: str
    name: str
    description: str
    model: str
    blocks: tuple[MemoryBlockInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    letta_id: str
    agent_id: str
    summary: str
    created_at: datetime | None
    last_message_at: datetime | None


MessageKind = Literal[
    "user", "assistant", "reasoning", "tool_call", "tool_return", "system", "error"
]


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """A whole message as Letta stores it."""

    letta_id: str
    message_type: MessageKind
    content: str
    created_at: datetime
    name: str = ""
    otid: str = ""
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class RunStarted:
    """The first event of a reply: Letta has accepted the message and started a run."""

    run_id: str
    seq_id: int | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """A keep-alive inside a running reply: the run is alive but has nothing new to say."""

    seq_id: int | None = None


@dataclass(frozen=True, slots=True)
class ContentDelta:
    """A piece of an assistant or reasoning message; pieces of one message share ``message_id``."""

    message_id: str
    kind: Literal["assistant", "reasoning"]
    text: str
    run_id: str = ""
    seq_id: int | None = None


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    message_id: str
    tool_call_id: str
    name: str
    arguments: str
    run_id: str = ""
    seq_id: int | None = None


@dataclass(frozen=True, slots=True)
class ToolReturn:
    message_id: str
    tool_call_id: str
    status: str
    content: str
    run_id: str = ""
    seq_id: int | None = None


@dataclass(frozen=True, slots=True)
class StreamError:
    """Letta reported an error inside the stream (the run failed)."""

    error_type: str
    message: str
    detail: str = ""
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class Stopped:
    """Why the agent loop stopped: ``end_turn`` is the normal end of a reply."""

    reason: str


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    context_tokens: int | None
    step_count: int | None


StreamEvent = (
    RunStarted | Ping | ContentDelta | ToolCallDelta | ToolReturn | StreamError | Stopped | Usage
)


class Gateway(Protocol):
    """What the rest of lettachat needs from Letta; ``letta_gateway.fake`` has a scripted one."""

    def health(self) -> str: ...
    def list_agents(self) -> list[AgentInfo]: ...
    def create_agent(
        self, *, name: str, model: str, description: str, blocks: dict[str, str]
    ) -> AgentInfo: ...
    def create_conversation(self, *, agent_id: str) -> ConversationInfo: ...
    def list_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]: ...
    async def alist_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]: ...
    def astream_reply(
        self, *, conversation_id: str, text: str, otid: str
    ) -> AsyncIterator[StreamEvent]: ...
    def astream_resume(
        self, *, conversation_id: str, run_id: str = "", after_seq: int | None = None
    ) -> AsyncIterator[StreamEvent]: ...
    async def acancel(self, *, conversation_id: str) -> bool: ...
    def list_conversations(
        self,
        *,
        agent_id: str,
        after: str | None = None,
        limit: int = 50,
        summary_search: str | None = None,
    ) -> list[ConversationInfo]: ...
    def update_conversation(self, *, conversation_id: str, summary: str) -> ConversationInfo: ...
    def delete_conversation(self, *, conversation_id: str) -> None: ...
    def fork_conversation(
        self, *, conversation_id: str, message_id: str | None = None
    ) -> ConversationInfo: ...
    def list_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]: ...
    async def alist_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]: ...
