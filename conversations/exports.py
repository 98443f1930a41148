"""A conversation, or all of a person's data, as files they can keep.

- ``conversation_markdown`` / ``conversation_json``: one thread, every message in order with its
  type (what the person and the agent said, reasoning, tool calls with their arguments, tool
  returns with their status, errors), per-turn usage, and what the agent changed in memory.
- ``user_export_zip``: every conversation of a person in both formats, and the memory blocks of
  their personal agents, read from Letta.

Read from the mirror, which the relay settles against Letta after every reply. Nothing here
writes.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from django.contrib.auth.models import User
from django.utils import timezone

from conversations import selectors
from conversations.models import Agent, Conversation, Message, Run
from letta_gateway import Gateway, MemoryBlockInfo

EXPORT_VERSION = 1


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _messages(conversation: Conversation) -> list[Message]:
    """Every shown message of the thread, oldest first, with its turn's usage attached."""
    messages = list(
        Message.objects.filter(conversation=conversation)
        .exclude(message_type=Message.Type.SYSTEM)
        .order_by("created_at", "id")
    )
    selectors.message_list_attach_usage(conversation=conversation, messages=messages)
    return messages


def _usage(message: Message) -> dict[str, Any] | None:
    usage = getattr(message, "turn_usage", None)
    if usage is None:
        return None
    return {
        "total_tokens": usage.total_tokens,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "context_tokens": usage.context_tokens,
        "stop_reason": usage.stop_reason or None,
    }


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    """The thread as data (``json.dumps`` it): the conversation, its messages, its runs."""
    runs = Run.objects.filter(conversation=conversation).exclude(status=Run.Status.RUNNING)
    return {
        "format": "lettachat-conversation",
        "version": EXPORT_VERSION,
        "exported_at": _iso(timezone.now()),
        "conversation": {
            "id": conversation.letta_id,
            "title": conversation.title,
            "agent": {"id": conversation.agent.letta_id, "name": conversation.agent.name},
            "owner": conversation.owner.get_username(),
            "created_at": _iso(conversation.created_at),
            "last_message_at": _iso(conversation.last_message_at),
            "archived": conversation.archived,
        },
        "messages": [
            {
                "id": message.letta_id,
                "type": message.message_type,
                "content": message.content,
                # A tool call's tool, a tool return's status ("success" / "error").
                **(
                    {"tool": message.name}
                    if message.message_type in ("tool_call", "approval")
                    else {}
                ),
                **({"status": message.name} if message.message_type == "tool_return" else {}),
                "created_at": _iso(message.created_at),
                "run_id": message.run_id or None,
                "error": message.error or None,
                "memory_change": message.memory_change,
                "usage": _usage(message),
            }
            for message in _messages(conversation)
        ],
        "runs": [
            {
                "id": run.letta_run_id or None,
                "status": run.status,
                "stop_reason": run.stop_reason or None,
                "error": run.error or None,
                "prompt_tokens": run.prompt_tokens,
                "completion_tokens": run.completion_tokens,
                "total_tokens": run.total_tokens,
                "context_tokens": run.context_tokens,
                "started_at": _iso(run.created_at),
                "finished_at": _iso(run.finished_at),
            }
            for run in runs.order_by("created_at", "id")
        ],
    }


def _fence(text: str, info: str = "") -> str:
    """A code fence longer than any run of backticks inside ``text``."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}{info}\n{text}\n{ticks}"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.splitlines() or [""])


def _when(at: datetime) -> str:
    return timezone.localtime(at).strftime("%Y-%m-%d %H:%M:%S %Z")


def conversation_markdown(conversation: Conversation) -> str:
    """The thread as a Markdown document a person can read."""
    agent = conversation.agent
    lines = [
        f"# {conversation.title}",
        "",
        f"- Conversation: `{conversation.letta_id}`",
        f"- Agent: {agent.name} (`{agent.letta_id}`)",
        f"- Owner: {conversation.owner.get_username()}",
        f"- Started: {_when(conversation.created_at)}",
        f"- Exported: {_when(timezone.now())}",
        "",
    ]
    for message in _messages(conversation):
        lines += [*_markdown_of(message, agent_name=agent.name), ""]
        if (usage := _usage(message)) is not None:
            lines += [_usage_line(usage), ""]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_of(message: Message, *, agent_name: str) -> list[str]:
    when = _when(message.created_at)
    kind = message.message_type
    if kind == Message.Type.USER:
        out = [f"## You · {when}", "", message.content]
        if message.error:
            out += ["", f"_Not delivered: {message.error}_"]
        return out
    if kind == Message.Type.ASSISTANT:
        out = [f"## {agent_name} · {when}", "", message.content]
        if message.error:
            out += ["", f"_{message.error}_"]
        return out
    if kind == Message.Type.REASONING:
        return [f"**Reasoning** · {when}", "", _quote(message.content)]
    if kind == Message.Type.TOOL_CALL:
        return [f"**Tool call: `{message.name}`** · {when}", "", _fence(message.content, "json")]
    if kind == Message.Type.APPROVAL:
        return [
            f"**Asked for approval to use `{message.name}`** · {when}",
            "",
            _fence(message.content, "json"),
        ]
    if kind == Message.Type.TOOL_RETURN:
        status = "error" if message.name == "error" else "success"
        out = [f"**Tool result ({status})** · {when}", "", _fence(message.content)]
        if change := message.memory_change:
            out += ["", f"_Memory updated: {change.get('label') or '?'}_"]
            if change.get("removed"):
                out += [_quote(f"- {change['removed']}")]
            if change.get("added"):
                out += [_quote(f"+ {change['added']}")]
        return out
    return [f"**Note** · {when}", "", f"_{message.content}_"]


def _usage_line(usage: dict[str, Any]) -> str:
    parts = []
    if usage["total_tokens"] is not None:
        parts.append(
            f"{usage['total_tokens']} tokens (prompt {usage['prompt_tokens']}, "
            f"completion {usage['completion_tokens']})"
        )
    if usage["context_tokens"] is not None:
        parts.append(f"context {usage['context_tokens']}")
    if usage["stop_reason"]:
        parts.append(f"stop reason: {usage['stop_reason']}")
    return f"_Usage: {' · '.join(parts)}_"


def conversation_filename(conversation: Conversation, extension: str) -> str:
    """A file name for the download: the title made safe, and the Letta id."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", conversation.title).strip("-.")[:60] or "conversation"
    return f"{stem}-{conversation.letta_id}.{extension}"


# --- Everything of a person ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgentMemory:
    agent: Agent
    blocks: list[MemoryBlockInfo]


def personal_memory(*, gateway: Gateway, user: User) -> list[AgentMemory]:
    """The memory blocks of each of the person's own agents, read from Letta.

    Raises ``LettaError`` when Letta cannot be read: an export must not leave it out silently.
    """
    agents = Agent.objects.filter(owner=user).select_related("template").order_by("pk")
    return [AgentMemory(a, gateway.list_blocks(agent_id=a.letta_id)) for a in agents]


def _user_conversations(user: User) -> Iterator[Conversation]:
    return (
        Conversation.objects.filter(owner=user)
        .select_related("agent", "owner")
        .order_by("created_at", "id")
        .iterator(chunk_size=100)
    )


def user_export_zip(*, gateway: Gateway, user: User, out: IO[bytes]) -> int:
    """Write a zip of everything lettachat holds of ``user`` to ``out``; returns how many
    conversations it holds.

    ``conversations/<file>.md`` and ``.json`` per conversation, ``memory/<agent>.json`` per
    personal agent (read from Letta first, so a Letta failure writes nothing), ``README.txt``.
    """
    memories = personal_memory(gateway=gateway, user=user)
    count = 0
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for conversation in _user_conversations(user):
            count += 1
            name = conversation_filename(conversation, "md")
            archive.writestr(f"conversations/{name}", conversation_markdown(conversation))
            archive.writestr(
                f"conversations/{name[:-3]}.json",
                json.dumps(conversation_json(conversation), indent=2, ensure_ascii=False),
            )
        for memory in memories:
            made_from = memory.agent.template
            archive.writestr(
                f"memory/{memory.agent.letta_id}.json",
                json.dumps(
                    {
                        "agent": {"id": memory.agent.letta_id, "name": memory.agent.name},
                        "made_from": made_from.name if made_from else None,
                        "blocks": [
                            {"label": b.label, "value": b.value, "limit": b.limit}
                            for b in memory.blocks
                        ],
                    },
                    indent=2,
                    ensure_ascii=False,
                ),
            )
        archive.writestr("README.txt", _readme(user, count, len(memories)))
    return count


def _readme(user: User, conversations: int, agents: int) -> str:
    return (
        f"lettachat export for {user.get_username()}, made {_when(timezone.now())}.\n\n"
        f"conversations/: {conversations} conversation(s), each as Markdown (to read) and JSON "
        "(every message with its type, tool calls and returns, usage).\n"
        f"memory/: the memory blocks of your {agents} personal agent(s), as Letta held them.\n\n"
        "Not included: the memory of shared agents, which belongs to everyone who uses them.\n"
    )
