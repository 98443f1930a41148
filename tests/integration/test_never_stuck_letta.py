"""Never stuck, never twice, against the real Letta server: faults caused for real.

Letta killed (SIGKILL) mid-reply and started again; Letta hanging (SIGSTOP) while Stop is
pressed and while a message is sent; a model that says nothing before its first token while
Stop is pressed again and again. After each: no conversation stuck, no second turn in Letta, and
the mirror says what Letta kept (or marks what Letta did not keep).
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from channels.db import database_sync_to_async

from conversations import relay, services
from conversations.models import Message
from conversations.relay import registry
from devtools.local_letta import harness
from tests.page_model import streams_a_piece
from tests.websocket import frames_until_idle, is_idle, open_socket, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def letta_conversation(letta_gateway, letta_agent, user):
    return services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)


@pytest.fixture
def quick(settings):
    settings.LETTACHAT_STALL_SECONDS = 2
    settings.LETTACHAT_RUN_CHECK_SECONDS = 1
    settings.LETTACHAT_RESUME_BACKOFF = 0.5
    settings.LETTACHAT_RESUME_SECONDS = 180  # a restart under load can take a minute
    return settings


async def mirror(conversation) -> list[tuple[str, str, str]]:
    return await database_sync_to_async(
        lambda: [
            (m.message_type, m.content, m.error)
            for m in Message.objects.filter(conversation=conversation).order_by("created_at", "id")
        ]
    )()


async def lettas_copy(gateway, conversation) -> list[tuple[str, str]]:
    stored = await gateway.alist_messages(conversation_id=conversation.letta_id)
    return [(m.message_type, m.content) for m in stored if m.message_type != "system"]


async def until(communicator, predicate, timeout: float = 30) -> str:
    while True:
        frame = await communicator.receive_from(timeout=timeout)
        if predicate(frame):
            return frame


def token(frame: str) -> bool:
    return streams_a_piece(frame) or 'id="stream-assistant' in frame


async def opened(conversation, user):
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    await communicator.receive_from(timeout=10)
    return communicator


async def settled(timeout: float = 150) -> None:
    await asyncio.wait_for(registry.wait_all_done(), timeout)


async def assert_mirror_says_what_letta_kept(gateway, conversation) -> None:
    kept = await lettas_copy(gateway, conversation)
    ours = await mirror(conversation)
    assert all(m in [(kind, content) for kind, content, _ in ours] for m in kept), (kept, ours)
    extra = [o for o in ours if (o[0], o[1]) not in kept]
    assert all(error or kind == "error" for kind, _, error in extra), extra


async def test_a_reply_cut_by_letta_being_killed_ends_and_the_next_message_goes_through(
    letta_gateway, letta_conversation, user, quick
):
    communicator = await opened(letta_conversation, user)
    await send_message(communicator, "count [[long:300]]")
    await until(communicator, token)
    await asyncio.to_thread(harness.kill_letta)
    await asyncio.to_thread(harness.start_letta)
    back = time.monotonic()
    frames = await frames_until_idle(communicator, timeout=120)
    ended_after = time.monotonic() - back

    assert any(relay.LETTA_RESTARTED in f for f in frames), "the page says what happened"
    # Bounded: once Letta is back, within the resume back-off, the stall time and a check.
    assert ended_after < 15, ended_after
    await send_message(communicator, "hello again")
    frames = await frames_until_idle(communicator, timeout=60)
    await communicator.disconnect()
    assert not any("still answering" in f for f in frames)
    assert ("assistant", "Echo: hello again") in await lettas_copy(
        letta_gateway, letta_conversation
    )
    await assert_mirror_says_what_letta_kept(letta_gateway, letta_conversation)


async def test_stop_while_the_model_says_nothing_ends_the_reply_at_once_and_letta_keeps_nothing(
    letta_gateway, letta_conversation, user, quick
):
    communicator = await opened(letta_conversation, user)
    await send_message(communicator, "[[wait:20]] hello")
    await until(communicator, lambda f: "is answering" in f)
    pressed = time.monotonic()
    for _ in range(5):
        await communicator.send_to(text_data=json.dumps({"type": "stop"}))
    await until(communicator, is_idle, timeout=10)
    assert time.monotonic() - pressed < 2, "over for the person at once"
    await settled()
    await communicator.disconnect()

    [run] = await database_sync_to_async(lambda: list(letta_conversation.runs.all()))()
    state = await letta_gateway.arun_state(run_id=run.letta_run_id)
    assert state is not None and state.status == "cancelled"
    assert await lettas_copy(letta_gateway, letta_conversation) == []
    assert await mirror(letta_conversation) == [("user", "[[wait:20]] hello", relay.NOT_KEPT)]


async def test_stop_while_letta_hangs_ends_at_once_and_the_mirror_settles_when_it_is_back(
    letta_gateway, letta_conversation, user, quick
):
    communicator = await opened(letta_conversation, user)
    await send_message(communicator, "count [[long:200]]")
    await until(communicator, token)
    harness.pause_letta()
    try:
        pressed = time.monotonic()
        await communicator.send_to(text_data=json.dumps({"type": "stop"}))
        await until(communicator, is_idle, timeout=10)
        assert time.monotonic() - pressed < 2
        await asyncio.sleep(3)  # Letta stays frozen a while: the cancel waits and is retried
    finally:
        harness.pause_letta(False)
    await settled()
    await communicator.disconnect()

    [run] = await database_sync_to_async(lambda: list(letta_conversation.runs.all()))()
    state = await letta_gateway.arun_state(run_id=run.letta_run_id)
    assert state is not None and state.over
    await assert_mirror_says_what_letta_kept(letta_gateway, letta_conversation)


async def test_a_send_that_times_out_on_a_hanging_letta_is_never_a_second_turn(
    letta_gateway, letta_conversation, user, quick
):
    quick.LETTA_TIMEOUT = 2
    communicator = await opened(letta_conversation, user)
    harness.pause_letta()
    try:
        await send_message(communicator, "are you there")
        await asyncio.sleep(5)  # the send times out; asking Letta by its otid times out too
    finally:
        harness.pause_letta(False)
    frames = await frames_until_idle(communicator, timeout=120)
    await settled()
    await communicator.disconnect()

    users = [
        c for kind, c in await lettas_copy(letta_gateway, letta_conversation) if kind == "user"
    ]
    assert users in ([], ["are you there"]), "at most one turn"
    if users:  # Letta got it: followed, and answered once
        assert ("assistant", "Echo: are you there") in await lettas_copy(
            letta_gateway, letta_conversation
        )
    else:  # it did not: said so, with Retry (the box is left alone)
        assert any('class="secondary retry"' in f for f in frames)
        assert not any("are you there</textarea>" in f for f in frames)
    await assert_mirror_says_what_letta_kept(letta_gateway, letta_conversation)
