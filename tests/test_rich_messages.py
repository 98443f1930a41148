"""Rich messages: agent activity, per-turn usage and stop reasons, and what screen readers hear.

Against the scripted gateway; the real Letta server's usage and tool errors are checked in
``tests/integration/test_memory_letta.py``, the page itself in
``tests/browser/test_rich_browser.py``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from chat import fragments
from conversations import relay, selectors
from conversations.models import Message, Run
from letta_gateway import (
    ContentDelta,
    RunStarted,
    Stopped,
    Usage,
)
from tests.page_model import parse
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def elements(html: str) -> list:
    return [n for n in parse(html) if not isinstance(n, str)]


def answer(*, usage: Usage | None, stop: str = "end_turn") -> list:
    events: list = [
        RunStarted("run-1"),
        ContentDelta("m-1", "assistant", "Hello", "run-1"),
        ContentDelta("m-1", "assistant", " there", "run-1"),
        Stopped(stop),
    ]
    return [*events, usage] if usage else events


async def the_run(conversation) -> Run:
    return await database_sync_to_async(lambda: conversation.runs.get())()


# --- Usage and stop reason, live --------------------------------------------------------------


async def test_a_finished_turn_shows_its_token_usage_once(conversation, user, fake_gateway):
    fake_gateway.enqueue(answer(usage=Usage(797, 22, 819, 426, 2)))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hi")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    run = await the_run(conversation)
    assert (run.prompt_tokens, run.completion_tokens, run.total_tokens, run.context_tokens) == (
        797,
        22,
        819,
        426,
    )
    usage = [f for f in frames if f"usage-{run.pk}" in f]
    assert len(usage) == 1
    [wrapper] = elements(usage[0])
    assert wrapper.attrs["hx-swap-oob"] == "beforeend:#messages"
    assert wrapper.text().strip() == "819 tokens (prompt 797, completion 22) · context 426"
    # After the reply's final form, before the line that says the reply is over.
    assert frames.index(usage[0]) > max(i for i, f in enumerate(frames) if "Hello there" in f)
    assert frames.index(usage[0]) == len(frames) - 2


async def test_a_turn_without_usage_and_a_normal_end_adds_no_line(conversation, user, fake_gateway):
    fake_gateway.enqueue(answer(usage=None))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hi")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert not [f for f in frames if "turn-usage" in f]


async def test_an_abnormal_stop_reason_is_shown_with_the_turn(conversation, user, fake_gateway):
    fake_gateway.enqueue(answer(usage=Usage(10, 5, 15, 20, 50), stop="max_steps"))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hi")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    run = await the_run(conversation)
    [line] = [f for f in frames if f"usage-{run.pk}" in f]
    assert elements(line)[0].text().strip() == (
        "15 tokens (prompt 10, completion 5) · context 20 · "
        "Ended at the most steps the agent may take"
    )
    assert any(relay.STOP_REASONS["max_steps"] in f for f in frames), "and the note says why"


def test_the_normal_stop_reasons_are_the_ones_the_relay_says_nothing_about():
    quiet = {reason for reason, note in relay.STOP_REASONS.items() if not note}
    assert quiet | {""} == selectors.NORMAL_STOP_REASONS


# --- Screen readers ---------------------------------------------------------------------------


async def test_screen_readers_are_told_a_reply_started_and_finished_not_each_token(
    conversation, user, fake_gateway
):
    fake_gateway.enqueue(answer(usage=None))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hi")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    statuses = [f for f in frames if 'id="reply-status"' in f]
    assert "Helper is answering…" in statuses[0]
    assert [f for f in frames if "Reply finished." in f] == [frames[-1]] == [statuses[-1]]
    # Tokens never touch the status line.
    assert all('id="reply-status"' not in f for f in frames if "<span hx-swap-oob" in f)


def test_the_idle_line_of_a_page_that_connects_announces_nothing():
    assert "Reply finished" not in fragments.idle_status()


def test_only_the_announcer_is_a_live_region(client, user, conversation):
    client.force_login(user)
    html = client.get(reverse("conversation_detail", args=[conversation.letta_id])).content
    nodes = {}

    def walk(items):
        for node in items:
            if not isinstance(node, str):
                if node.id:
                    nodes[node.id] = node
                walk(node.children)

    walk(parse(html.decode()))
    live = sorted(
        i for i, n in nodes.items() if "aria-live" in n.attrs or n.attrs.get("role") == "status"
    )
    assert live == ["reply-announcer"]
    assert nodes["reply-announcer"].attrs["aria-live"] == "polite"
    assert "visually-hidden" in nodes["reply-announcer"].attrs["class"]
    assert "aria-live" not in nodes["messages"].attrs


# --- Agent activity ---------------------------------------------------------------------------


def message(kind: str, content: str, *, name: str = "", pk: int = 7) -> Message:
    return Message(pk=pk, message_type=kind, content=content, name=name, created_at=T0)


def test_reasoning_and_tool_messages_are_agent_activity_and_tool_errors_show_collapsed():
    for kind in ("reasoning", "tool_call", "tool_return"):
        [article] = elements(fragments.message_replaced(message(kind, "x", name="success")))
        assert "msg-activity" in article.attrs["class"].split(), kind
    for kind in ("user", "assistant", "error"):
        [article] = elements(fragments.message_replaced(message(kind, "x")))
        assert "msg-activity" not in article.attrs["class"].split(), kind

    failed = fragments.message_replaced(
        message("tool_return", "Block `human` does not exist. " + "x" * 300, name="error")
    )
    assert 'class="activity activity-error"' in failed
    assert "<details" in failed and '<details class="activity activity-error" open' not in failed
    summary = failed.split("<summary>")[1].split("</summary>")[0]
    assert summary.startswith("Tool error: ")
    assert "Block `human` does not exist." in summary
    assert len(parse(summary)[-1].text()) <= 120, "a preview, the whole error is inside"
    assert "x" * 300 in failed

    fine = fragments.message_replaced(message("tool_return", "done", name="success"))
    assert "<summary>Tool result</summary>" in fine and "activity-error" not in fine


def test_streamed_activity_is_open_and_marked_as_activity():
    started = fragments.stream_started("tool_call-m", "tool_call", "{", "memory_insert")
    [wrapper] = elements(started)
    [article] = [n for n in wrapper.children if not isinstance(n, str)]
    assert "msg-activity" in article.attrs["class"]
    assert '<details class="activity" open>' in started
    assert "msg-activity" not in fragments.stream_started("assistant-m", "assistant", "Hi")


# --- Usage on the page ------------------------------------------------------------------------


def make_turn(conversation, n: int, *, at: datetime, usage: bool = True, note: str = "") -> Run:
    """A finished turn: the person's message, reasoning, the answer (and a note), and its run."""
    run_id = f"run-{n}"
    kinds = [("user", f"question {n}"), ("reasoning", "hmm"), ("assistant", f"answer {n}")]
    for i, (kind, text) in enumerate(kinds):
        Message.objects.create(
            conversation=conversation,
            message_type=kind,
            content=text,
            letta_id=f"message-{n}-{i}",
            run_id=run_id,
            created_at=at + timedelta(seconds=i),
        )
    if note:
        Message.objects.create(
            conversation=conversation,
            message_type="error",
            content=note,
            created_at=at + timedelta(seconds=5),
        )
    return Run.objects.create(
        conversation=conversation,
        letta_run_id=run_id,
        status=Run.Status.DONE,
        stop_reason="end_turn",
        prompt_tokens=100 + n if usage else None,
        completion_tokens=n if usage else None,
        total_tokens=100 + 2 * n if usage else None,
        context_tokens=50 + n if usage else None,
    )


def test_the_page_shows_each_finished_turns_usage_after_its_last_message(
    client, user, conversation
):
    first = make_turn(conversation, 1, at=T0)
    second = make_turn(conversation, 2, at=T0 + timedelta(minutes=1), note="Stopped.")
    second.stop_reason = "cancelled"
    second.status = Run.Status.STOPPED
    second.save()
    make_turn(conversation, 3, at=T0 + timedelta(minutes=2), usage=False)  # nothing to say
    running = make_turn(conversation, 4, at=T0 + timedelta(minutes=3))
    running.status = Run.Status.RUNNING
    running.save()

    client.force_login(user)
    html = client.get(reverse("conversation_detail", args=[conversation.letta_id])).content
    messages = next(n for n in _walk(parse(html.decode())) if n.id == "messages")
    order = [n.id for n in messages.children if not isinstance(n, str) and n.id]
    shown = {n.id: n for n in messages.children if not isinstance(n, str) and n.id}
    answer_1 = Message.objects.get(content="answer 1").pk
    note_2 = Message.objects.get(content="Stopped.").pk
    assert order[order.index(f"msg-{answer_1}") + 1] == f"usage-{first.pk}"
    assert order[order.index(f"msg-{note_2}") + 1] == f"usage-{second.pk}"
    assert [i for i in order if i.startswith("usage-")] == [
        f"usage-{first.pk}",
        f"usage-{second.pk}",
    ]
    assert shown[f"usage-{first.pk}"].text() == "102 tokens (prompt 101, completion 1) · context 51"
    # Stopped: the thread says so already ("Stopped."); the line does not repeat it.
    assert (
        shown[f"usage-{second.pk}"].text() == "104 tokens (prompt 102, completion 2) · context 52"
    )


def _walk(items):
    for node in items:
        if not isinstance(node, str):
            yield node
            yield from _walk(node.children)


def test_usage_costs_one_query_however_long_the_thread(client, user, conversation):
    client.force_login(user)
    url = reverse("conversation_detail", args=[conversation.letta_id])
    make_turn(conversation, 0, at=T0)
    client.get(url)  # warm up (sessions, content types)
    with CaptureQueriesContext(connection) as short:
        client.get(url)
    for n in range(1, 30):
        make_turn(conversation, n, at=T0 + timedelta(minutes=n))
    with CaptureQueriesContext(connection) as long:
        response = client.get(url)
    assert response.content.count(b'class="turn-usage"') == 30
    assert len(long) == len(short), [q["sql"] for q in long]
    run_reads = [q for q in long if 'FROM "conversations_run"' in q["sql"]]
    assert len(run_reads) == 1


def test_an_older_page_leaves_out_the_turn_that_goes_on_in_the_next_page(conversation):
    for n in range(3):
        make_turn(conversation, n, at=T0 + timedelta(minutes=n))
    shown = list(conversation.messages.order_by("created_at", "id"))
    cut = shown[:-1]  # the last turn's answer is on the newer page
    selectors.message_list_attach_usage(
        conversation=conversation, messages=cut, last_run_complete=False
    )
    with_usage = [m.content for m in cut if getattr(m, "turn_usage", None)]
    assert with_usage == ["answer 0", "answer 1"]
