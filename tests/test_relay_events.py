"""A reply as a stream of typed events, read as data (a collecting sink), against the scripted
gateway. The web sink's fragments for the same replies are tests/test_replies.py and
tests/test_consumers.py; the terminal's, tests/test_chat_command.py."""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async

from conversations import actions, events
from conversations.relay import registry
from conversations.sinks import CollectingSink
from letta_gateway import (
    ContentDelta,
    LettaUnavailable,
    RunStarted,
    Stopped,
    ToolCallDelta,
    ToolReturn,
    Usage,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def a_reply(conversation, text: str, sink: CollectingSink) -> None:
    """Send ``text`` and wait until its reply is over."""
    await actions.message_send(conversation=conversation, text=text, otid="", also=(sink,))
    while not sink.of(events.ReplyFinished):
        relay = registry.running_here(conversation.pk)
        if relay is None or relay.task is None:
            break
        await asyncio.wait({relay.task})


def kinds(sink: CollectingSink) -> list[str]:
    return [type(event).__name__ for event, _ in sink.events]


async def test_a_reply_is_told_as_typed_events_in_order(conversation, fake_gateway):
    fake_gateway.enqueue(
        [
            RunStarted("run-1", 1),
            ContentDelta("m-1", "assistant", "Hel", "run-1", 2),
            ContentDelta("m-1", "assistant", "lo", "run-1", 3),
            Stopped("end_turn"),
            Usage(10, 2, 12, 700, 1),
        ]
    )
    sink = CollectingSink()
    await a_reply(conversation, "hi", sink)

    assert kinds(sink)[:2] == ["MessageAdded", "ConversationActive"]
    assert kinds(sink)[2:] in (
        # The second piece may already be queued behind the first: then both come as one.
        ["ReplyStatus", "DraftStarted", "TextAppended", "DraftStored", "UsageReported",
         "ReplyFinished"],
        ["ReplyStatus", "DraftStarted", "DraftStored", "UsageReported", "ReplyFinished"],
    )  # fmt: skip
    [sent] = sink.of(events.MessageAdded)
    assert sent.message.content == "hi"
    [active] = sink.of(events.ConversationActive)
    assert active.retitled, "a first message titles the thread"
    [status] = sink.of(events.ReplyStatus)
    assert (status.state, status.agent_name) == ("answering", "Helper")
    [started] = sink.of(events.DraftStarted)
    assert (started.draft.stream_id, started.draft.kind) == ("assistant-m-1", "assistant")
    [stored] = sink.of(events.DraftStored)
    assert (stored.stream_id, stored.message.content) == ("assistant-m-1", "Hello")
    [usage] = sink.of(events.UsageReported)
    assert (usage.usage.total_tokens, usage.usage.context_tokens) == (12, 700)
    [finished] = sink.of(events.ReplyFinished)
    assert finished.outcome == "done"
    # Every event of the relay is numbered, in order, on the relay's channel.
    stamps = [stamp for _, stamp in sink.events[2:]]  # (the first two: the send, not the relay)
    assert [s.tick for s in stamps] == list(range(1, len(stamps) + 1))
    assert len({s.relay for s in stamps}) == 1 and stamps[0].relay


async def test_a_tool_call_its_return_and_a_memory_change_are_events(conversation, fake_gateway):
    fake_gateway.set_blocks(conversation.agent.letta_id, human="likes tea")
    fake_gateway.enqueue(
        [
            RunStarted("run-1", 1),
            ToolCallDelta("t-1", "call-1", "memory_insert", '{"label": "human", ', "run-1", 2),
            ToolCallDelta("t-1", "call-1", "", '"new_string": "tea"}', "run-1", 3),
            ToolReturn("r-1", "call-1", "success", "likes tea", "run-1", 4),
            Stopped("end_turn"),
        ]
    )
    sink = CollectingSink()
    await a_reply(conversation, "remember", sink)

    [call] = sink.of(events.DraftStored)
    assert (call.message.message_type, call.message.name) == ("tool_call", "memory_insert")
    returned = [e for e in sink.of(events.MessageAdded) if e.message.message_type == "tool_return"]
    assert [r.message.content for r in returned] == ["likes tea"]
    [changed] = sink.of(events.MemoryChanged)
    assert changed.message.memory_change["label"] == "human"
    assert [b.value for b in changed.blocks] == ["likes tea"]


async def test_a_message_letta_never_took_comes_back_to_its_sender(conversation, fake_gateway):
    # Refused: the send never reached Letta (its fate is known).
    fake_gateway.enqueue(LettaUnavailable("The Letta server cannot be reached.", reached=False))
    sink = CollectingSink()
    await actions.message_send(
        conversation=conversation, text="hello?", otid="", sender="the-sender", also=(sink,)
    )
    relay = registry.running_here(conversation.pk)
    await relay.task

    [changed] = sink.of(events.MessageChanged)
    assert changed.message.error == "The Letta server cannot be reached."
    [back] = sink.of(events.TextGivenBack)
    assert (back.text, back.sender) == ("hello?", "the-sender")
    [finished] = sink.of(events.ReplyFinished)
    assert finished.outcome == "failed"


async def test_the_same_message_sent_again_tells_nothing_new(conversation, fake_gateway):
    fake_gateway.enqueue_text("Hi")
    sink = CollectingSink()
    await a_reply(conversation, "once", sink)
    message = await database_sync_to_async(lambda: conversation.messages.get(message_type="user"))()
    again = CollectingSink()
    sent = await actions.message_send(
        conversation=conversation, text="once", otid=message.otid, also=(again,)
    )
    assert not sent.started and again.events == []
