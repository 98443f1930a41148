"""The conversation websocket, against a scripted gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async

from chat.consumers import CLOSE_NOT_FOUND, CLOSE_UNAUTHENTICATED
from letta_gateway import (
    ContentDelta,
    LettaUnavailable,
    MessageInfo,
    RunStarted,
    Stopped,
    StreamError,
    ToolCallDelta,
    ToolReturn,
)
from tests.websocket import frames_until_idle, is_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)


async def messages_of(conversation):
    return await database_sync_to_async(
        lambda: list(conversation.messages.order_by("created_at", "id"))
    )()


async def test_a_socket_without_a_session_is_closed(conversation):
    communicator, connected, _ = await open_socket(conversation.letta_id)
    assert connected
    assert (await communicator.receive_output())["code"] == CLOSE_UNAUTHENTICATED
    await communicator.disconnect()


async def test_someone_elses_conversation_is_closed_with_404(conversation, other_user):
    communicator, _, _ = await open_socket(conversation.letta_id, user=other_user)
    assert (await communicator.receive_output())["code"] == CLOSE_NOT_FOUND
    await communicator.disconnect()


async def test_an_unknown_conversation_is_closed_with_404(user):
    communicator, _, _ = await open_socket("conv-does-not-exist", user=user)
    assert (await communicator.receive_output())["code"] == CLOSE_NOT_FOUND
    await communicator.disconnect()


async def test_a_conversation_on_a_hidden_agent_is_closed(make_conversation, hidden_agent, user):
    conversation = await database_sync_to_async(make_conversation)(user, on_agent=hidden_agent)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    assert (await communicator.receive_output())["code"] == CLOSE_NOT_FOUND
    await communicator.disconnect()


async def test_a_foreign_origin_is_refused(conversation, user):
    _, connected, _ = await open_socket(
        conversation.letta_id, user=user, origin=b"https://evil.example"
    )
    assert not connected


@pytest.mark.parametrize(
    "fragments", ["list", pytest.param("pubsub", marks=pytest.mark.production_stack)]
)
async def test_a_reply_streams_token_by_token_and_is_stored_once_per_message(
    conversation, user, fake_gateway, fragments, request
):
    request.getfixturevalue(f"fragments_over_{fragments}")
    message_id = fake_gateway.enqueue_text("Hello", " there", " **friend**", one_by_one=True)
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected

    await send_message(communicator, "hi <b>you</b>")
    frames = []
    while not frames or not is_idle(frames[-1]):
        frames.append(await communicator.receive_from(timeout=10))
        if f"stream-assistant-{message_id}-" in frames[-1]:
            fake_gateway.step()  # the model's next piece comes once this one is on the page
    await communicator.disconnect()

    text = "\n".join(frames)
    # The box is emptied for the sender, the message appears, escaped.
    assert 'id="composer"' in frames[0]
    assert "hi &lt;b&gt;you&lt;/b&gt;" in text
    # The first token starts a draft; each later token is its own frame, formatted as it comes:
    # the block being written, replaced.
    draft = f"stream-assistant-{message_id}"
    assert f'id="{draft}-open"><p>Hello</p>\n</div>' in text
    assert f'innerHTML:#{draft}-open"><p>Hello there</p>\n</div>' in text
    assert f'innerHTML:#{draft}-open"><p>Hello there <strong>friend</strong></p>' in text
    # Then the draft is replaced by the stored message's rendered markdown.
    assert f'hx-swap-oob="outerHTML:#stream-assistant-{message_id}"' in text
    assert "<strong>friend</strong>" in text

    stored = await messages_of(conversation)
    assert [(m.message_type, m.content) for m in stored] == [
        ("user", "hi <b>you</b>"),
        ("assistant", "Hello there **friend**"),
    ]
    assert stored[1].letta_id == message_id
    assert fake_gateway.sent[0]["otid"] == stored[0].otid


@pytest.mark.parametrize(
    "text",
    ["Plan a trip to Lisbon", "Plan a **trip** to `Lisbon`"],  # markdown: titled in plain words
)
async def test_the_first_message_titles_the_conversation(text, conversation, user, fake_gateway):
    fake_gateway.enqueue_text("ok")
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, text)
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert any('id="thread-title"' in f and "Plan a trip to Lisbon" in f for f in frames)
    [item] = [f for f in frames if f'id="conv-{conversation.letta_id}"' in f]
    assert 'aria-current="page"' in item, "the sidebar still marks the open conversation"
    await database_sync_to_async(conversation.refresh_from_db)()
    assert conversation.summary == "Plan a trip to Lisbon"
    assert fake_gateway.sent[0]["text"] == text, "sent as written"


@pytest.mark.parametrize(
    ("text", "error"),
    [("", "Type a message first."), ("   \n\t ", "Type a message first.")],
)
async def test_an_empty_message_is_refused_and_nothing_is_sent(
    conversation, user, fake_gateway, text, error
):
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, text)
    frame = await communicator.receive_from()
    await communicator.disconnect()
    assert 'id="composer-error"' in frame and error in frame
    assert fake_gateway.sent == []
    assert await messages_of(conversation) == []


async def test_an_oversized_message_is_refused_and_nothing_is_sent(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_MAX_MESSAGE_CHARS = 50
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "x" * 51)
    frame = await communicator.receive_from()
    await communicator.disconnect()
    assert "the limit is 50" in frame
    # Only the error line is swapped: whatever is in the box stays there.
    assert 'id="composer"' not in frame
    assert fake_gateway.sent == []
    assert await messages_of(conversation) == []


@pytest.mark.parametrize("frame", ["not json", "[1, 2]", '{"message": 42}', '{"other": "x"}'])
async def test_a_malformed_frame_gets_an_error_and_the_socket_keeps_serving(
    conversation, user, fake_gateway, frame
):
    fake_gateway.enqueue_text("still here")
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await communicator.send_to(text_data=frame)
    assert "could not be read" in await communicator.receive_from()
    await send_message(communicator, "hello")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert any("still here" in f for f in frames)


async def test_a_second_send_while_answering_is_refused(conversation, user, fake_gateway):
    gate = fake_gateway.enqueue(
        [RunStarted("run-1"), ContentDelta("m-1", "assistant", "Thinking"), Stopped("end_turn")],
        hold_after=2,
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "first")
    while "Thinking" not in await communicator.receive_from():
        pass
    await send_message(communicator, "second")
    frame = await communicator.receive_from()
    assert "still answering" in frame
    gate.set()
    await frames_until_idle(communicator)
    await communicator.disconnect()
    assert [s["text"] for s in fake_gateway.sent] == ["first"]
    assert [m.content for m in await messages_of(conversation) if m.message_type == "user"] == [
        "first"
    ]


async def test_when_letta_is_down_the_message_is_marked_and_offers_retry(
    conversation, user, fake_gateway
):
    # Refused: the send never reached Letta (its fate is known).
    fake_gateway.enqueue(LettaUnavailable("The Letta server cannot be reached.", reached=False))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "are you there?")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()

    text = "\n".join(frames)
    assert "Not sent: The Letta server cannot be reached." in text
    # Retry on the message is the one route to send it again: the box is left as it was.
    assert any('class="secondary retry"' in f for f in frames), "Retry: the one route to resend"
    assert not any("are you there?</textarea>" in f for f in frames)
    [stored] = await messages_of(conversation)
    assert stored.error == "The Letta server cannot be reached."
    assert stored.letta_id is None


async def test_an_error_inside_the_stream_keeps_the_partial_reply_and_says_so(
    conversation, user, fake_gateway
):
    fake_gateway.enqueue(
        [
            RunStarted("run-1"),
            ContentDelta("m-1", "assistant", "Half an"),
            StreamError("internal_error", "The model failed."),
            Stopped("error"),
        ]
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    stored = await messages_of(conversation)
    assert [(m.message_type, m.content, m.error) for m in stored] == [
        # Letta did not keep the message of a failed turn: it is marked and offers Retry.
        ("user", "go", "The model failed."),
        ("assistant", "Half an", "The model failed."),
    ]
    assert any('class="secondary retry"' in f for f in frames), "Retry: the one route to resend"
    assert not any("go</textarea>" in f for f in frames)


async def test_a_failed_turn_that_letta_kept_gets_a_note(
    conversation, user, fake_gateway, monkeypatch
):
    fake_gateway.enqueue(
        [RunStarted("run-1"), StreamError("internal_error", "The model failed."), Stopped("error")]
    )

    async def lettas_stored_copy(**kwargs):
        otid = fake_gateway.sent[0]["otid"]
        return [MessageInfo("message-u", "user", "go", datetime.now(UTC), otid=otid)]

    monkeypatch.setattr(fake_gateway, "alist_messages", lettas_stored_copy)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await frames_until_idle(communicator)
    await communicator.disconnect()
    stored = await messages_of(conversation)
    assert [(m.message_type, m.content, m.error) for m in stored] == [
        ("user", "go", ""),
        ("error", "The model failed.", ""),
    ]


async def test_reasoning_and_tool_activity_are_relayed_and_stored(conversation, user, fake_gateway):
    fake_gateway.enqueue(
        [
            RunStarted("run-1"),
            ContentDelta("m-a", "reasoning", "Let me <look>"),
            ToolCallDelta("m-t", "call-1", "memory_insert", '{"label": "human"', "run-1"),
            ToolCallDelta("m-t", "call-1", "", ', "new_str": "likes tea"}', "run-1"),
            ToolReturn("m-ret", "call-1", "success", "ok", "run-1"),
            ContentDelta("m-a", "assistant", "Noted."),
            Stopped("end_turn"),
        ]
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "remember I like tea")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert any("Let me &lt;look&gt;" in f for f in frames)
    stored = await messages_of(conversation)
    assert [(m.message_type, m.name, m.content) for m in stored] == [
        ("user", "", "remember I like tea"),
        ("reasoning", "", "Let me <look>"),
        ("tool_call", "memory_insert", '{"label": "human", "new_str": "likes tea"}'),
        ("tool_return", "success", "ok"),
        ("assistant", "", "Noted."),
    ]


async def test_a_reply_finishes_and_is_stored_when_the_socket_goes_away(
    conversation, user, fake_gateway
):
    gate = fake_gateway.enqueue(
        [
            RunStarted("run-1"),
            ContentDelta("m-1", "assistant", "Hello"),
            ContentDelta("m-1", "assistant", " later"),
            Stopped("end_turn"),
        ],
        hold_after=2,
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hi")
    while "Hello" not in await communicator.receive_from():
        pass
    await communicator.disconnect()

    # Reopen: the reply goes on and this socket sees the end of it.
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    gate.set()
    await frames_until_idle(communicator)
    await communicator.disconnect()
    stored = await messages_of(conversation)
    assert [m.content for m in stored] == ["hi", "Hello later"]


async def test_every_socket_of_the_conversation_sees_the_reply(conversation, user, fake_gateway):
    fake_gateway.enqueue_text("for", " both")
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    second, _, _ = await open_socket(conversation.letta_id, user=user)
    # A page says what it shows first (the browser does on every connect), and is caught up.
    await second.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    assert 'data-busy="false"' in await second.receive_from()
    await send_message(first, "hello")
    first_frames = await frames_until_idle(first)
    second_frames = await frames_until_idle(second)
    await first.disconnect()
    await second.disconnect()
    assert any("for both" in f for f in first_frames)
    assert any("for both" in f for f in second_frames)
    # Only the sender's box is emptied.
    assert not any('id="composer"' in f for f in second_frames)


async def test_reconcile_fills_in_lettas_id_for_the_user_message(
    conversation, user, fake_gateway, monkeypatch
):
    fake_gateway.enqueue_text("ok", message_id="message-a")

    async def lettas_stored_copy(**kwargs):
        now = datetime.now(UTC)
        otid = fake_gateway.sent[0]["otid"]
        return [
            MessageInfo("message-u", "user", "hello", now, otid=otid, run_id="run-1"),
            MessageInfo("message-a", "assistant", "ok", now, run_id="run-1"),
        ]

    monkeypatch.setattr(fake_gateway, "alist_messages", lettas_stored_copy)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hello")
    await frames_until_idle(communicator)
    await communicator.disconnect()
    stored = await messages_of(conversation)
    assert [(m.message_type, m.letta_id, m.run_id) for m in stored] == [
        ("user", "message-u", "run-1"),
        ("assistant", "message-a", "run-1"),
    ]


@pytest.mark.parametrize("how", ["send", "retry"])
async def test_a_reply_reads_lettas_copy_after_the_newest_confirmed_message_known_at_its_send(
    conversation, user, fake_gateway, monkeypatch, how
):
    """The cursor is read in the send's own trip to the database (one trip fewer before a
    reply's first token): the relay makes none of its own for it."""
    from conversations import selectors
    from conversations.models import Message

    def add(**fields):
        return Message.objects.create(conversation=conversation, **fields)

    before = datetime(2026, 1, 1, tzinfo=UTC)
    await database_sync_to_async(add)(
        letta_id="message-old", message_type="assistant", content="earlier", created_at=before
    )
    await database_sync_to_async(add)(  # newer, but Letta never confirmed it: not a cursor
        message_type="error", content="a note", created_at=before.replace(hour=1)
    )
    if how == "retry":
        failed = await database_sync_to_async(add)(
            message_type="user", content="again", otid="o-1", error="Not sent.",
            created_at=before.replace(hour=2),
        )  # fmt: skip
    afters = []

    async def lettas_stored_copy(**kwargs):
        afters.append(kwargs.get("after"))
        return []

    def no_trip_of_its_own(**kwargs):
        raise AssertionError("the relay read its cursor in a trip of its own")

    monkeypatch.setattr(fake_gateway, "alist_messages", lettas_stored_copy)
    monkeypatch.setattr(selectors, "message_last_letta_id", no_trip_of_its_own)
    fake_gateway.enqueue_text("ok")
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    if how == "send":
        await send_message(communicator, "hello")
    else:
        await communicator.send_to(text_data=json.dumps({"type": "retry", "message": failed.pk}))
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert afters == ["message-old"]
    assert not any("lettachat failed" in f for f in frames)


async def test_a_frame_from_the_page_is_handled_without_channels_hop_to_its_shared_thread(
    conversation, user, fake_gateway, monkeypatch
):
    """channels closes old connections on asgiref's one shared thread before every message a
    consumer handles; the socket's frames use none of that thread's connections, so the hop
    (queued behind every other socket's) is not made for them."""
    import channels.consumer

    hops = []
    original = channels.consumer.aclose_old_connections

    async def counted():
        hops.append(1)
        await original()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counted)
    fake_gateway.enqueue_text("ok")
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    opened = len(hops)
    await send_message(communicator, "hello")
    await frames_until_idle(communicator)
    assert len(hops) == opened
    await communicator.disconnect()
    assert [m.content for m in await messages_of(conversation)] == ["hello", "ok"]
