"""Shared memory, made visible: the memory panel, and what a memory tool call changed.

Against the scripted gateway; ``tests/integration/test_memory_letta.py`` does it against the real
Letta server (memory shared across conversations, messages not).
"""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse

from conversations import memory
from conversations.models import Message
from letta_gateway import (
    ContentDelta,
    LettaUnavailable,
    RunStarted,
    Stopped,
    ToolCallDelta,
    ToolReturn,
)
from tests.html_safety import assert_inert
from tests.page_model import PageModel, parse
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'


def memory_turn(tool: str, arguments: dict, *, status: str = "success", result: str = "ok"):
    """A reply that calls ``tool``, gets ``result`` back, then answers."""
    args = json.dumps(arguments)
    half = len(args) // 2
    return [
        RunStarted("run-1"),
        ToolCallDelta("m-call", "call-1", tool, args[:half], "run-1"),
        ToolCallDelta("m-call", "call-1", "", args[half:], "run-1"),
        ToolReturn("m-ret", "call-1", status, result, "run-1"),
        ContentDelta("m-a", "assistant", "Noted.", "run-1"),
        Stopped("end_turn"),
    ]


async def tool_return_of(conversation) -> Message:
    return await database_sync_to_async(
        lambda: conversation.messages.get(message_type=Message.Type.TOOL_RETURN)
    )()


def panel_frames(frames: list[str]) -> list[str]:
    return [f for f in frames if 'id="memory-panel"' in f]


# --- What a call changed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "change"),
    [
        (
            "memory_insert",
            {"label": "human", "new_string": "Likes tea."},
            memory.MemoryChange("human", "", "Likes tea."),
        ),
        (
            "memory_replace",
            {"label": "human", "old_string": "tea", "new_string": "coffee"},
            memory.MemoryChange("human", "tea", "coffee"),
        ),
        (
            "memory_rethink",
            {"label": "persona", "new_memory": "All new."},
            memory.MemoryChange("persona", "", "All new."),
        ),
        (
            "rethink_memory",
            {"target_block_label": "human", "new_memory": "X"},
            memory.MemoryChange("human", "", "X"),
        ),
        (
            "core_memory_append",
            {"label": "human", "content": "Has a cat."},
            memory.MemoryChange("human", "", "Has a cat."),
        ),
        (
            "core_memory_replace",
            {"label": "human", "old_content": "cat", "new_content": "dog"},
            memory.MemoryChange("human", "cat", "dog"),
        ),
        (
            "memory",
            {
                "command": "str_replace",
                "path": "/memories/human",
                "old_string": "a",
                "new_string": "b",
            },
            memory.MemoryChange("human", "a", "b"),
        ),
        (
            "memory",
            {"command": "insert", "path": "/memories/notes", "insert_text": "N"},
            memory.MemoryChange("notes", "", "N"),
        ),
        ("memory_apply_patch", {"label": "human", "patch": "@@"}, memory.MemoryChange("human")),
        # Arguments that are not what the tool takes still name what was touched, if they can.
        ("memory_insert", {"label": "human", "new_str": "typo"}, memory.MemoryChange("human")),
        ("memory_insert", ["not", "an", "object"], memory.MemoryChange("")),
    ],
)
def test_a_memory_tool_calls_change_is_read_from_its_arguments(tool, arguments, change):
    assert memory.memory_change_of(tool, json.dumps(arguments)) == change


def test_other_tools_and_broken_arguments():
    assert memory.memory_change_of("conversation_search", '{"query": "x"}') is None
    assert memory.memory_change_of("send_message", '{"message": "x"}') is None
    assert memory.memory_change_of("memory_insert", '{"label": ') == memory.MemoryChange("")


# --- Live: a turn that edits memory -----------------------------------------------------------


async def test_a_memory_edit_shows_what_changed_and_refreshes_the_panel(
    conversation, user, fake_gateway, agent
):
    fake_gateway.set_blocks(
        agent.letta_id, human=("A tester.\nLikes <b>tea</b>.", 5000), persona="A test agent."
    )
    fake_gateway.enqueue(
        memory_turn(
            "memory_insert",
            {"label": "human", "new_string": "Likes <b>tea</b>."},
            result="A tester.\nLikes <b>tea</b>.",
        )
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "remember I like tea")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()

    # The tool return, kept with what changed: the block, the text added, its new size.
    returned = await tool_return_of(conversation)
    assert returned.memory_change == {
        "label": "human",
        "removed": "",
        "added": "Likes <b>tea</b>.",
        "size": len("A tester.\nLikes <b>tea</b>."),
        "limit": 5000,
    }
    assert fake_gateway.block_reads == [agent.letta_id], "read once, after the edit"

    # The page shows it in the turn, and the panel with the new value (all as text).
    page = PageModel()
    for frame in frames:
        page.apply(frame)
    shown = dict(page.articles())
    assert "Memory updated: human (27 / 5000 characters)" in shown[f"msg-{returned.pk}"]
    assert "Added: + Likes <b>tea</b>." in shown[f"msg-{returned.pk}"]
    [panel] = panel_frames(frames)
    assert_inert(panel)
    [aside] = [n for n in parse(panel) if getattr(n, "id", "") == "memory-panel"]
    assert aside.attrs["hx-swap-oob"] == "true"
    assert "hx-get" not in aside.attrs, "the refreshed panel does not load itself again"
    assert "A tester.\nLikes <b>tea</b>." in aside.text()
    assert "27 / 5000 characters" in aside.text()
    assert "A test agent." in aside.text()
    # In the turn's order: what changed shows before the answer starts.
    changed = next(i for i, f in enumerate(frames) if "Memory updated" in f)
    answer = next(i for i, f in enumerate(frames) if "Noted." in f)
    assert changed < answer


async def test_a_failed_memory_edit_changes_nothing_and_shows_the_error(
    conversation, user, fake_gateway, agent
):
    fake_gateway.enqueue(
        memory_turn(
            "memory_replace",
            {"label": "human", "old_string": "nope", "new_string": "x"},
            status="error",
            result="No replacement was performed, old_string `nope` did not appear verbatim.",
        )
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "fix my memory")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert fake_gateway.block_reads == []
    assert panel_frames(frames) == []
    returned = await tool_return_of(conversation)
    assert returned.memory_change is None
    [shown] = [f for f in frames if f'id="msg-{returned.pk}"' in f]
    # Collapsed, the summary says it failed and why.
    assert "activity-error" in shown
    assert (
        '<summary>Tool error: <span class="activity-preview">No replacement was performed' in shown
    )


async def test_other_tools_do_not_touch_the_memory_panel(conversation, user, fake_gateway):
    fake_gateway.enqueue(memory_turn("conversation_search", {"query": "tea"}))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "what did I say about tea")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert fake_gateway.block_reads == []
    assert panel_frames(frames) == []
    assert (await tool_return_of(conversation)).memory_change is None


async def test_when_memory_cannot_be_read_again_the_change_still_shows(
    conversation, user, fake_gateway, agent
):
    fake_gateway.enqueue(memory_turn("memory_insert", {"label": "human", "new_string": "Tea."}))
    original = fake_gateway.alist_blocks

    async def down(*, agent_id):
        await original(agent_id=agent_id)
        raise LettaUnavailable("The Letta server cannot be reached.")

    fake_gateway.alist_blocks = down
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "remember tea")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    returned = await tool_return_of(conversation)
    assert returned.memory_change == {
        "label": "human",
        "removed": "",
        "added": "Tea.",
        "size": None,
        "limit": None,
    }
    [panel] = panel_frames(frames)
    assert "Memory could not be read: The Letta server cannot be reached." in panel
    assert [f for f in frames if "Noted." in f], "the reply goes on"


# --- The panel on the page ------------------------------------------------------------------


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


def test_the_page_loads_the_panel_lazily_and_never_waits_for_letta(
    logged_in, conversation, fake_gateway, agent
):
    fake_gateway.set_blocks(agent.letta_id, human="A tester.")
    response = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    html = response.content.decode()
    url = reverse("conversation_memory", args=[conversation.letta_id])
    assert f'hx-get="{url}" hx-trigger="load"' in html
    assert "A tester." not in html
    assert fake_gateway.block_reads == []


def test_the_panel_shows_each_block_with_its_size_as_text(
    logged_in, conversation, fake_gateway, agent
):
    fake_gateway.set_blocks(
        agent.letta_id, human=(HOSTILE, 2000), persona=("Calm.\n  Indented.", None)
    )
    response = logged_in.get(reverse("conversation_memory", args=[conversation.letta_id]))
    assert response.status_code == 200
    html = response.content.decode()
    assert_inert(html)
    [aside] = [n for n in parse(html) if getattr(n, "id", "") == "memory-panel"]
    text = aside.text()
    assert HOSTILE in text
    assert f"{len(HOSTILE)} / 2000 characters" in text
    assert "Calm.\n  Indented." in text and "17 characters" in text
    assert "Shared by everyone who talks to Helper" in text  # a shared agent
    assert fake_gateway.block_reads == [agent.letta_id]


def test_the_panel_says_when_letta_is_down(logged_in, conversation, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in.get(reverse("conversation_memory", args=[conversation.letta_id]))
    assert response.status_code == 200  # htmx swaps it in: the panel says what is wrong
    assert b"Memory could not be read: The Letta server cannot be reached." in response.content


def test_a_reloaded_turn_still_shows_what_changed(logged_in, conversation):
    from django.utils import timezone

    Message.objects.create(
        conversation=conversation,
        message_type="tool_return",
        name="success",
        content="ok",
        memory_change={
            "label": "human",
            "removed": "tea",
            "added": "coffee",
            "size": 12,
            "limit": 100,
        },
        created_at=timezone.now(),
    )
    response = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    html = response.content.decode()
    assert "Memory updated: <strong>human</strong>" in html
    assert "<del>tea</del>" in html and "<ins>coffee</ins>" in html
    assert "(12 / 100 characters)" in html


def test_what_changed_is_shown_as_text_whatever_it_holds():
    from chat import fragments

    returned = Message(
        pk=9,
        message_type="tool_return",
        name="success",
        content="ok",
        memory_change={"label": HOSTILE, "removed": HOSTILE, "added": HOSTILE, "size": 1},
    )
    html = fragments.message_replaced(returned)
    assert_inert(html)
    [article] = [n for n in parse(html) if not isinstance(n, str)]
    assert article.text().count(HOSTILE) == 3
