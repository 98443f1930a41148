"""What the Letta integration hands back: frozen dataclasses, and the gateway's protocol.

Nothing here imports ``letta_client``: the rest of lettachat (and the scripted fake gateway) know
Letta only through these types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol


@dataclass(frozen=True, slots=True)
class MemoryBlockInfo:
    label: str
    value: str
    limit: int | None
    block_id: str = ""
    read_only: bool = False
    description: str = ""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    letta_id: str
    name: str
    description: str
    model: str
    blocks: tuple[MemoryBlockInfo, ...] = ()
    tags: tuple[str, ...] = ()
    # The model's context window in tokens (``llm_config.context_window``), when Letta says.
    context_window: int | None = None


@dataclass(frozen=True, slots=True)
class ToolInfo:
    tool_id: str
    name: str


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What makes an agent behave as it does: enough to make a copy of it, or to re-apply it.

    ``tool_rules`` are Letta's rules as plain data (passed back as they came).
    """

    letta_id: str
    name: str
    description: str
    model: str
    agent_type: str
    system: str
    tools: tuple[ToolInfo, ...]
    tool_rules: tuple[dict[str, object], ...]
    blocks: tuple[MemoryBlockInfo, ...]
    tags: tuple[str, ...] = ()
    context_window: int | None = None

    @property
    def approval_tools(self) -> frozenset[str]:
        """The tools that wait for a person's approval before they run (Letta's
        ``requires_approval`` tool rules)."""
        return frozenset(
            str(rule.get("tool_name") or "")
            for rule in self.tool_rules
            if rule.get("type") == "requires_approval"
        )


@dataclass(frozen=True, slots=True)
class ConversationInfo:
    letta_id: str
    agent_id: str
    summary: str
    created_at: datetime | None
    last_message_at: datetime | None


@dataclass(frozen=True, slots=True)
class ConversationDetails:
    """A conversation as ``conversations.retrieve`` tells it: which messages are in the agent's
    context window now (the others were compacted away), and Letta's summary."""

    letta_id: str
    agent_id: str
    summary: str
    created_at: datetime | None
    last_message_at: datetime | None
    in_context_message_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CompactionInfo:
    """What a compaction did: how many messages were in context before and after, and the
    summary that replaced the others."""

    messages_before: int
    messages_after: int
    summary: str


MessageKind = Literal[
    "user", "assistant", "reasoning", "tool_call", "tool_return", "system", "error", "approval"
]


@dataclass(frozen=True, slots=True)
class ToolCallRequest:
    """A tool call the agent asks a person to approve: its id, the tool, its arguments (JSON)."""

    tool_call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ApprovalAnswer:
    """A person's answer to one tool call waiting for approval (``reason``: optional, sent to
    the agent with a denial or an approval)."""

    tool_call_id: str
    approve: bool
    reason: str = ""


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """A whole message as Letta stores it.

    An ``approval`` message is Letta's ``approval_request_message``: the tool calls waiting for
    a person's answer are ``tool_calls`` (``name``/``content``: the first one's tool and
    arguments)."""

    letta_id: str
    message_type: MessageKind
    content: str
    created_at: datetime
    name: str = ""
    otid: str = ""
    run_id: str = ""
    tool_calls: tuple[ToolCallRequest, ...] = ()


@dataclass(frozen=True, slots=True)
class RunState:
    """Where Letta says a run is: ``status`` created, running, completed, failed or cancelled."""

    run_id: str
    status: str
    stop_reason: str = ""

    @property
    def over(self) -> bool:
        return self.status in ("completed", "failed", "cancelled")


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
class ApprovalRequest:
    """A piece of a tool call the agent asks a person to approve before it runs (Letta's
    ``approval_request_message``; the run then stops with ``requires_approval``). Streamed in
    pieces like a tool call: pieces of one share ``message_id`` and ``tool_call_id``; the first
    names the tool, the arguments are the pieces' concatenation."""

    message_id: str
    tool_call_id: str
    name: str
    arguments: str
    run_id: str = ""
    seq_id: int | None = None


@dataclass(frozen=True, slots=True)
class ApprovalPending:
    """The message was refused: the conversation waits for an answer to a tool call's approval
    request (made in this reply before, or in another client). Nothing of the message was kept."""

    run_id: str = ""


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
    RunStarted
    | Ping
    | ContentDelta
    | ToolCallDelta
    | ToolReturn
    | ApprovalRequest
    | ApprovalPending
    | StreamError
    | Stopped
    | Usage
)


class Gateway(Protocol):
    """What the rest of lettachat needs from Letta; ``letta_gateway.fake`` has a scripted one."""

    def health(self) -> str: ...
    async def ahealth(self, *, timeout: float) -> str: ...
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
    def stream_reply(
        self, *, conversation_id: str, text: str, otid: str
    ) -> Iterator[StreamEvent]: ...
    def astream_resume(
        self,
        *,
        conversation_id: str,
        run_id: str = "",
        after_seq: int | None = None,
        otid: str = "",
    ) -> AsyncIterator[StreamEvent]: ...
    def astream_approval(
        self, *, conversation_id: str, answers: Sequence[ApprovalAnswer], otid: str
    ) -> AsyncIterator[StreamEvent]: ...
    def set_tool_approval(self, *, agent_id: str, tool_name: str, required: bool) -> None: ...
    async def arun_state(self, *, run_id: str) -> RunState | None: ...

    async def arun_conversation(self, *, run_id: str) -> str | None:
        """The conversation a run belongs to ("" for none; None when it cannot be told)."""
        ...

    async def acancel(self, *, conversation_id: str, run_id: str = "", agent_id: str = "") -> bool:
        """Stop run ``run_id`` (of agent ``agent_id``) when given, else every active run of the
        conversation; False when Letta had nothing to stop."""
        ...

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
    def retrieve_conversation(self, *, conversation_id: str) -> ConversationDetails: ...
    def compact_conversation(self, *, conversation_id: str) -> CompactionInfo: ...
    def fork_conversation(
        self, *, conversation_id: str, message_id: str | None = None
    ) -> ConversationInfo: ...
    def retrieve_agent(self, *, agent_id: str) -> AgentInfo: ...
    def list_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]: ...
    async def alist_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]: ...
    # Agents of their own: copies of a template, identities, common blocks.
    def agent_config(self, *, agent_id: str) -> AgentConfig: ...
    def create_agent_copy(
        self,
        *,
        template: AgentConfig,
        name: str,
        skip_labels: frozenset[str] = frozenset(),
        block_ids: tuple[str, ...] = (),
        identity_id: str = "",
        tags: tuple[str, ...] = (),
    ) -> AgentInfo: ...
    def reapply_agent_config(self, *, agent_id: str, template: AgentConfig) -> None: ...
    def delete_agent(
        self, *, agent_id: str, keep_block_ids: frozenset[str] = frozenset()
    ) -> None: ...
    def identity_ensure(self, *, identifier_key: str, name: str) -> str: ...
    def delete_identity(self, *, identifier_key: str) -> None: ...
    def create_block(
        self, *, label: str, value: str, limit: int | None, read_only: bool, description: str = ""
    ) -> MemoryBlockInfo: ...
    def attach_block(self, *, agent_id: str, block_id: str) -> None: ...
    def retrieve_block(self, *, block_id: str) -> MemoryBlockInfo: ...
    def update_block(self, *, block_id: str, value: str) -> MemoryBlockInfo: ...
    def delete_block(self, *, block_id: str) -> None: ...
