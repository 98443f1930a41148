"""Never stuck, never twice: the relay against the faults the real Letta server shows, scripted.

Letta restarted (the run's stream comes back with pings only, and Letta lists the run as running
for ever), a run Letta says is over while its stream says nothing, a silent run given up on, a
send whose fate is unknown, a new message meeting the run it just stopped, an edited resend, and
a run whose relay's process died, taken over with no page to ask for it. The same faults caused
for real: tests/integration/test_never_stuck_letta.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async

from conversations import relay
from conversations.models import Run
from conversations.relay import reaper, registry
from letta_gateway import (
    ContentDelta,
    LettaBusy,
    LettaUnavailable,
    MessageInfo,
    Ping,
    RunStarted,
    RunState,
    Stopped,
)
from letta_gateway.fake import Pause
from tests.page_model import PageModel
from tests.websocket import frames_until_idle, is_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def reply(message_id: str = "m-1", words=("Once", " upon", " a", " time."), *, seq: int = 2):
    return [
        RunStarted("run-1", seq_id=1),
        *(ContentDelta(message_id, "assistant", w, "run-1", seq + i) for i, w in enumerate(words)),
        Stopped("end_turn"),
    ]


def pings_for(seconds: float, every: float = 0.1) -> list:
    return [e for n in range(int(seconds / every)) for e in (Ping(100 + n), Pause(every))]


async def stored(conversation) -> list[tuple[str, str, str]]:
    return await database_sync_to_async(
        lambda: [
            (m.message_type, m.content, m.error)
            for m in conversation.messages.order_by("created_at", "id")
        ]
    )()


async def the_runs(conversation) -> list[Run]:
    return await database_sync_to_async(lambda: list(conversation.runs.order_by("id")))()


@pytest.fixture
def quick(settings):
    settings.LETTACHAT_STALL_SECONDS = 0.3
    settings.LETTACHAT_RUN_CHECK_SECONDS = 0.1
    settings.LETTACHAT_RESUME_BACKOFF = 0.05
    settings.LETTACHAT_RELAY_ANSWER_SECONDS = 0.3
    return settings


async def test_after_letta_went_away_a_run_it_still_calls_running_is_ended_and_sending_works(
    conversation, user, fake_gateway, quick
):
    """Letta restarted mid-reply: its stream breaks; resumed, it gives only pings, and Letta lists
    the run as running for ever. The reply ends, says why, and the next message goes through."""
    fake_gateway.enqueue(
        [
            RunStarted("run-1", 1),
            ContentDelta("m-1", "assistant", "Half", "run-1", 2),
            LettaUnavailable("The Letta server cannot be reached."),  # the restart
        ]
    )
    fake_gateway.enqueue_resume(pings_for(60))  # pings only, for as long as anyone waits
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    frames = await frames_until_idle(communicator, timeout=10)

    assert any(relay.LETTA_RESTARTED in f for f in frames)
    assert fake_gateway.cancels == [conversation.letta_id], "Letta is told the run is over"
    assert fake_gateway.state_checks, "Letta was asked where the run is"
    [run] = await the_runs(conversation)
    assert run.status == Run.Status.FAILED

    fake_gateway.enqueue(reply("m-2", ["Fine"]))  # the person can send again at once
    await send_message(communicator, "again")
    frames = await frames_until_idle(communicator, timeout=10)
    await communicator.disconnect()
    assert not any("still answering" in f for f in frames)
    assert ("assistant", "Fine", "") in await stored(conversation)


async def test_a_silent_run_letta_says_is_over_ends_the_reply_with_what_letta_kept(
    conversation, user, fake_gateway, quick
):
    fake_gateway.enqueue(
        [RunStarted("run-1", 1), ContentDelta("m-1", "assistant", "Hal", "run-1", 2),
         *pings_for(60)]
    )  # fmt: skip
    fake_gateway.run_states["run-1"] = RunState("run-1", "completed", "end_turn")
    fake_gateway.stored[conversation.letta_id] = [
        MessageInfo("m-1", "assistant", "Half of it, and the rest.", T0, run_id="run-1")
    ]
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await frames_until_idle(communicator, timeout=10)
    await communicator.disconnect()

    assert fake_gateway.cancels == []
    [run] = await the_runs(conversation)
    assert run.status == Run.Status.DONE
    # The streamed part is replaced by Letta's whole message? It is kept as streamed, and what
    # Letta holds beyond it (none here: same id) is not added twice.
    assert [m for m in await stored(conversation) if m[0] == "assistant"] == [
        ("assistant", "Hal", "")
    ]


async def test_a_run_that_says_nothing_for_too_long_is_given_up(
    conversation, user, fake_gateway, quick
):
    quick.LETTACHAT_GIVE_UP_SECONDS = 0.6
    fake_gateway.enqueue(
        [RunStarted("run-1", 1), ContentDelta("m-1", "assistant", "Hm", "run-1", 2),
         *pings_for(60)]
    )  # fmt: skip
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    frames = await frames_until_idle(communicator, timeout=10)
    await communicator.disconnect()
    assert any(relay.loop.gave_up_note() in f for f in frames)
    assert fake_gateway.cancels == [conversation.letta_id]


async def test_a_send_whose_fate_is_unknown_is_found_on_letta_by_its_otid_and_followed(
    conversation, user, fake_gateway, quick
):
    """The send timed out after it left: Letta may have it. Asked by otid, it does: followed,
    never sent a second time."""
    fake_gateway.enqueue(LettaUnavailable("The Letta server did not answer in time."))
    fake_gateway.enqueue_resume(reply())
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await frames_until_idle(communicator, timeout=10)
    await communicator.disconnect()

    [(asked,)] = [tuple(r.items() & {("otid", r.get("otid"))}) for r in fake_gateway.resumed]
    assert asked[0] == "otid" and asked[1]
    assert fake_gateway.sent == [], "the message was never sent twice"
    assert [m[:2] for m in await stored(conversation)] == [
        ("user", "go"),
        ("assistant", "Once upon a time."),
    ]


async def test_a_send_whose_fate_is_unknown_and_that_letta_never_got_is_not_sent(
    conversation, user, fake_gateway, quick
):
    fake_gateway.enqueue(LettaUnavailable("The Letta server did not answer in time."))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    frames = await frames_until_idle(communicator, timeout=10)
    await communicator.disconnect()
    assert any('class="secondary retry"' in f for f in frames), "Retry: the one route to resend"
    assert not any("go</textarea>" in f for f in frames), "the box is left alone"
    assert await stored(conversation) == [("user", "go", relay.NOT_RECEIVED)]


async def test_retrying_a_message_of_unknown_fate_keeps_its_otid(
    conversation, user, fake_gateway, quick
):
    """Letta could not be asked in time: Retry sends the same otid, which Letta would re-attach
    to the turn it has, if it has one (never a second turn)."""
    quick.LETTACHAT_RESUME_SECONDS = 0.2
    fake_gateway.enqueue(LettaUnavailable("The Letta server did not answer in time."))
    fake_gateway.enqueue_resume(LettaUnavailable("The Letta server cannot be reached."))
    for _ in range(20):
        fake_gateway.enqueue_resume(LettaUnavailable("The Letta server cannot be reached."))
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    await frames_until_idle(communicator, timeout=10)
    [(_, _, error)] = await stored(conversation)
    assert error == relay.UNCONFIRMED
    message = await database_sync_to_async(lambda: conversation.messages.get())()
    fake_gateway.resumes.clear()

    fake_gateway.enqueue(reply())
    await communicator.send_to(text_data=json.dumps({"type": "retry", "message": message.pk}))
    await frames_until_idle(communicator, timeout=10)
    await communicator.disconnect()
    assert [s["otid"] for s in fake_gateway.sent] == [message.otid]


async def test_a_message_sent_right_after_a_stop_waits_for_letta_to_let_go_of_the_stopped_run(
    conversation, user, fake_gateway, quick
):
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    fake_gateway.cancels_succeed = False  # the cancel has not landed yet
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "first")
    while "upon" not in await communicator.receive_from():
        pass
    await communicator.send_to(text_data=json.dumps({"type": "stop"}))
    await frames_until_idle(communicator)
    # Letta still runs the stopped turn: it refuses the next one once, then takes it.
    fake_gateway.enqueue(LettaBusy("busy", run_id="run-1"))
    fake_gateway.enqueue(reply("m-2", ["Second"]))
    await send_message(communicator, "second")
    gate.set()
    frames = await frames_until_idle(communicator, timeout=10)
    await registry.wait_all_done()
    await communicator.disconnect()
    assert not any("still answering" in f for f in frames)
    assert [s["text"] for s in fake_gateway.sent] == ["first", "second"]
    assert ("assistant", "Second", "") in await stored(conversation)


async def test_a_stop_still_settling_never_stops_the_message_sent_after_it(
    conversation, user, fake_gateway, quick
):
    """Letta's conversation cancel stops every active run of the conversation. A Stop's settle,
    still asking Letta to cancel when the person's next message is running, names its own run:
    the next reply is not stopped with it (found by bench/soak_faults.py on the real server)."""
    fake_gateway.enqueue(reply(), hold_after=3)
    fake_gateway.cancels_unreachable = True  # the settle asks Letta again and again
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "first")
    while "upon" not in await communicator.receive_from():
        pass
    await communicator.send_to(text_data=json.dumps({"type": "stop"}))
    await frames_until_idle(communicator)
    second = [
        RunStarted("run-2", seq_id=1),
        ContentDelta("m-2", "assistant", "Second", "run-2", 2),
        Stopped("end_turn"),
    ]
    gate = fake_gateway.enqueue(second, hold_after=2)
    await send_message(communicator, "second")
    while "Second" not in await communicator.receive_from():
        pass
    # The next reply runs; the settle's next try at cancelling reaches Letta now.
    fake_gateway.run_states["run-1"] = RunState("run-1", "cancelled")
    fake_gateway.cancels_unreachable = False
    fake_gateway.cancel_seen.clear()
    await asyncio.wait_for(fake_gateway.cancel_seen.wait(), 10)
    gate.set()
    await frames_until_idle(communicator, timeout=10)
    await registry.wait_all_done()
    await communicator.disconnect()
    assert [r.status for r in await the_runs(conversation)] == [
        Run.Status.STOPPED,
        Run.Status.DONE,
    ]
    assert ("assistant", "Second", "") in await stored(conversation)
    assert set(fake_gateway.cancelled_runs) == {"run-1"}


async def test_an_edited_message_sent_with_the_same_otid_is_never_dropped(
    conversation, user, fake_gateway, quick
):
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    otid = str(uuid.uuid4())
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await communicator.send_to(text_data=json.dumps({"message": "helo", "otid": otid}))
    await communicator.send_to(text_data=json.dumps({"message": "hello!", "otid": otid}))
    frames = []
    while not any("still answering" in f for f in frames):
        frames.append(await communicator.receive_from())
    gate.set()
    await frames_until_idle(communicator)
    await communicator.disconnect()
    # The edit is a new message: refused while the first is answered, its text left in the box.
    assert [m[:2] for m in await stored(conversation) if m[0] == "user"] == [("user", "helo")]


async def test_a_run_whose_relay_died_is_taken_over_with_no_page_asking_and_shown_once(
    conversation, user, fake_gateway, quick
):
    quick.LETTACHAT_REAP_AFTER_SECONDS = 0
    fake_gateway.enqueue(reply(words=["Once", " upon", " a", " time."]), hold_after=3)
    page = PageModel()
    watcher, _, _ = await open_socket(conversation.letta_id, user=user)
    await watcher.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    page.apply(await watcher.receive_from())
    await send_message(watcher, "go")
    while "upon" not in (frame := await watcher.receive_from()):
        page.apply(frame)
    page.apply(frame)
    # The process running the relay dies.
    running = registry.running_here(conversation.pk)
    running.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running.task
    fake_gateway.enqueue_resume(reply())  # Letta replays the run from its start

    assert await reaper.reap_once() == 1
    frames = []
    while not frames or not is_idle(frames[-1]):
        frame = await watcher.receive_from(timeout=10)
        frames.append(frame)
        page.apply(frame)
        if 'id="reply-resync"' in frame:  # what the page's script does: catch up again
            shown = max(int(i[4:]) for i, _ in page.articles() if i.startswith("msg-"))
            drafts = sum(1 for i, _ in page.articles() if i.startswith("stream-"))
            await watcher.send_to(
                text_data=json.dumps({"type": "resume", "after": shown, "drafts": drafts})
            )
    await watcher.disconnect()
    assert fake_gateway.resumed == [{"run_id": "run-1", "after_seq": None}]
    assert [text for _, text in page.articles()] == ["go", "Once upon a time."]


async def test_a_stop_recorded_with_a_run_is_carried_out_by_the_relay_that_takes_it_over(
    conversation, user, fake_gateway, quick
):
    quick.LETTACHAT_REAP_AFTER_SECONDS = 0
    quick.LETTACHAT_RELAY_HEARTBEAT_SECONDS = 0.05  # the Stop may be recorded after the takeover
    fake_gateway.enqueue(reply(), hold_after=3)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    while "upon" not in await communicator.receive_from():
        pass
    running = registry.running_here(conversation.pk)
    running.task.cancel()  # the process dies...
    with pytest.raises(asyncio.CancelledError):
        await running.task
    await communicator.send_to(text_data=json.dumps({"type": "stop"}))  # ...as Stop is pressed
    gate = fake_gateway.enqueue_resume(reply(), hold_after=2)
    assert await reaper.reap_once() == 1
    await registry.wait_all_done()
    await communicator.disconnect()
    assert gate is not None
    assert fake_gateway.cancels == [conversation.letta_id]
    [run] = await the_runs(conversation)
    assert run.status == Run.Status.STOPPED


# A relay that is alive but slow (Letta hangs) is never doubled, and never shows a page twice ------


async def test_a_page_reconnecting_while_letta_hangs_on_a_run_check_is_answered_and_shown_once(
    conversation, user, fake_gateway, quick
):
    """Letta hangs (SIGSTOP, seen in bench/soak_faults.py): the relay asks where the silent run
    is, and gets no answer. A page that reconnects meanwhile is answered at once, nothing takes
    the live relay's run over, and the reply shows once when Letta wakes."""
    gate = fake_gateway.enqueue(reply(), hold_after=3)  # after " upon": Letta says nothing
    fake_gateway.run_state_gate = hanging = asyncio.Event()
    first, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(first, "go")
    while "upon" not in await first.receive_from(timeout=5):
        pass
    # The relay's question to Letta hangs. Awaited as such, not by reading frames until it is
    # asked: the "stalled" frame comes just before the question, which then came with no frame
    # after it (the test failed about one run in two on its own).
    await asyncio.wait_for(fake_gateway.state_checked.wait(), timeout=5)
    await first.disconnect()

    page = PageModel()
    second, _, _ = await open_socket(conversation.letta_id, user=user)
    await second.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    frame = await second.receive_from(timeout=5)  # the snapshot, while Letta still hangs
    page.apply(frame)
    assert "Once upon" in frame
    assert not hanging.is_set()
    # Several answer windows later, the run is still the live relay's own.
    assert await second.receive_nothing(timeout=4 * quick.LETTACHAT_RELAY_ANSWER_SECONDS)
    assert fake_gateway.resumed == [], "no second relay"

    hanging.set()
    gate.set()
    for frame in await frames_until_idle(second, timeout=10):
        page.apply(frame)
    await second.disconnect()
    assert [text for _, text in page.articles()] == ["go", "Once upon a time."]
    assert [m[:2] for m in await stored(conversation)] == [
        ("user", "go"),
        ("assistant", "Once upon a time."),
    ]


async def test_a_relay_whose_run_another_relay_took_over_ends_quietly(
    conversation, user, fake_gateway, quick
):
    """A relay taken for dead (its process was stuck past the heartbeats) that wakes up finds the
    run followed by another relay: it tells and stores nothing more."""
    quick.LETTACHAT_RELAY_HEARTBEAT_SECONDS = 0.05
    gate = fake_gateway.enqueue(reply(), hold_after=3)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "go")
    while "upon" not in await communicator.receive_from(timeout=5):
        pass
    running = registry.running_here(conversation.pk)
    [run] = await the_runs(conversation)
    # Another process claims the run (as a page or the reaper does).
    await database_sync_to_async(
        lambda: Run.objects.filter(pk=run.pk).update(relay_channel="claimed.elsewhere")
    )()
    await asyncio.wait_for(running.task, timeout=5)
    gate.set()
    assert await communicator.receive_nothing(timeout=0.5)
    await communicator.disconnect()
    [run] = await the_runs(conversation)
    assert run.status == Run.Status.RUNNING, "left to the relay that follows it"
    assert [m[:2] for m in await stored(conversation)] == [("user", "go")]


async def test_a_page_takes_over_only_a_relay_that_has_stopped_saying_it_is_alive(
    conversation, user, fake_gateway, settings
):
    from conversations import services

    make = database_sync_to_async(
        lambda seen: Run.objects.create(
            conversation=conversation, relay_channel="relay.1", relay_seen_at=seen
        )
    )
    now = datetime.now(UTC)
    alive = await make(now)
    claim = database_sync_to_async(services.run_claim)
    assert not await claim(
        run=alive, stale_channel="relay.1", heard_before=now - timedelta(seconds=15)
    )
    assert await database_sync_to_async(services.run_relay_alive)(run=alive, channel="relay.1")
    assert not await claim(run=alive, stale_channel="relay.2", heard_before=now + timedelta(1))
    assert await claim(run=alive, stale_channel="relay.1", heard_before=now + timedelta(1))
    assert alive.relay_channel.startswith("claimed.")
    assert not await database_sync_to_async(services.run_relay_alive)(run=alive, channel="relay.1")


def test_one_heartbeat_tells_every_relay_of_a_process_what_concerns_it(
    make_conversation, user, django_assert_num_queries
):
    """Two statements for all the process's relays, each told whether its run is still its own
    and whether a Stop was recorded on it."""
    from conversations import services

    long_ago = datetime(2000, 1, 1, tzinfo=UTC)

    def run(channel: str, **fields) -> Run:  # one running run per conversation
        return Run.objects.create(
            conversation=make_conversation(user), relay_channel=channel, relay_seen_at=long_ago,
            **fields,
        )  # fmt: skip

    mine = run("relay.a")
    stopped = run("relay.b", stop_requested_at=datetime.now(UTC))
    taken = run("claimed.elsewhere")
    over = run("relay.d", status=Run.Status.DONE)
    pairs = [(mine.pk, "relay.a"), (stopped.pk, "relay.b"), (taken.pk, "relay.c"),
             (over.pk, "relay.d"), (10**9, "relay.e")]  # fmt: skip
    with django_assert_num_queries(2):
        beats = services.runs_seen(runs=pairs)
    assert beats == {
        "relay.a": services.Heartbeat(ours=True, stop_recorded=False),
        "relay.b": services.Heartbeat(ours=True, stop_recorded=True),
        "relay.c": services.Heartbeat(ours=False, stop_recorded=False),
        "relay.d": services.Heartbeat(ours=False, stop_recorded=False),
        "relay.e": services.Heartbeat(ours=False, stop_recorded=False),
    }
    seen = dict(Run.objects.values_list("pk", "relay_seen_at"))
    assert seen[mine.pk] > long_ago and seen[stopped.pk] > long_ago
    assert seen[taken.pk] == long_ago, "a run another relay follows is not marked by this one"
    assert seen[over.pk] == long_ago


async def test_the_beat_task_tells_each_relay_and_ends_with_the_last_one(
    conversation, quick, monkeypatch
):
    """``relay.heartbeat``: the first relay starts the loop's beat task, each relay hears its
    own beat, and the task is gone once the last relay left (nothing left pending in the loop)."""
    from conversations import services
    from conversations.relay import heartbeat

    quick.LETTACHAT_RELAY_HEARTBEAT_SECONDS = 0.01
    run = await database_sync_to_async(Run.objects.create)(
        conversation=conversation, relay_channel="relay.own"
    )

    class Relay:
        def __init__(self, channel: str) -> None:
            self.run, self.channel, self.beats = run, channel, asyncio.Queue()

        def heard(self, beat: services.Heartbeat) -> None:
            self.beats.put_nowait(beat)

    own, stale = Relay("relay.own"), Relay("relay.stale")
    heartbeat.join(own)
    heartbeat.join(stale)
    assert await asyncio.wait_for(own.beats.get(), 5) == services.Heartbeat(True, False)
    assert await asyncio.wait_for(stale.beats.get(), 5) == services.Heartbeat(False, False)
    task = heartbeat._loops[asyncio.get_running_loop()].task
    heartbeat.leave(own)
    assert not task.done(), "it beats on for the relay still here"
    heartbeat.leave(stale)
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_page_takes_only_the_answer_to_its_latest_snapshot_request(
    conversation, user, monkeypatch
):
    """An answer to an earlier request (a relay that was slow) would show the page twice."""
    from channels.layers import get_channel_layer

    asked: list[dict] = []
    was_asked = asyncio.Event()

    async def ask(channel: str, **request) -> None:
        asked.append(request)
        was_asked.set()

    monkeypatch.setattr(relay, "request_snapshot", ask)
    await database_sync_to_async(Run.objects.create)(
        conversation=conversation, relay_channel="relay.x", relay_seen_at=datetime.now(UTC)
    )
    page, _, _ = await open_socket(conversation.letta_id, user=user)
    await page.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    await asyncio.wait_for(was_asked.wait(), timeout=5)
    [request] = asked
    layer = get_channel_layer()
    for html, request_id in (("<p>earlier</p>", "earlier"), ("<p>this</p>", request["request"])):
        await layer.send(
            request["reply_to"],
            {"type": "conversation.snapshot", "html": html, "relay": "relay.x", "tick": 1,
             "pks": [], "request": request_id},
        )  # fmt: skip
    assert await page.receive_from(timeout=5) == "<p>this</p>"
    assert await page.receive_nothing(timeout=0.2)
    await page.disconnect()
