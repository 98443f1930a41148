"""Conversations and messages as terminal lines (rich renderables): the terminal's partials.

Assistant text is markdown, rendered for the terminal; reasoning is dimmed; tool calls and their
returns take one line each. Nothing here reads the database or talks to Letta.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.utils import timezone
from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.text import Text

from conversations.models import Agent, Conversation, Message
from conversations.selectors import TurnUsage

TOOL_RETURN_OK = "success"


def one_line(text: str) -> str:
    """Text on one line: whitespace runs (newlines included) become one space."""
    return " ".join(text.split())


def when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return timezone.localtime(moment).strftime("%Y-%m-%d %H:%M")


def agent_header(name: str) -> Text:
    return Text(name, style="bold cyan")


def you(text: str) -> Text:
    return Text.assemble(("you", "bold green"), " > ", text)


def reasoning(text: str) -> Text:
    return Text(f"thinking: {text}", style="dim italic")


def tool_call(name: str, arguments: str) -> Text:
    """A tool call in one line (cut to the terminal's width when printed with ``no_wrap``)."""
    return Text.assemble(
        ("⚙ ", "magenta"), (name or "tool", "magenta"), " ", (one_line(arguments), "dim")
    )


def tool_return(status: str, content: str) -> Text:
    style = "dim" if status == TOOL_RETURN_OK else "red"
    label = status or "returned"
    if status and status != TOOL_RETURN_OK:
        label = f"Tool error ({status})"
    return Text(f"  ↳ {label}: {one_line(content)}", style=style)


def note(text: str) -> Text:
    return Text(f"! {text}", style="yellow")


def memory_change(change: dict[str, object]) -> Text:
    label = change.get("label") or "a block"
    added = one_line(str(change.get("added") or ""))
    removed = one_line(str(change.get("removed") or ""))
    what = f"+ {added}" if added else ""
    if removed:
        what = f"- {removed} {what}".rstrip()
    return Text(f"  ✎ memory {label}: {what}".rstrip(": "), style="blue")


def usage(turn: TurnUsage) -> Text:
    parts = []
    if turn.total_tokens is not None:
        parts.append(f"{turn.total_tokens} tokens")
    if turn.context_tokens is not None:
        parts.append(f"context {turn.context_tokens}")
    if turn.stop_reason:
        parts.append(f"stop reason: {turn.stop_reason}")
    return Text("  " + " · ".join(parts), style="dim")


def is_one_line(message: Message) -> bool:
    """Messages printed on a single line (cut to the width), not wrapped."""
    return message.message_type in (Message.Type.TOOL_CALL, Message.Type.TOOL_RETURN)


def message(message: Message, *, agent_name: str) -> RenderableType:
    """A stored message as it reads in /history (and when a reply adds one)."""
    kind = message.message_type
    body: RenderableType
    if kind == Message.Type.USER:
        body = you(message.content)
    elif kind == Message.Type.ASSISTANT:
        body = Group(agent_header(agent_name), Markdown(message.content))
    elif kind == Message.Type.REASONING:
        body = reasoning(message.content)
    elif kind == Message.Type.TOOL_CALL:
        body = tool_call(message.name, message.content)
    elif kind == Message.Type.TOOL_RETURN:
        body = tool_return(message.name, message.content)
        if message.memory_change:
            body = Group(body, memory_change(message.memory_change))
    elif kind == Message.Type.ERROR:
        body = note(message.content)
    else:
        body = Text(message.content, style="dim")
    if message.error and kind != Message.Type.ERROR:
        return Group(body, note(message.error))
    return body


def conversation_list(
    conversations: Iterable[Conversation], counts: dict[int, int], *, current: Conversation | None
) -> Group:
    """/list and /search: numbered for /switch (``*`` the open one), each with when it was
    created, its message count and id, on two lines, so an 80-column terminal cuts only a long
    title."""
    lines: list[Text] = []
    for number, conversation in enumerate(conversations, start=1):
        mark = "*" if current is not None and conversation.pk == current.pk else " "
        title = conversation.title + (" (archived)" if conversation.archived else "")
        count = counts.get(conversation.pk, 0)
        lines.append(Text.assemble(f"{mark}{number:>2}  ", (title, "bold"), no_wrap=True))
        lines.append(
            Text(
                f"     {when(conversation.created_at)} · {count} message"
                f"{'' if count == 1 else 's'} · {conversation.letta_id}",
                style="dim",
            )
        )
    return Group(*lines)


def sharing_line(agent: Agent) -> Text:
    """Whose memory the agent's conversations go to: the page's privacy notice, in one line."""
    if agent.sharing == Agent.Sharing.SHARED:
        return Text(
            f"{agent.name} is shared: everyone who talks to it shares its memory, and it can "
            "search every conversation anyone has with it. What you say may come up in other "
            "people's conversations.",
            style="yellow",
        )
    return Text(
        f"{agent.name} is personal: your conversations go to your own copy of it, with a memory "
        "of its own.",
        style="dim",
    )
