"""Letta into the mirror (conversations/sync.py) with the scripted gateway: the cases the real
server does not make on demand. The real server's are in tests/integration/test_sync_letta.py."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command

from conversations import sync
from conversations.models import Agent, Conversation, Message
from letta_gateway import ConversationInfo, LettaUnavailable, MessageInfo

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def info(letta_id, kind, content, otid=""):
    return MessageInfo(letta_id=letta_id, message_type=kind, content=content, created_at=T0,
                       otid=otid)  # fmt: skip


def test_a_resync_confirms_a_message_sent_from_here_and_keeps_lettachats_notes(
    fake_gateway, conversation
):
    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, conversation.agent.letta_id, "", T0, None
    )
    sent = Message.objects.create(conversation=conversation, message_type="user", content="hi",
                                  otid="otid-1", error="lost", created_at=T0)  # fmt: skip
    note = Message.objects.create(conversation=conversation, message_type="error",
                                  content="The reply failed.", created_at=T0)  # fmt: skip
    fake_gateway.stored[conversation.letta_id] = [
        info("m-1", "user", "hi", otid="otid-1"),
        info("m-2", "assistant", "Echo: hi"),
    ]
    result = sync.conversation_resync(gateway=fake_gateway, conversation=conversation)
    assert (result.added, result.updated, result.retitled) == (1, 1, False)
    sent.refresh_from_db()
    assert (sent.letta_id, sent.error) == ("m-1", "")
    assert Message.objects.filter(pk=note.pk).exists()
    assert conversation.messages.count() == 3
    again = sync.conversation_resync(gateway=fake_gateway, conversation=conversation)
    assert (again.added, again.updated) == (0, 0)


def test_an_import_keeps_one_message_per_otid(fake_gateway, agent, user):
    fake_gateway.conversations["conv-twice"] = ConversationInfo("conv-twice", agent.letta_id,
                                                                "", T0, None)  # fmt: skip
    fake_gateway.stored["conv-twice"] = [
        info("m-1", "user", "hi", otid="same"),
        info("m-2", "user", "hi again", otid="same"),
    ]
    result = sync.conversations_import(gateway=fake_gateway, owner=user, agent=agent)
    (conversation,) = result.imported
    assert list(conversation.messages.values_list("content", "otid")) == [
        ("hi", "same"),
        ("hi again", ""),
    ]
    assert conversation.title == "hi"


def test_an_imported_conversation_is_titled_in_plain_words(fake_gateway, agent, user):
    fake_gateway.conversations["conv-md"] = ConversationInfo("conv-md", agent.letta_id, "", T0,
                                                             None)  # fmt: skip
    fake_gateway.stored["conv-md"] = [info("m-1", "user", "What does **this** do?")]
    (conversation,) = sync.conversations_import(
        gateway=fake_gateway, owner=user, agent=agent
    ).imported
    assert conversation.title == "What does this do?"


def test_sync_conversations_says_so_when_letta_fails(fake_gateway, agent, user):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    with pytest.raises(CommandError, match=r"cannot be reached.*run the command again"):
        call_command("sync_conversations", owner=user.username, stdout=io.StringIO())
    assert not Conversation.objects.exists()


def test_someone_elses_own_copy_is_never_imported_for_another_person(
    fake_gateway, personal_agent, user, other_user
):
    bobs_copy = Agent.objects.create(
        letta_id="agent-copy-bob", name="Tutor (mallory)", template=personal_agent,
        owner=other_user, sharing="personal",
    )  # fmt: skip
    fake_gateway.conversations["conv-private"] = ConversationInfo(
        "conv-private", bobs_copy.letta_id, "Mallory's secret", T0, None
    )
    with pytest.raises(CommandError, match="another person's own copy of Tutor"):
        call_command("sync_conversations", owner=user.username, agent=bobs_copy.letta_id)
    call_command("sync_conversations", owner=user.username, stdout=io.StringIO())
    assert not Conversation.objects.filter(letta_id="conv-private").exists()
    call_command("sync_conversations", owner=other_user.username, stdout=io.StringIO())
    assert Conversation.objects.get(letta_id="conv-private").owner == other_user
