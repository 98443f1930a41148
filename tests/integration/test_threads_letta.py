"""Thread management against the real Letta server (0.16.8): rename, delete, fork, search."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.core.cache import cache
from django.urls import reverse

from conversations import services
from conversations.models import Conversation, Message
from letta_gateway import LettaNotFound

pytestmark = [pytest.mark.integration, pytest.mark.django_db]


@pytest.fixture(autouse=True)
def _nothing_known_about_forks():
    cache.delete(services.FORK_POINT_CACHE_KEY)
    yield
    cache.delete(services.FORK_POINT_CACHE_KEY)


def say(gateway, conversation_id: str, text: str) -> None:
    async def send():
        async for _ in gateway.astream_reply(
            conversation_id=conversation_id, text=text, otid=str(uuid.uuid4())
        ):
            pass

    asyncio.run(send())


@pytest.fixture
def chat(letta_gateway, letta_agent, user):
    """A conversation on the real server with two exchanges, mirrored as Letta stores it."""
    conversation = services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)
    say(letta_gateway, conversation.letta_id, "first words")
    say(letta_gateway, conversation.letta_id, "second words")
    services.message_reconcile(
        conversation=conversation,
        infos=letta_gateway.list_messages(conversation_id=conversation.letta_id),
    )
    return conversation


def test_a_rename_is_the_conversations_summary_in_letta(letta_gateway, letta_agent, user):
    conversation = services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)
    title = f"Renamed {uuid.uuid4().hex[:8]}"
    services.conversation_rename(gateway=letta_gateway, conversation=conversation, summary=title)

    conversation.refresh_from_db()
    assert conversation.summary == title
    (found,) = letta_gateway.list_conversations(agent_id=letta_agent.letta_id, summary_search=title)
    assert (found.letta_id, found.summary) == (conversation.letta_id, title)


def test_lettas_summary_search_is_a_case_sensitive_substring(letta_gateway, letta_agent, user):
    conversation = services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)
    marker = "CASE" + uuid.uuid4().hex[:10].upper()  # letters, whatever the hex digits
    letta_gateway.update_conversation(
        conversation_id=conversation.letta_id, summary=f"Notes {marker} here"
    )
    search = letta_gateway.list_conversations
    assert [c.letta_id for c in search(agent_id=letta_agent.letta_id, summary_search=marker)] == [
        conversation.letta_id
    ]
    assert search(agent_id=letta_agent.letta_id, summary_search=marker.lower()) == []


def test_conversations_are_listed_in_cursor_pages(letta_gateway, letta_agent_info):
    agent_id = letta_agent_info.letta_id
    for _ in range(3):
        letta_gateway.create_conversation(agent_id=agent_id)
    first = letta_gateway.list_conversations(agent_id=agent_id, limit=2)
    second = letta_gateway.list_conversations(agent_id=agent_id, limit=2, after=first[-1].letta_id)
    assert len(first) == 2 and len(second) == 2
    assert not {c.letta_id for c in first} & {c.letta_id for c in second}


def test_search_finds_titles_kept_only_in_letta_and_only_my_own(
    client, letta_gateway, letta_agent, user, other_user
):
    marker = uuid.uuid4().hex[:10]
    mine, theirs = (
        services.conversation_create(gateway=letta_gateway, user=owner, agent=letta_agent)
        for owner in (user, other_user)
    )
    for conversation in (mine, theirs):  # titled in Letta by something other than lettachat
        letta_gateway.update_conversation(
            conversation_id=conversation.letta_id, summary=f"Report {marker}"
        )
    client.force_login(user)
    html = client.get(
        reverse("conversation_search", args=[letta_agent.letta_id]),
        {"q": marker},
        headers={"HX-Request": "true"},
    ).content.decode()
    assert f'id="found-{mine.letta_id}"' in html
    assert theirs.letta_id not in html
    assert "could not be searched" not in html


def test_delete_removes_the_conversation_from_letta(letta_gateway, letta_agent, user):
    conversation = services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)
    letta_id = conversation.letta_id
    services.conversation_delete(gateway=letta_gateway, conversation=conversation)

    assert not Conversation.objects.filter(letta_id=letta_id).exists()
    with pytest.raises(LettaNotFound):
        letta_gateway.delete_conversation(conversation_id=letta_id)
    with pytest.raises(LettaNotFound):
        letta_gateway.fork_conversation(conversation_id=letta_id)


def test_a_conversation_already_gone_from_letta_is_deleted_from_the_mirror(
    letta_gateway, letta_agent, user
):
    conversation = services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)
    letta_gateway.delete_conversation(conversation_id=conversation.letta_id)
    services.conversation_delete(gateway=letta_gateway, conversation=conversation)
    assert not Conversation.objects.filter(pk=conversation.pk).exists()


def test_a_fork_copies_the_conversation_and_its_mirror_matches_letta(letta_gateway, chat, user):
    fork = services.conversation_fork(gateway=letta_gateway, user=user, conversation=chat)

    assert fork.letta_id != chat.letta_id and fork.forked_from == chat
    in_letta = [
        (m.letta_id, m.message_type, m.content)
        for m in letta_gateway.list_messages(conversation_id=fork.letta_id)
        if m.message_type != "system"
    ]
    in_mirror = list(
        fork.messages.order_by("created_at", "id").values_list(
            "letta_id", "message_type", "content"
        )
    )
    assert in_mirror == in_letta
    assert [content for _, _, content in in_mirror] == [
        "first words",
        "Echo: first words",
        "second words",
        "Echo: second words",
    ]
    # Letta keeps the origin's message ids in the fork: the mirror holds both copies.
    assert Message.objects.filter(letta_id=in_mirror[0][0]).count() == 2

    # The fork is a conversation of its own: a reply there leaves the origin as it was.
    say(letta_gateway, fork.letta_id, "only in the fork")
    origin_texts = [m.content for m in letta_gateway.list_messages(conversation_id=chat.letta_id)]
    assert "only in the fork" not in origin_texts


def test_this_server_ignores_the_fork_point_and_lettachat_says_so(
    letta_gateway, chat, user, monkeypatch
):
    first_answer = chat.messages.get(content="Echo: first words")
    made = []
    fork = letta_gateway.fork_conversation

    def recording_fork(**kwargs):
        made.append(fork(**kwargs))
        return made[-1]

    monkeypatch.setattr(letta_gateway, "fork_conversation", recording_fork)

    with pytest.raises(services.ForkPointIgnored) as raised:
        services.conversation_fork(
            gateway=letta_gateway, user=user, conversation=chat, at_message=first_answer
        )

    assert "cannot fork a conversation at a message" in str(raised.value)
    assert Conversation.objects.count() == 1  # no fork in the mirror...
    (copy,) = made
    with pytest.raises(LettaNotFound):  # ...and the whole copy Letta made is gone again
        letta_gateway.delete_conversation(conversation_id=copy.letta_id)
    assert services.conversation_fork_point_known() is False


def test_before_any_fork_the_servers_version_says_it_cannot_fork_at_a_message(letta_gateway):
    assert services.conversation_fork_point_known() is None
    assert services.conversation_fork_point_supported(gateway=letta_gateway) is False
