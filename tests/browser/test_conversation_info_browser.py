"""Conversation info in headless Chromium, against the real Letta server: the panel loads after the
page, the messages a real compaction took out of the context window are marked in the thread, the
panel follows a new turn, and a conversation Letta cannot tell about still reads as usual."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from conversations import services
from conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"
REPLY_MS = 60_000
LABEL = "not in the agent's context"


@pytest.fixture
def alice(page, live_server_url, make_user):
    """Alice, logged in."""
    user = make_user("alice", PASSWORD)
    page.goto(f"{live_server_url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    return user


def mirror_from_letta(gateway, conversation: Conversation) -> None:
    services.message_reconcile(
        conversation=conversation,
        infos=gateway.list_messages(conversation_id=conversation.letta_id, limit=100),
    )


def article_ids(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(e => e.id)")


def test_the_panel_loads_and_the_messages_a_compaction_took_out_are_marked(
    page, live_server_url, alice, letta_gateway, letta_agent
):
    conversation = services.conversation_create(
        gateway=letta_gateway, user=alice, agent=letta_agent
    )
    for word in ["first", "second", "third", "fourth", "fifth"]:
        for _ in letta_gateway.stream_reply(
            conversation_id=conversation.letta_id, text=f"{word} words", otid=str(uuid.uuid4())
        ):
            pass
    mirror_from_letta(letta_gateway, conversation)  # as the relay does after each turn
    letta_gateway.compact_conversation(conversation_id=conversation.letta_id)
    mirror_from_letta(letta_gateway, conversation)  # and reads the compaction's marker back
    in_context = set(
        letta_gateway.retrieve_conversation(
            conversation_id=conversation.letta_id
        ).in_context_message_ids
    )
    mirrored = list(conversation.messages.exclude(letta_id=None).order_by("created_at", "pk"))
    out = {f"msg-{m.pk}" for m in mirrored if m.letta_id not in in_context}
    kept = {f"msg-{m.pk}" for m in mirrored if m.letta_id in in_context}
    assert out and kept

    page.goto(f"{live_server_url}{conversation.get_absolute_url()}")
    headline = page.wait_for_selector("#info-headline")
    assert headline.text_content() == (
        f"{len(in_context)} messages in context · {len(out)} left it"
    )
    # The thread marks exactly the messages that left, with a visible label.
    page.wait_for_selector("#messages .msg-left-context")
    assert set(article_ids(page, "#messages article.msg-left-context")) == out
    labelled = page.eval_on_selector_all(
        "#messages article",
        "els => els.filter(e => e.querySelector(':scope > .left-context-label'))"
        ".map(e => [e.id, e.querySelector('.left-context-label').innerText])",
    )
    assert {pk: text for pk, text in labelled} == {pk: LABEL for pk in out}
    first = next(m for m in mirrored if m.content == "first words")
    assert page.is_visible(f"#msg-{first.pk} .left-context-label")
    # Where Letta compacted: its marker, not its JSON.
    marker = page.wait_for_selector(".compaction-marker")
    assert marker.inner_text().startswith("Letta compacted the conversation here")

    # Opened, the panel says what Letta says.
    page.click("#conversation-info > summary")
    assert page.inner_text("#info-letta-id") == conversation.letta_id
    assert page.is_visible("#info-summary")
    assert page.inner_text("#info-in-context").startswith(f"{len(in_context)} messages")
    assert "Letta compacted this conversation once" in page.inner_text("#info-in-context")

    # A new turn: when the reply ends the panel reloads, and the new messages are not marked.
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")
    page.fill("#composer-input", "sixth words")
    page.keyboard.press("Enter")
    page.wait_for_selector(
        '#reply-status[data-busy="false"] .reply-finished', state="attached", timeout=REPLY_MS
    )
    grown = len(in_context) + 2
    page.wait_for_function(
        f"document.getElementById('info-headline')?.textContent.startsWith('{grown} messages')",
        timeout=REPLY_MS,
    )
    assert page.eval_on_selector("#conversation-info", "e => e.open"), "it stays open"
    newest = page.eval_on_selector_all(
        "#messages article[id^='msg-']", "els => els.slice(-2).map(e => e.className)"
    )
    assert all("msg-left-context" not in classes for classes in newest)
    assert set(article_ids(page, "#messages article.msg-left-context")) == out
    assert page.errors == []
    letta_gateway.delete_conversation(conversation_id=conversation.letta_id)


def test_when_letta_cannot_tell_the_panel_says_so_and_the_thread_reads_as_usual(
    page, live_server_url, alice, letta_gateway, letta_agent
):
    # A conversation Letta does not know (deleted there behind lettachat's back, say).
    conversation = Conversation.objects.create(
        letta_id=f"conv-{uuid.uuid4()}", agent=letta_agent, owner=alice, summary="Kept here"
    )
    Message.objects.create(
        conversation=conversation,
        letta_id="message-gone",
        message_type="user",
        content="still readable",
        created_at=timezone.now(),
    )
    page.goto(f"{live_server_url}{conversation.get_absolute_url()}")
    page.wait_for_function(
        "document.getElementById('info-headline')?.textContent === 'unavailable'"
    )
    page.click("#conversation-info > summary")
    assert page.inner_text("#info-error").startswith(
        "Letta could not say more about this conversation:"
    )
    assert page.is_visible("text=still readable")
    assert page.query_selector_all(".msg-left-context") == [], "nothing marked on a guess"
    assert page.is_visible("#composer-input")
    assert page.errors == []
