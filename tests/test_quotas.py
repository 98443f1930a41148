"""Per-person limits (conversations/quotas.py): new conversations per minute, replies at once."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse
from django.utils import timezone

from conversations import quotas, services
from conversations.models import Conversation, Message, Run
from letta_gateway import ContentDelta, RunStarted, Stopped
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)


def test_new_conversations_past_the_rate_are_refused_before_letta_is_asked(
    client, user, other_user, agent, fake_gateway, settings
):
    settings.LETTACHAT_NEW_CONVERSATION_RATE = "2/60"
    client.force_login(user)
    url = reverse("conversation_create", args=[agent.letta_id])
    assert client.post(url).status_code == 302
    assert client.post(url).status_code == 302
    refused = client.post(url)
    assert refused.status_code == 429
    text = refused.content.decode()
    assert "Could not start a conversation: you started 2 conversations in the last minute." in text
    assert "Wait 60 seconds and try again." in text
    assert len(fake_gateway.conversations) == 2
    assert Conversation.objects.filter(owner=user).count() == 2

    # Someone else is not affected; nor is this person once the minute has passed.
    services.conversation_create(gateway=fake_gateway, user=other_user, agent=agent)
    Conversation.objects.filter(owner=user).update(
        created_at=timezone.now() - timedelta(seconds=61)
    )
    assert client.post(url).status_code == 302


def test_forks_count_as_new_conversations(client, user, conversation, fake_gateway, settings):
    settings.LETTACHAT_NEW_CONVERSATION_RATE = "1/60"  # the conversation made just now counts
    client.force_login(user)
    response = client.post(reverse("conversation_fork", args=[conversation.letta_id]))
    assert response.status_code == 429
    text = response.content.decode()
    assert "Could not fork the conversation: you started 1 conversation in the last" in text
    assert fake_gateway.forks == []


def test_a_malformed_rate_is_a_configuration_error(settings):
    settings.LETTACHAT_NEW_CONVERSATION_RATE = "ten a minute"
    with pytest.raises(ValueError, match="LETTACHAT_NEW_CONVERSATION_RATE"):
        quotas.new_conversation_rate()


async def test_a_send_past_the_replies_running_at_once_is_refused_and_the_text_kept(
    make_conversation, user, other_user, fake_gateway, settings
):
    settings.LETTACHAT_MAX_RUNNING_REPLIES = 1
    first = await database_sync_to_async(make_conversation)(user)
    second = await database_sync_to_async(make_conversation)(user)
    bobs = await database_sync_to_async(make_conversation)(other_user)
    gate = fake_gateway.enqueue(
        [RunStarted("run-1"), ContentDelta("m1", "assistant", "thinking", "run-1"),
         Stopped("end_turn")],
        hold_after=2,
    )  # fmt: skip
    running, _, _ = await open_socket(first.letta_id, user=user)
    await send_message(running, "a long question")
    while "thinking" not in await running.receive_from():
        pass

    other, _, _ = await open_socket(second.letta_id, user=user)
    await send_message(other, "and another")
    refusal = await other.receive_from()
    assert 'id="composer-error"' in refusal and 'id="composer"' not in refusal
    assert "at most 1 may run at once" in refusal and "still in the box" in refusal
    # Someone else's replies do not count against this person.
    bob, _, _ = await open_socket(bobs.letta_id, user=other_user)
    fake_gateway.enqueue_text("hi bob")
    await send_message(bob, "hello")
    assert any("hi bob" in f for f in await frames_until_idle(bob))

    gate.set()  # the first reply ends: a place is free again
    await frames_until_idle(running)
    fake_gateway.enqueue_text("now", " then")
    await send_message(other, "and another")
    assert any("now then" in f for f in await frames_until_idle(other))
    assert [s["text"] for s in fake_gateway.sent] == ["a long question", "hello", "and another"]
    for communicator in (running, other, bob):
        await communicator.disconnect()


async def test_a_run_left_running_by_a_dead_process_stops_counting_after_a_while(
    make_conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_MAX_RUNNING_REPLIES = 1
    stale = await database_sync_to_async(make_conversation)(user)
    await database_sync_to_async(
        lambda: Run.objects.filter(
            pk=Run.objects.create(conversation=stale, relay_channel="gone").pk
        ).update(created_at=timezone.now() - quotas.STALE_RUN - timedelta(seconds=1))
    )()
    fresh = await database_sync_to_async(make_conversation)(user)
    communicator, _, _ = await open_socket(fresh.letta_id, user=user)
    fake_gateway.enqueue_text("answered")
    await communicator.send_to(text_data=json.dumps({"message": "hello", "HEADERS": {}}))
    assert any("answered" in f for f in await frames_until_idle(communicator))
    await communicator.disconnect()


async def test_a_retry_past_the_replies_running_at_once_is_refused_with_the_reason(
    make_conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_MAX_RUNNING_REPLIES = 1
    first = await database_sync_to_async(make_conversation)(user)
    second = await database_sync_to_async(make_conversation)(user)
    failed = await database_sync_to_async(Message.objects.create)(
        conversation=second, message_type="user", content="try me again", error="Letta was down",
        otid="1a1a1a1a-2b2b-4c4c-8d8d-3e3e3e3e3e3e", created_at=timezone.now(),
    )  # fmt: skip
    gate = fake_gateway.enqueue(
        [RunStarted("run-1"), ContentDelta("m1", "assistant", "thinking", "run-1"),
         Stopped("end_turn")],
        hold_after=2,
    )  # fmt: skip
    running, _, _ = await open_socket(first.letta_id, user=user)
    await send_message(running, "a long question")
    while "thinking" not in await running.receive_from():
        pass
    other, _, _ = await open_socket(second.letta_id, user=user)
    await other.send_to(text_data=json.dumps({"type": "retry", "message": failed.pk}))
    refusal = await other.receive_from()
    assert 'id="composer-error"' in refusal and "at most 1 may run at once" in refusal
    gate.set()
    await frames_until_idle(running)
    for communicator in (running, other):
        await communicator.disconnect()
    assert [s["text"] for s in fake_gateway.sent] == ["a long question"]
