"""The terminal's lines for stored things (``terminal.render``): what people and models wrote
is printed as text, never read as rich markup."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console

from conversations.models import Agent, Conversation, Message
from terminal import render


def printed(renderable) -> str:
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(renderable)
    return out.getvalue()


def test_a_list_numbers_conversations_with_created_date_count_and_id_on_two_lines():
    created = datetime(2026, 12, 3, 10, 13, tzinfo=UTC)
    one = Conversation(pk=1, letta_id="conv-" + "1" * 36, summary="[red]Plans[/] [[wait:1]]")
    two = Conversation(pk=2, letta_id="conv-" + "2" * 36, summary="", archived=True)
    one.created_at = two.created_at = created
    text = printed(render.conversation_list([one, two], {1: 1, 2: 12}, current=two))
    lines = text.splitlines()
    assert lines[0] == "  1  [red]Plans[/] [[wait:1]]"
    assert lines[1].endswith(f" · 1 message · conv-{'1' * 36}")
    assert lines[1].strip().startswith("2026-12-03 ")
    assert lines[2] == "* 2  New conversation (archived)"
    assert lines[3].endswith(f" · 12 messages · conv-{'2' * 36}")
    assert all(len(line) <= 80 for line in lines)


def test_messages_keep_their_brackets():
    user = Message(message_type="user", content="[bold]not bold[/bold]")
    call = Message(message_type="tool_call", name="search", content='{"q": "[x]"}')
    assert printed(render.message(user, agent_name="Helper")) == "you > [bold]not bold[/bold]\n"
    assert printed(render.message(call, agent_name="Helper")) == '⚙ search {"q": "[x]"}\n'


def test_the_sharing_line_says_whose_memory_it_is():
    shared = Agent(name="[Team]", sharing="shared")
    personal = Agent(name="Tutor", sharing="personal")
    assert printed(render.sharing_line(shared)).startswith("[Team] is shared: everyone")
    assert "your own copy" in printed(render.sharing_line(personal))
