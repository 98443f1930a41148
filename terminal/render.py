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

from conversations.approvals import arguments_shown
from conversations.models import Agent, Approval, Conversation, Message
from conversations.selectors import TurnUsage

TOOL_RETURN_OK = "success"
# An approval request's arguments: at most this many lines and characters, then a note.
ARGUMENT_LINES = 12
ARGUMENT_CHARS = 1200
APPROVE_QUESTION = "approve? [y/N/reason] "
APPROVE_HELP = "y approves · n/Enter denies · other text denies, as the reason · Ctrl-C: later"


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


def arguments_folded(arguments: str) -> tuple[str, str]:
    """A tool call's arguments, readable (JSON indented) and cut to ``ARGUMENT_LINES`` lines and
    ``ARGUMENT_CHARS`` characters: (the text shown, a note saying what was left out, or "")."""
    shown = arguments_shown(arguments)
    lines = shown.splitlines()
    kept = "\n".join(lines[:ARGUMENT_LINES])
    cut_lines = len(lines) - min(len(lines), ARGUMENT_LINES)
    cut_chars = len(kept) - ARGUMENT_CHARS
    if cut_chars > 0:
        kept = kept[:ARGUMENT_CHARS]
    if not cut_lines and cut_chars <= 0:
        return shown, ""
    left = len(shown) - len(kept)
    more = f"{cut_lines} more line{'' if cut_lines == 1 else 's'}, " if cut_lines else ""
    return kept + "…", f"(folded: {more}{left:,} more characters not shown)"


def approval_request(approval: Approval, *, agent_name: str) -> Group:
    """A pending request, compactly: who asks for which tool, and its arguments (text, never
    markup). How to answer (``APPROVE_HELP``) is said by whoever asks."""
    calls = approval.tool_calls or [{"name": approval.message.name, "arguments": ""}]
    parts: list[RenderableType] = [
        Text.assemble(
            ("? ", "bold yellow"),
            (agent_name or "The agent", "bold cyan"),
            (" asks to use ", "yellow"),
            (approval.tool_names, "bold magenta"),
            (" (your approval first):", "yellow"),
        )
    ]
    for call in calls:
        arguments, folded = arguments_folded(str(call.get("arguments") or ""))
        if len(calls) > 1:
            parts.append(Text(f"  {call.get('name') or 'tool'}:", style="magenta"))
        if arguments:
            parts.append(Text(_indent(arguments), style="dim"))
        if folded:
            parts.append(Text(f"  {folded}", style="dim italic"))
    return Group(*parts)


def approval_state(approval: Approval) -> Text:
    """One line for a request's answer: approved, denied (and why), answered elsewhere, or
    waiting again."""
    tools = approval.tool_names
    match approval.status:
        case Approval.Status.APPROVED:
            return Text(f"✓ Approved: {tools}.", style="green")
        case Approval.Status.DENIED:
            why = f": {one_line(approval.reason)}" if approval.reason else "."
            return Text(f"✗ Denied {tools}{why}", style="yellow")
        case Approval.Status.RESOLVED:
            return Text(f"The request to use {tools} was answered in another client.", style="dim")
        case _:
            return note(f"The answer did not reach Letta: the request to use {tools} waits again.")


def approval_elsewhere(approval: Approval) -> str:
    """How a request was answered in another client (a browser tab, another terminal)."""
    match approval.status:
        case Approval.Status.APPROVED:
            return "It was approved elsewhere."
        case Approval.Status.DENIED:
            why = f": {one_line(approval.reason)}" if approval.reason else "."
            return f"It was denied elsewhere{why}"
        case _:
            return "It was answered in another client."


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def is_one_line(message: Message) -> bool:
    """Messages printed on a single line (cut to the width), not wrapped."""
    return message.message_type in (
        Message.Type.TOOL_CALL,
        Message.Type.TOOL_RETURN,
        Message.Type.APPROVAL,
    )


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
    elif kind == Message.Type.APPROVAL:
        body = Text.assemble(
            ("? asked to use ", "yellow"),
            (message.name or "a tool", "magenta"),
            " ",
            (one_line(message.content), "dim"),
        )
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
