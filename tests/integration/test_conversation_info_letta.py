"""Conversation info against the real Letta server: the panel's in-context count is Letta's, no
message is marked while all are in context, and after a real compaction the messages Letta took
out are marked and its marker shows in the thread."""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Message, Run
from tests.page_model import Node, parse
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

REPLY_SECONDS = 60


async def chat(conversation, user, *texts: str) -> None:
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    for text in texts:
        await send_message(communicator, text)
        await frames_until_idle(communicator, timeout=REPLY_SECONDS)
    await communicator.disconnect()


def info_panel(user, conversation) -> Node:
    client = Client()
    client.force_login(user)
    response = client.get(reverse("conversation_info", args=[conversation.letta_id]))
    assert response.status_code == 200
    return Node("root", {}, parse(response.content.decode()))


def text_of(root: Node, dom_id: str) -> str:
    found = root.find(dom_id)
    assert found is not None, f"no #{dom_id}"
    return " ".join(found.text().split())


def marked(root: Node) -> list[int]:
    [body] = [n for n in root.children if isinstance(n, Node) and n.tag == "div"]
    return [int(pk) for pk in body.attrs["data-left-context"].split()]


def in_context_count(root: Node) -> int:
    found = re.match(r"(\d+) messages? \(", text_of(root, "info-in-context"))
    assert found, text_of(root, "info-in-context")
    return int(found.group(1))


async def test_the_panel_counts_what_letta_has_in_context_and_marks_what_compaction_took_out(
    letta_gateway, letta_agent, user
):
    conversation = await database_sync_to_async(services.conversation_create)(
        gateway=letta_gateway, user=user, agent=letta_agent
    )
    words = ["first", "second", "third", "fourth", "fifth"]
    await chat(conversation, user, *(f"{word} words" for word in words))

    def check() -> tuple[Node, tuple[str, ...]]:
        details = letta_gateway.retrieve_conversation(conversation_id=conversation.letta_id)
        root = info_panel(user, conversation)
        assert in_context_count(root) == len(details.in_context_message_ids)
        return root, details.in_context_message_ids

    root, in_context = await database_sync_to_async(check)()
    assert len(in_context) == 11  # the system prompt and five exchanges
    assert marked(root) == [], "every message is in context before a compaction"
    last_turn = await database_sync_to_async(
        lambda: Run.objects.filter(conversation=conversation).order_by("-pk").first()
    )()
    assert last_turn is not None and last_turn.context_tokens
    assert text_of(root, "info-context") == (
        f"{last_turn.context_tokens:,} of 30,000 tokens "
        f"({round(100 * last_turn.context_tokens / 30_000)}%) at the last turn"
    )

    # A real compaction; the mirror reads Letta's history back, its marker included.
    done = letta_gateway.compact_conversation(conversation_id=conversation.letta_id)
    assert done.messages_after < done.messages_before

    def after_compaction() -> tuple[Node, tuple[str, ...], list[Message]]:
        services.message_reconcile(
            conversation=conversation,
            infos=letta_gateway.list_messages(conversation_id=conversation.letta_id, limit=100),
        )
        root, in_context = check()
        return root, in_context, list(conversation.messages.exclude(letta_id=None))

    root, in_context, mirrored = await database_sync_to_async(after_compaction)()
    out = [m.pk for m in mirrored if m.letta_id not in in_context]
    assert out, "Letta took messages out of the context window"
    assert sorted(marked(root)) == sorted(out)
    first = next(m for m in mirrored if m.content == "first words")
    assert first.pk in out
    assert "Letta compacted this conversation once" in text_of(root, "info-in-context")

    # The thread shows the marker where Letta put its summary, not the alert's JSON.
    def thread_page() -> str:
        client = Client()
        client.force_login(user)
        page = client.get(reverse("conversation_detail", args=[conversation.letta_id]))
        return page.content.decode()

    html = await database_sync_to_async(thread_page)()
    assert html.count('class="compaction-marker"') == 1
    assert '{"type": "system_alert"' not in html
    letta_gateway.delete_conversation(conversation_id=conversation.letta_id)
