"""Replies are never lost, against the real Letta server: faults caused for real.

Drops of the websocket, Stop before the first token and mid-stream, a second send while the agent
answers, a model that stalls, and the Letta server restarted in the middle of a reply.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import threading
import traceback

import pytest
from channels.db import database_sync_to_async

from conversations import relay, services
from conversations.models import Message, Run
from conversations.relay import registry
from devtools.local_letta import harness
from letta_gateway.client import LettaGateway
from tests.page_model import PageModel, streams_a_piece
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def letta_conversation(letta_gateway, letta_agent, user):
    return services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)


async def mirror(conversation) -> list[tuple[str, str]]:
    return await database_sync_to_async(
        lambda: [
            (m.message_type, m.content)
            for m in Message.objects.filter(conversation=conversation).order_by("created_at", "id")
        ]
    )()


async def lettas_copy(gateway, conversation) -> list[tuple[str, str]]:
    stored = await gateway.alist_messages(conversation_id=conversation.letta_id)
    return [(m.message_type, m.content) for m in stored if m.message_type != "system"]


async def no_run_left_going(conversation) -> bool:
    """Letta has no run of the conversation to cancel. Asked by a patient client of its own: near
    the end of a whole CI run, Letta once took over 30 s (``LETTA_TIMEOUT``) to answer this."""
    patient = LettaGateway(timeout=120)
    return await patient.acancel(conversation_id=conversation.letta_id) is False


async def the_run(conversation) -> Run:
    return await database_sync_to_async(lambda: conversation.runs.get())()


async def until(communicator, predicate, page: PageModel | None = None, timeout: float = 30):
    seen = 0
    while True:
        try:
            frame = await communicator.receive_from(timeout=timeout)
        except TimeoutError:
            # Where everything in this process waited: once in CI no frame came for 30 s while
            # Letta had ended the reply, and nothing said where the relay was.
            raise AssertionError(
                f"no frame for {timeout:.0f} s after {seen} frame(s); the tasks then:\n"
                + tasks_waiting()
            ) from None
        seen += 1
        if page is not None:
            page.apply(frame)
        if predicate(frame):
            return frame


def tasks_waiting() -> str:
    """The stacks of this process's other asyncio tasks and of its threads (the database's)."""
    out = io.StringIO()
    for task in asyncio.all_tasks():
        if task is not asyncio.current_task():
            task.print_stack(limit=6, file=out)
    names = {t.ident: t.name for t in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        if ident != threading.get_ident():
            out.write(f"Thread {names.get(ident, ident)}:\n")
            out.write("".join(traceback.format_stack(frame, limit=6)))
    return out.getvalue()


def token(frame: str) -> bool:
    return streams_a_piece(frame)


async def test_a_dropped_socket_resumes_the_reply_with_nothing_lost_or_repeated(
    letta_gateway, letta_conversation, user
):
    page = PageModel()
    first, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(first, "count [[long:60]]")
    for _ in range(5):
        await until(first, token, page)
    await first.disconnect()  # the network drops; the reply goes on in Letta

    shown = max(int(dom_id[4:]) for dom_id, _ in page.articles() if dom_id.startswith("msg-"))
    second, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    drafts = sum(1 for dom_id, _ in page.articles() if dom_id.startswith("stream-"))
    await second.send_to(text_data=json.dumps({"type": "resume", "after": shown, "drafts": drafts}))
    for frame in await frames_until_idle(second, timeout=30):
        page.apply(frame)
    await second.disconnect()

    [reply] = [
        c for kind, c in await lettas_copy(letta_gateway, letta_conversation) if kind == "assistant"
    ]
    assert len(reply.split()) == 60
    assert [text for _, text in page.articles()] == ["count [[long:60]]", reply]
    assert await mirror(letta_conversation) == await lettas_copy(letta_gateway, letta_conversation)


async def test_stop_mid_stream_cancels_the_run_on_letta_and_keeps_the_partial_reply(
    letta_gateway, letta_conversation, user
):
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, "count [[long:20]] slow")
    await until(communicator, token)
    await communicator.send_to(text_data=json.dumps({"type": "stop"}))
    frames = await frames_until_idle(communicator, timeout=30)
    await asyncio.wait_for(registry.wait_all_done(), 60)  # Letta confirms; the turn is settled
    await communicator.disconnect()

    run = await the_run(letta_conversation)
    assert run.status == Run.Status.STOPPED
    state = await letta_gateway.arun_state(run_id=run.letta_run_id)
    assert state is not None and state.status == "cancelled"
    messages = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation=letta_conversation).order_by("pk"))
    )()
    [partial] = [m for m in messages if m.message_type == "assistant"]
    assert 0 < len(partial.content.split()) < 20, "stopped before the end"
    assert partial.error == relay.STOPPED_NOTE
    [said] = [m for m in messages if m.message_type == "user"]
    assert said.error == relay.NOT_KEPT, "Letta keeps nothing of a cancelled turn: it says so"
    assert any("Stopped: this is the part that came before the stop." in f for f in frames)
    assert await lettas_copy(letta_gateway, letta_conversation) == []
    assert await no_run_left_going(letta_conversation), "no run is left going on Letta"


async def test_stop_before_the_first_token(letta_gateway, letta_conversation, user):
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, "count [[long:20]] slow")
    await until(communicator, lambda f: "is answering" in f)
    await communicator.send_to(text_data=json.dumps({"type": "stop"}))
    await frames_until_idle(communicator, timeout=30)
    await asyncio.wait_for(registry.wait_all_done(), 60)
    await communicator.disconnect()

    run = await the_run(letta_conversation)
    assert run.status == Run.Status.STOPPED
    assert await mirror(letta_conversation) == [("user", "count [[long:20]] slow")]
    [said] = await database_sync_to_async(lambda: list(letta_conversation.messages.all()))()
    assert said.error == relay.NOT_KEPT
    assert await lettas_copy(letta_gateway, letta_conversation) == []
    assert await no_run_left_going(letta_conversation)


async def test_a_second_send_while_answering_is_not_sent(letta_gateway, letta_conversation, user):
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, "first [[long:30]]")
    await until(communicator, token)
    await send_message(communicator, "second")
    refusal = await until(communicator, lambda f: "still answering" in f)
    await frames_until_idle(communicator, timeout=30)
    await communicator.disconnect()
    assert 'id="composer-error"' in refusal
    users = [
        c for kind, c in await lettas_copy(letta_gateway, letta_conversation) if kind == "user"
    ]
    assert users == ["first [[long:30]]"], "no second agent turn"


async def test_a_model_that_stalls_is_shown_as_stalled_then_recovers(
    letta_gateway, letta_conversation, user, settings
):
    settings.LETTACHAT_STALL_SECONDS = 1
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, "wait [[stall:3]] for it")
    stalled = await until(communicator, lambda f: 'data-stalled="true"' in f)
    assert 'id="stop"' in stalled and 'id="retry-stalled"' in stalled
    frames = await frames_until_idle(communicator, timeout=30)
    await communicator.disconnect()
    assert any("is answering" in f and "data-stalled" not in f for f in frames)
    assert ("assistant", "Echo: wait for it") in await mirror(letta_conversation)


async def test_restarting_letta_mid_reply_ends_clearly_and_retry_completes_the_reply(
    letta_gateway, letta_conversation, user, settings
):
    """A restart kills the run inside Letta. Depending on timing, its stream goes silent (shown
    as stalled, with Retry) or Letta fails it (an error, with Retry on the message). Either way
    the person gets a whole answer by pressing Retry."""
    settings.LETTACHAT_STALL_SECONDS = 2
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, "count [[long:300]]")
    await until(communicator, token)
    await asyncio.to_thread(harness.restart_letta)
    ended = await until(
        communicator,
        lambda f: 'data-stalled="true"' in f or 'data-busy="false"' in f,
        timeout=120,
    )
    if 'data-stalled="true"' in ended:
        assert 'id="retry-stalled"' in ended
        await communicator.send_to(text_data=json.dumps({"type": "retry"}))
        await until(communicator, lambda f: 'data-busy="false"' in f, timeout=60)
    else:
        failed = await database_sync_to_async(
            lambda: (
                Message.objects.filter(conversation=letta_conversation, message_type="user")
                .exclude(error="")
                .first()
            )
        )()
        if failed is not None:
            await communicator.send_to(
                text_data=json.dumps({"type": "retry", "message": failed.pk})
            )
        else:  # Letta kept the message and failed the run: the note says so; send it again
            await send_message(communicator, "count [[long:300]]")
    await frames_until_idle(communicator, timeout=120)
    await communicator.disconnect()

    kept = await lettas_copy(letta_gateway, letta_conversation)
    assert kept[-1][0] == "assistant" and len(kept[-1][1].split()) == 300, "answered in full"
    assert {content for kind, content in kept if kind == "user"} == {"count [[long:300]]"}
    ours = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation=letta_conversation))
    )()
    # Everything Letta has, the mirror has; what only the mirror has is marked as cut short.
    assert all(m in [(o.message_type, o.content) for o in ours] for m in kept)
    extra = [o for o in ours if (o.message_type, o.content) not in kept]
    assert all(o.error or o.message_type == "error" for o in extra)
