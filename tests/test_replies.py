"""Replies are never lost: stop, resume after a drop, one run at a time, idempotent sends, stalls.

Against the scripted gateway (faults on cue); ``tests/integration/test_never_lost.py`` does the same
against the real Letta server.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async

from conversations import relay
from conversations.models import Message, Run
from conversations.relay import control, registry
from letta_gateway import (
    ContentDelta,
    LettaBusy,
    LettaUnavailable,
    MessageInfo,
    Ping,
    RunStarted,
    Stopped,
    ToolCallDelta,
)
from letta_gateway.fake import Pause
from tests.page_model import PageModel
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WORDS = ["Once", " upon", " a", " time", " there", " was", " a", " relay."]


def reply(message_id: str = "m-1", words: list[str] = WORDS, *, first_seq: int = 2) -> list:
    events: list = [RunStarted("run-1", seq_id=1)]
    events += [
        ContentDelta(message_id, "assistant", w, "run-1", first_seq + i)
        for i, w in enumerate(words)
    ]
    return [*events, Stopped("end_turn")]


async def stored(conversation) -> list[tuple[str, str, str]]:
    return await database_sync_to_async(
        lambda: [
            (m.message_type, m.content, m.error)
            for m in conversation.messages.order_by("created_at", "id")
        ]
    )()


async def runs(conversation) -> list[Run]:
    return await database_sync_to_async(lambda: list(conversation.runs.order_by("id")))()


async def until(communicator, text: str, page: PageModel | None = None) -> list[str]:
    frames = []
    while True:
        frame = await communicator.receive_from(timeout=5)
        frames.append(frame)
        if page is not None:
            page.apply(frame)
        if text in frame:
            return frames


async def resume(communicator, after: int = 0, drafts: int = 0) -> None:
    frame = {"type": "resume", "after": after, "drafts": drafts}
    await communicator.send_to(text_data=json.dumps(frame))


async def stop(communicator) -> None:
    await communicator.send_to(text_data=json.dumps({"type": "stop", "HEADERS": {}}))


async def settled() -> None:
    """Until every reply of this process is over, a stopped one's settling with Letta included."""
    await registry.wait_all_done()


async def test_stop_mid_reply_ends_it_at_once_and_the_turn_shows_what_letta_kept(
    conversation, user, fake_gateway
):
    fake_gateway.enqueue(reply(), hold_after=3)  # pauses after " upon"
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "tell me a story")
    await until(communicator, " upon")
    await stop(communicator)
    frames = await frames_until_idle(communicator)
    assert not any("Stopping" in f for f in frames), "over at once, not 'Stopping…'"
    await settled()
    await communicator.disconnect()

    assert fake_gateway.cancels == [conversation.letta_id]
    # Letta keeps nothing of a cancelled turn: the partial reply is kept here, marked once;
    # the person's message says the agent did not keep it (and can be sent again).
    assert await stored(conversation) == [
        ("user", "tell me a story", relay.NOT_KEPT),
        ("assistant", "Once upon", "Stopped."),
    ]
    [run] = await runs(conversation)
    assert run.status == Run.Status.STOPPED


async def test_stop_before_the_first_token(conversation, user, fake_gateway):
    fake_gateway.enqueue(reply(), hold_after=0)  # nothing at all has come from Letta yet
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "tell me a story")
    await until(communicator, "is answering")
    await stop(communicator)
    await frames_until_idle(communicator)
    await settled()
    await communicator.disconnect()
    assert await stored(conversation) == [("user", "tell me a story", relay.NOT_KEPT)]
    [run] = await runs(conversation)
    assert run.status == Run.Status.STOPPED


async def test_a_reply_letta_finished_before_the_stop_reached_it_is_shown_whole(
    conversation, user, fake_gateway
):
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    fake_gateway.cancels_succeed = False  # the cancel comes too late: Letta finishes the run
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "tell me a story")
    await until(communicator, " upon")
    user_message = await database_sync_to_async(
        lambda: conversation.messages.get(message_type="user")
    )()
    fake_gateway.stored[conversation.letta_id] = [
        MessageInfo("lm-user", "user", "tell me a story", T0, otid=user_message.otid,
                    run_id="run-1"),
        MessageInfo("m-1", "assistant", "Once upon a time there was a relay.", T0,
                    run_id="run-1"),
    ]  # fmt: skip
    await stop(communicator)
    await frames_until_idle(communicator)
    gate.set()
    await settled()
    page = PageModel()
    for frame in await drain(communicator):
        page.apply(frame)
    await communicator.disconnect()

    assert await stored(conversation) == [
        ("user", "tell me a story", ""),
        ("assistant", "Once upon a time there was a relay.", relay.FINISHED_ANYWAY),
    ]


async def drain(communicator) -> list[str]:
    frames = []
    while not await communicator.receive_nothing(timeout=0.2):
        frames.append(await communicator.receive_from())
    return frames


async def test_stop_when_nothing_runs_just_says_so(conversation, user, fake_gateway):
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await stop(communicator)
    frame = await communicator.receive_from()
    await communicator.disconnect()
    assert 'data-busy="false"' in frame
    assert fake_gateway.cancels == []


async def test_a_page_that_reconnects_mid_reply_gets_all_of_it_exactly_once(
    conversation, user, fake_gateway
):
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    page = PageModel()
    await send_message(first, "tell me a story")
    await until(first, " upon", page)
    assert page.draft("assistant-m-1") == "Once upon"
    # The connection drops; the reply goes on meanwhile.
    await first.disconnect()
    user_message = await database_sync_to_async(
        lambda: conversation.messages.get(message_type="user")
    )()
    second, _, _ = await open_socket(conversation.letta_id, user=user)
    await resume(second, after=user_message.pk, drafts=1)
    snapshot = await second.receive_from()
    page.apply(snapshot)
    assert page.draft("assistant-m-1") == "Once upon", "the draft so far, once"
    gate.set()
    for frame in await frames_until_idle(second):
        page.apply(frame)
    await second.disconnect()

    assert [text for _, text in page.articles()] == [
        "tell me a story",
        "Once upon a time there was a relay.",
    ]


async def test_a_page_that_missed_the_whole_reply_catches_up(conversation, user, fake_gateway):
    fake_gateway.enqueue(reply())
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(first, "tell me a story")
    await frames_until_idle(first)
    await first.disconnect()

    page = PageModel()  # a page that showed nothing of this conversation yet
    second, _, _ = await open_socket(conversation.letta_id, user=user)
    await resume(second, after=0)
    page.apply(await second.receive_from())
    await second.disconnect()
    assert [text for _, text in page.articles()] == [
        "tell me a story",
        "Once upon a time there was a relay.",
    ]


async def test_tokens_that_race_a_snapshot_are_not_shown_twice(conversation, user, fake_gateway):
    """Group events that arrive before the snapshot wait for it, and only newer ones go out."""
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(first, "go")
    await until(first, " upon")
    second, _, _ = await open_socket(conversation.letta_id, user=user)
    page = PageModel()
    await resume(second, after=0)
    gate.set()  # tokens flow while the snapshot is being made
    for frame in await frames_until_idle(second):
        page.apply(frame)
    await first.disconnect()
    await second.disconnect()
    assert [text for _, text in page.articles()] == ["go", "Once upon a time there was a relay."]


async def test_a_broken_stream_is_resumed_after_the_last_event_read(
    conversation, user, fake_gateway
):
    fake_gateway.enqueue(
        [RunStarted("run-1", seq_id=1), ContentDelta("m-1", "assistant", "Half", "run-1", 2),
         LettaUnavailable("The Letta server cannot be reached.")]
    )  # fmt: skip
    fake_gateway.enqueue_resume(
        [ContentDelta("m-1", "assistant", " and half", "run-1", 3), Stopped("end_turn")]
    )
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await frames_until_idle(communicator)
    await communicator.disconnect()
    assert fake_gateway.resumed == [{"run_id": "run-1", "after_seq": 2}]
    assert await stored(conversation) == [("user", "go", ""), ("assistant", "Half and half", "")]


async def test_a_second_run_cannot_start_while_one_runs_in_any_process(
    conversation, user, fake_gateway
):
    # Another server process is answering in this conversation.
    await database_sync_to_async(Run.objects.create)(conversation=conversation)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hello?")
    frame = await communicator.receive_from()
    await communicator.disconnect()
    assert "still answering" in frame
    assert fake_gateway.sent == []
    assert await stored(conversation) == []


async def test_the_same_message_sent_twice_is_one_turn(conversation, user, fake_gateway):
    fake_gateway.enqueue(reply())
    otid = str(uuid.uuid4())
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    frame = json.dumps({"message": "only once", "otid": otid})
    await communicator.send_to(text_data=frame)
    await frames_until_idle(communicator)
    # The page lost its connection before it saw the answer, and sends the same message again.
    await communicator.send_to(text_data=frame)
    again = await communicator.receive_from()
    await communicator.disconnect()
    assert 'id="composer"' in again, "the box is emptied: the message is already there"
    assert len(fake_gateway.sent) == 1
    assert [kind for kind, _, _ in await stored(conversation)] == ["user", "assistant"]


async def test_a_send_that_meets_a_running_reply_follows_it_and_offers_retry(
    conversation, user, fake_gateway
):
    fake_gateway.enqueue(LettaBusy("busy", run_id="run-other"))
    fake_gateway.enqueue_resume(reply("m-other", ["Still", " going"]))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "are you there?")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert fake_gateway.resumed == [{"run_id": "run-other", "after_seq": None}]
    assert any('class="secondary retry"' in f for f in frames), "Retry: the one route to resend"
    assert not any("are you there?</textarea>" in f for f in frames)
    assert await stored(conversation) == [
        (
            "user",
            "are you there?",
            "the agent was still answering. Send it again when the reply is done.",
        ),
        ("assistant", "Still going", ""),
    ]


async def test_a_silent_run_is_shown_as_stalled_and_recovers(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_STALL_SECONDS = 0.2
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    stalled = (await until(communicator, 'data-stalled="true"'))[-1]
    assert "has not answered for 0.2 s" in stalled
    assert 'id="stop"' in stalled and 'id="retry-stalled"' in stalled
    gate.set()
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert any("is answering" in f and "data-stalled" not in f for f in frames)
    assert ("assistant", "Once upon a time there was a relay.", "") in await stored(conversation)


async def test_pings_keep_a_run_from_looking_stalled(conversation, user, fake_gateway, settings):
    """Only pings for longer than the stall time, while Letta says the run is running: a slow
    step, not a stall. (Letta pings every 20 s; here every 0.2 s against a 0.3 s stall.)"""
    settings.LETTACHAT_STALL_SECONDS = 0.3
    settings.LETTACHAT_RUN_CHECK_SECONDS = 0.1
    pings = [event for n in range(2, 8) for event in (Ping(n), Pause(0.2))]
    fake_gateway.enqueue([RunStarted("run-1", 1), *pings, *reply(first_seq=8)[1:]])
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    assert fake_gateway.state_checks, "Letta was asked where the silent run is"
    assert not any('data-stalled="true"' in f for f in frames)
    assert ("assistant", "Once upon a time there was a relay.", "") in await stored(conversation)


async def test_retry_on_a_stalled_run_stops_it_and_sends_the_message_again(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_STALL_SECONDS = 0.2
    fake_gateway.enqueue(reply(), hold_after=3)
    fake_gateway.enqueue(reply("m-2", ["Second", " try"]))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await until(communicator, 'data-stalled="true"')
    await communicator.send_to(text_data=json.dumps({"type": "retry"}))
    await until(communicator, "Second")
    await frames_until_idle(communicator)
    await communicator.disconnect()
    assert [s["text"] for s in fake_gateway.sent] == ["go", "go"]
    assert fake_gateway.sent[0]["otid"] != fake_gateway.sent[1]["otid"], "a new turn"
    messages = await stored(conversation)
    assert [m for m in messages if m[0] == "user"] == [("user", "go", "")]
    assert ("assistant", "Second try", "") in messages


async def test_retry_sends_a_failed_message_again(conversation, user, fake_gateway):
    # Refused: the send never reached Letta (its fate is known).
    fake_gateway.enqueue(LettaUnavailable("The Letta server cannot be reached.", reached=False))
    fake_gateway.enqueue(reply())
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "hello")
    frames = await frames_until_idle(communicator)
    assert any('value="retry"' in f for f in frames)
    failed = await database_sync_to_async(lambda: conversation.messages.get(message_type="user"))()
    await communicator.send_to(text_data=json.dumps({"type": "retry", "message": failed.pk}))
    await frames_until_idle(communicator)
    await communicator.disconnect()
    assert await stored(conversation) == [
        ("user", "hello", ""),
        ("assistant", "Once upon a time there was a relay.", ""),
    ]


async def test_someone_elses_failed_message_cannot_be_retried(
    make_conversation, other_user, user, fake_gateway
):
    theirs = await database_sync_to_async(make_conversation)(other_user)
    failed = await database_sync_to_async(Message.objects.create)(
        conversation=theirs, message_type="user", content="secret", error="x",
        created_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    mine = await database_sync_to_async(make_conversation)(user)
    communicator, _, _ = await open_socket(mine.letta_id, user=user)
    await communicator.send_to(text_data=json.dumps({"type": "retry", "message": failed.pk}))
    frame = await communicator.receive_from()
    await communicator.disconnect()
    assert 'data-busy="false"' in frame
    assert fake_gateway.sent == []


async def test_a_run_whose_relay_died_is_taken_over_by_the_next_page(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_RELAY_ANSWER_SECONDS = 0.2
    settings.LETTACHAT_RELAY_HEARTBEAT_SECONDS = 0.1  # a dead relay is told by 3 missed beats
    fake_gateway.enqueue(reply(), hold_after=3)
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(first, "go")
    await until(first, " upon")
    await first.disconnect()
    # The process running the relay dies (its task is cancelled; the run stays "running").
    running = relay.running_here(conversation.pk)
    running.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running.task
    # Nothing of the reply was stored yet, so the new relay follows the run from its start.
    fake_gateway.enqueue_resume(reply())

    page = PageModel()
    second, _, _ = await open_socket(conversation.letta_id, user=user)
    await resume(second, after=0)
    for frame in await frames_until_idle(second, timeout=10):
        page.apply(frame)
    await second.disconnect()
    assert fake_gateway.resumed == [{"run_id": "run-1", "after_seq": None}]
    assert [text for _, text in page.articles()] == ["go", "Once upon a time there was a relay."]


async def test_pressing_stop_again_sends_no_more_cancels(conversation, user, fake_gateway):
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    fake_gateway.cancels_succeed = False  # Letta has not registered the run yet: nothing stops
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await until(communicator, " upon")
    for _ in range(5):
        await stop(communicator)
    await frames_until_idle(communicator)
    gate.set()
    await settled()
    await communicator.disconnect()
    assert fake_gateway.cancels == [conversation.letta_id]


async def test_stop_works_on_a_resumed_stream(conversation, user, fake_gateway, settings):
    settings.LETTACHAT_RELAY_ANSWER_SECONDS = 0.2
    settings.LETTACHAT_RELAY_HEARTBEAT_SECONDS = 0.1  # a dead relay is told by 3 missed beats
    fake_gateway.enqueue(reply(), hold_after=3)
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(first, "go")
    await until(first, " upon")
    await first.disconnect()
    running = relay.running_here(conversation.pk)
    running.task.cancel()  # its process dies
    with pytest.raises(asyncio.CancelledError):
        await running.task
    fake_gateway.enqueue_resume(reply(), hold_after=3)  # the run goes on in Letta

    second, _, _ = await open_socket(conversation.letta_id, user=user)
    await resume(second, after=0)
    await until(second, " upon")  # taken over, streaming again
    await stop(second)
    await frames_until_idle(second)
    await settled()
    await second.disconnect()
    assert fake_gateway.cancels == [conversation.letta_id]
    [run] = await runs(conversation)
    assert run.status == Run.Status.STOPPED
    assert ("assistant", "Once upon", "Stopped.") in await stored(conversation)


async def test_pieces_that_queue_up_go_out_together_and_show_once(conversation, user, fake_gateway):
    """A burst (every piece queued before the relay reads one) goes out in fewer frames."""
    words = ["w0", *(f" w{n}" for n in range(1, 60))]
    fake_gateway.enqueue(reply(words=words))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    page = PageModel()
    await send_message(communicator, "burst")
    frames = await frames_until_idle(communicator)
    await communicator.disconnect()
    for frame in frames:
        page.apply(frame)
    drafts = [f for f in frames if "stream-assistant-m-1-" in f and "outerHTML" not in f]
    assert 1 <= len(drafts) < len(words)
    assert [text for _, text in page.articles()] == ["burst", "".join(words)]
    [run] = await runs(conversation)
    assert run.last_seq_id == 2 + len(words) - 1, "the stored position is the last piece's"


def _relay(conversation, fake_gateway) -> relay.ReplyRelay:
    run = Run(conversation=conversation, relay_channel="x")
    return relay.ReplyRelay(conversation=conversation, run=run, user_message=None)


async def test_only_pieces_of_the_same_message_are_merged_and_order_is_kept(
    conversation, fake_gateway
):
    follower = _relay(conversation, fake_gateway)
    first = ContentDelta("m-1", "assistant", "a", "run-1", 2)
    queued = [
        ("event", ContentDelta("m-1", "assistant", "b", "run-1", 3)),
        ("event", ContentDelta("m-1", "assistant", "c", "run-1", None)),  # no seq_id: keep 3
        ("event", ContentDelta("m-1", "reasoning", "x", "run-1", 5)),  # Letta's same id, kind
        ("event", ContentDelta("m-1", "assistant", "d", "run-1", 6)),
        ("control", {"type": control.SNAPSHOT_REQUEST}),
    ]
    for item in queued:
        follower._queue.put_nowait(item)

    merged = follower._merge_queued(first)
    assert merged == ContentDelta("m-1", "assistant", "abc", "run-1", 3)
    assert await follower._next(1) == queued[2], "the first piece not merged comes next"
    assert follower._merge_queued(queued[2][1]) == queued[2][1]  # alone: nothing of its kind queued
    assert await follower._next(1) == queued[3]
    assert follower._merge_queued(queued[3][1]) == queued[3][1]  # a socket's request stops a merge
    assert await follower._next(1) == queued[4]


async def test_tool_call_pieces_merge_their_arguments(conversation, fake_gateway):
    follower = _relay(conversation, fake_gateway)
    follower._queue.put_nowait(("event", ToolCallDelta("t-1", "call-1", "", '"x"}', "run-1", 4)))
    follower._queue.put_nowait(("event", ToolCallDelta("t-1", "call-2", "other", "{}", "run-1", 5)))
    merged = follower._merge_queued(ToolCallDelta("t-1", "call-1", "send", '{"a": ', "run-1", 3))
    assert merged == ToolCallDelta("t-1", "call-1", "send", '{"a": "x"}', "run-1", 4)
    assert (await follower._next(1))[1].tool_call_id == "call-2"
