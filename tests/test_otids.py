"""An otid belongs to the conversation it was first sent in (conversations/otids.py)."""

from __future__ import annotations

import json

import pytest
from channels.db import database_sync_to_async

from conversations.models import Message
from conversations.otids import FOREIGN_RUN
from letta_gateway import ContentDelta, RunStarted, Stopped
from tests.websocket import frames_until_idle, open_socket

pytestmark = pytest.mark.django_db(transaction=True)

THEIR_OTID = "6f1c2a9e-3b4d-4e5f-8a7b-9c0d1e2f3a4b"


async def send(communicator, text: str, otid: str) -> None:
    frame = {"message": text, "otid": otid, "HEADERS": {}}
    await communicator.send_to(text_data=json.dumps(frame))


async def test_an_otid_of_another_conversation_becomes_a_new_turn_and_a_resend_stays_one(
    conversation, make_conversation, user, other_user, fake_gateway
):
    theirs = await database_sync_to_async(make_conversation)(other_user)
    await database_sync_to_async(Message.objects.create)(
        conversation=theirs, message_type="user", content="their secret", otid=THEIR_OTID,
        created_at="2026-01-01T00:00:00Z",
    )  # fmt: skip
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    fake_gateway.enqueue_text("my own reply")
    await send(communicator, "hello", THEIR_OTID)
    assert any("my own reply" in f for f in await frames_until_idle(communicator))
    sent_otid = fake_gateway.sent[-1]["otid"]
    assert sent_otid != THEIR_OTID

    await send(communicator, "hello", THEIR_OTID)  # the same frame again: a lost connection
    await communicator.receive_from()  # the box, emptied: nothing new was sent
    assert await communicator.receive_nothing()
    await communicator.disconnect()
    assert [s["otid"] for s in fake_gateway.sent] == [sent_otid]
    mine = await database_sync_to_async(
        lambda: list(conversation.messages.values_list("message_type", "otid"))
    )()
    assert mine[0] == ("user", sent_otid)


async def test_a_run_letta_says_is_another_conversations_is_not_followed(
    conversation, user, fake_gateway
):
    fake_gateway.run_conversations["run-1"] = "conv-of-someone-else"
    fake_gateway.enqueue_text("their", " private", " reply")
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send(communicator, "hello", "0b0b0b0b-1c1c-4d4d-8e8e-2f2f2f2f2f2f")
    frames = await frames_until_idle(communicator)
    assert not any("private" in f for f in frames)
    assert any("Letta matched this message to a reply in another conversation" in f for f in frames)
    # The message offers Retry, the one route to send it again: the box is left alone.
    assert any('class="secondary retry"' in f for f in frames), "Retry: the one route to resend"
    assert not any(">hello</textarea>" in f for f in frames)
    stored = await database_sync_to_async(
        lambda: list(conversation.messages.values_list("message_type", "content", "error"))
    )()
    assert stored == [("user", "hello", FOREIGN_RUN)]

    # Retry: a new turn with a new otid, followed as usual.
    fake_gateway.run_conversations["run-2"] = conversation.letta_id
    fake_gateway.enqueue(
        [RunStarted("run-2"), ContentDelta("m-2", "assistant", "mine", "run-2"),
         Stopped("end_turn")]
    )  # fmt: skip
    message = await database_sync_to_async(lambda: conversation.messages.get())()
    await communicator.send_to(
        text_data=json.dumps({"type": "retry", "message": message.pk, "HEADERS": {}})
    )
    assert any("mine" in f for f in await frames_until_idle(communicator))
    await communicator.disconnect()
    assert fake_gateway.sent[0]["otid"] != fake_gateway.sent[1]["otid"]
