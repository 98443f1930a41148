"""Letta into the mirror, against the real Letta server: ``manage.py sync_conversations`` imports a
person's conversations (messages read in cursor pages), and a re-sync restores what the mirror
lost."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import CommandError, call_command

from conversations import sync
from conversations.models import Agent, Conversation, Message
from devtools.local_letta import harness
from tests.integration.test_threads_letta import say

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture
def fresh_agent(letta_gateway):
    """An agent of this test's own on the real server, so only its conversations are listed."""
    info = letta_gateway.create_agent(
        name=f"lettachat-sync-{uuid.uuid4().hex[:8]}",
        model=harness.MODEL_HANDLE,
        description="Used by lettachat's sync tests.",
        blocks={"human": "A tester.", "persona": "A patient test agent."},
    )
    return Agent.objects.create(letta_id=info.letta_id, name=info.name, visible_to_users=True)


def letta_messages(gateway, conversation_id):
    return [
        (m.letta_id, m.message_type, m.content)
        for m in gateway.list_messages(conversation_id=conversation_id, limit=1000)
        if m.message_type != "system"
    ]


def mirror_messages(conversation):
    return list(
        conversation.messages.order_by("created_at", "id").values_list(
            "letta_id", "message_type", "content"
        )
    )


def test_sync_conversations_imports_a_persons_conversations_with_their_messages(
    letta_gateway, fresh_agent, user, other_user
):
    talked = letta_gateway.create_conversation(agent_id=fresh_agent.letta_id).letta_id
    say(letta_gateway, talked, "first words about Lisbon")
    say(letta_gateway, talked, "second words about Porto")
    empty = letta_gateway.create_conversation(agent_id=fresh_agent.letta_id).letta_id
    theirs = letta_gateway.create_conversation(agent_id=fresh_agent.letta_id).letta_id
    Conversation.objects.create(letta_id=theirs, agent=fresh_agent, owner=other_user)

    out = io.StringIO()
    call_command(
        "sync_conversations",
        owner=user.username,
        agent=fresh_agent.letta_id,
        page_size=2,  # several pages of conversations and of messages
        stdout=out,
    )

    imported = Conversation.objects.get(letta_id=talked)
    assert imported.owner == user and imported.agent == fresh_agent
    assert mirror_messages(imported) == letta_messages(letta_gateway, talked)
    assert [m[1] for m in mirror_messages(imported)][:1] == ["user"]
    assert len(mirror_messages(imported)) >= 4  # two exchanges
    assert imported.title == "first words about Lisbon"  # Letta has no summary: the first words
    assert Conversation.objects.get(letta_id=empty).owner == user
    assert Conversation.objects.get(letta_id=theirs).owner == other_user  # left as it was
    text = out.getvalue()
    assert f"{talked}: imported “first words about Lisbon”" in text
    assert "messages read…" in text  # progress inside a long conversation
    assert f"{theirs}: already here, skipped" in text
    assert "2 conversation(s) imported for alice" in text and "1 already here" in text

    again = io.StringIO()
    call_command("sync_conversations", owner=user.username, agent=fresh_agent.letta_id,
                 stdout=again)  # fmt: skip
    assert "0 conversation(s) imported" in again.getvalue() and "3 already here" in again.getvalue()
    assert Message.objects.filter(conversation__letta_id=talked).count() == len(
        letta_messages(letta_gateway, talked)
    )


def test_sync_conversations_refuses_an_unknown_person_or_agent(letta_gateway, fresh_agent, user):
    with pytest.raises(CommandError, match="No user 'nobody'"):
        call_command("sync_conversations", owner="nobody")
    with pytest.raises(CommandError, match=r"run `manage\.py sync_agents` first"):
        call_command("sync_conversations", owner=user.username, agent="agent-unknown")


def test_a_resync_restores_what_the_mirror_lost_in_lettas_order(letta_gateway, fresh_agent, user):
    conversation_id = letta_gateway.create_conversation(agent_id=fresh_agent.letta_id).letta_id
    say(letta_gateway, conversation_id, "one")
    say(letta_gateway, conversation_id, "two")
    call_command("sync_conversations", owner=user.username, agent=fresh_agent.letta_id,
                 stdout=io.StringIO())  # fmt: skip
    conversation = Conversation.objects.get(letta_id=conversation_id)
    whole = mirror_messages(conversation)
    lost = conversation.messages.order_by("created_at", "id")[1:3]
    Message.objects.filter(pk__in=[m.pk for m in lost]).delete()
    conversation.messages.filter(message_type="assistant").update(content="drifted")
    letta_gateway.update_conversation(conversation_id=conversation_id, summary="Named in Letta")

    result = sync.conversation_resync(gateway=letta_gateway, conversation=conversation, page=2)

    assert result.added == 2 and result.updated >= 1 and result.retitled
    assert mirror_messages(conversation) == whole
    conversation.refresh_from_db()
    assert conversation.summary == "Named in Letta"
