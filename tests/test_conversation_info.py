"""Conversation info: the thread's panel says what Letta says about the conversation (its summary,
its context window now), lists the shown messages that have left the agent's context, and the
thread marks where Letta compacted the history.

Against the scripted gateway; ``tests/integration/test_conversation_info_letta.py`` checks it
against the real Letta server, ``tests/browser/test_conversation_info_browser.py`` in Chromium.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse
from django.utils import timezone

from conversations import services
from conversations.context import compaction_summary
from conversations.models import Message, Run
from letta_gateway import AgentInfo, ConversationInfo, LettaUnavailable, MessageInfo
from letta_gateway.fake import system_alert
from tests.html_safety import assert_inert
from tests.page_model import Node, parse

pytestmark = pytest.mark.django_db

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=1</script>'
CREATED = datetime(2026, 3, 4, 5, 6, tzinfo=UTC)


@pytest.fixture
def logged_in(client, user):
    client.force_login(user)
    return client


@pytest.fixture
def on_letta(fake_gateway, conversation, agent):
    """Letta knows the conversation (summary "Tea talk") and its agent (a 30,000-token window)."""
    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, agent.letta_id, "Tea talk", CREATED, None
    )
    fake_gateway.agents.append(
        AgentInfo(
            agent.letta_id, agent.name, "", "openai-proxy/lettachat-demo", context_window=30_000
        )
    )
    return fake_gateway


def message(conversation, letta_id: str | None, text: str, kind: str = "user") -> Message:
    return Message.objects.create(
        conversation=conversation,
        letta_id=letta_id,
        message_type=kind,
        content=text,
        created_at=timezone.now(),
    )


def panel(client, conversation) -> tuple[str, Node]:
    response = client.get(reverse("conversation_info", args=[conversation.letta_id]))
    assert response.status_code == 200
    html = response.content.decode()
    root = Node("root", {}, parse(html))
    return html, root


def text_of(root: Node, dom_id: str) -> str:
    found = root.find(dom_id)
    assert found is not None, f"no #{dom_id}"
    return " ".join(found.text().split())


def left_context(root: Node) -> str:
    [body] = [n for n in root.children if isinstance(n, Node) and n.tag == "div"]
    return body.attrs["data-left-context"]


# --- The page ----------------------------------------------------------------------------------


def test_the_page_loads_the_panel_after_itself_and_never_waits_for_letta(
    logged_in, conversation, fake_gateway
):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    assert response.status_code == 200
    html = response.content.decode()
    url = reverse("conversation_info", args=[conversation.letta_id])
    assert (
        f'<details id="conversation-info" class="conversation-info"\n         hx-get="{url}" '
        'hx-trigger="load, conversation-info-refresh" hx-swap="innerHTML">'
    ) in html


# --- What the panel says -----------------------------------------------------------------------


def test_the_panel_says_what_letta_says_about_the_conversation(logged_in, conversation, on_letta):
    first = message(conversation, "message-1", "hello")
    message(conversation, "message-2", "Echo: hello", "assistant")
    on_letta.in_context[conversation.letta_id] = ("message-0", "message-1", "message-2")
    _, root = panel(logged_in, conversation)
    assert text_of(root, "info-letta-id") == conversation.letta_id
    assert text_of(root, "info-agent") == f"Helper {conversation.agent.letta_id}"
    assert text_of(root, "info-created") == "4 Mar 2026, 05:06"
    assert text_of(root, "info-summary") == "Tea talk"
    assert text_of(root, "info-in-context") == "3 messages (the system prompt included)."
    assert text_of(root, "info-headline") == "3 messages in context"
    assert text_of(root, "info-context") == "No finished turn yet."
    assert left_context(root) == ""
    assert first.pk  # nothing marked: every message is in context


def test_the_meter_shows_the_last_finished_turns_context_against_the_window(
    logged_in, conversation, on_letta
):
    Run.objects.create(conversation=conversation, status="done", context_tokens=1200)
    Run.objects.create(conversation=conversation, status="done", context_tokens=2345)
    Run.objects.create(conversation=conversation, status="failed")  # no usage: not a measure
    _, root = panel(logged_in, conversation)
    meter = root.find("info-meter")
    assert meter is not None
    assert (meter.attrs["min"], meter.attrs["max"], meter.attrs["value"]) == ("0", "30000", "2345")
    assert meter.attrs["high"] == "24000"
    assert text_of(root, "info-context") == "2,345 of 30,000 tokens (8%) at the last turn"
    assert text_of(root, "info-headline").endswith("· 8% of the window")


def test_without_a_known_window_the_meter_gives_way_to_the_tokens(
    logged_in, conversation, on_letta, agent
):
    on_letta.agents[:] = [AgentInfo(agent.letta_id, agent.name, "", "m", context_window=None)]
    Run.objects.create(conversation=conversation, status="done", context_tokens=2345)
    _, root = panel(logged_in, conversation)
    assert root.find("info-meter") is None
    assert text_of(root, "info-context") == "2,345 tokens at the last turn"


def test_messages_letta_has_but_the_agent_no_longer_sees_are_listed_for_marking(
    logged_in, conversation, on_letta
):
    gone = message(conversation, "message-1", "hello")
    gone_reply = message(conversation, "message-2", "Echo: hello", "assistant")
    message(conversation, "message-3", "still here")
    message(conversation, None, "never sent")  # not in Letta at all: nothing to say about it
    on_letta.in_context[conversation.letta_id] = ("message-0", "message-9", "message-3")
    _, root = panel(logged_in, conversation)
    assert left_context(root) == f"{gone.pk} {gone_reply.pk}"
    assert text_of(root, "info-headline") == "3 messages in context · 2 left it"
    assert text_of(root, "info-in-context") == (
        "3 messages (the system prompt included); 2 of this thread's messages left the context "
        "window and are marked “not in the agent's context”."
    )


def test_a_message_newer_than_all_the_agent_sees_is_not_marked_it_is_on_its_way(
    logged_in, conversation, on_letta
):
    """While a reply runs, the mirror holds its messages as they stream; Letta stores them when
    the step ends. Until then they are not in context, yet they have not left it."""
    gone = message(conversation, "message-1", "hello")
    message(conversation, "message-2", "Echo: hello", "assistant")
    message(conversation, "message-3", "Echo: streaming still", "assistant")
    on_letta.in_context[conversation.letta_id] = ("message-0", "message-alert", "message-2")
    _, root = panel(logged_in, conversation)
    assert left_context(root) == str(gone.pk)


def test_when_letta_sees_none_of_the_threads_messages_none_is_marked(
    logged_in, conversation, on_letta
):
    message(conversation, "message-1", "hello")
    on_letta.in_context[conversation.letta_id] = ("message-0",)
    _, root = panel(logged_in, conversation)
    assert left_context(root) == ""


def test_after_a_compaction_the_compacted_messages_are_marked_and_the_summary_counted(
    logged_in, conversation, on_letta
):
    """The scripted Letta compacts as the real one does: an alert replaces the older messages in
    the context window; the mirror reads it back like any other message."""
    on_letta.stored[conversation.letta_id] = [
        MessageInfo(f"message-old-{n}", kind, text, CREATED)  # type: ignore[arg-type]
        for n, (kind, text) in enumerate(
            [
                ("user", "one"),
                ("assistant", "Echo: one"),
                ("user", "two"),
                ("assistant", "Echo: two"),
            ]
        )
    ]
    services.message_reconcile(
        conversation=conversation,
        infos=on_letta.list_messages(conversation_id=conversation.letta_id),
    )
    on_letta.compact_conversation(conversation_id=conversation.letta_id, keep=2)
    services.message_reconcile(
        conversation=conversation,
        infos=on_letta.list_messages(conversation_id=conversation.letta_id),
    )
    compacted = conversation.messages.filter(letta_id__in=["message-old-0", "message-old-1"])
    _, root = panel(logged_in, conversation)
    assert left_context(root) == " ".join(str(m.pk) for m in compacted)
    assert "Letta compacted this conversation once" in text_of(root, "info-in-context")


def test_when_letta_cannot_say_the_panel_says_so_and_keeps_what_the_mirror_knows(
    logged_in, conversation, on_letta
):
    message(conversation, "message-1", "hello")
    on_letta.retrieve_error = LettaUnavailable("The Letta server cannot be reached.")
    _, root = panel(logged_in, conversation)
    assert text_of(root, "info-error") == (
        "Letta could not say more about this conversation: The Letta server cannot be reached. "
        "The thread works as usual."
    )
    assert text_of(root, "info-headline") == "unavailable"
    assert text_of(root, "info-letta-id") == conversation.letta_id
    [body] = [n for n in root.children if isinstance(n, Node) and n.tag == "div"]
    assert "data-left-context" not in body.attrs, "nothing is marked on a guess"


def test_what_letta_says_is_shown_as_text(logged_in, conversation, on_letta, agent):
    on_letta.update_conversation(conversation_id=conversation.letta_id, summary=HOSTILE)
    html, root = panel(logged_in, conversation)
    assert_inert(html)
    assert text_of(root, "info-summary") == HOSTILE


# --- Where Letta compacted ---------------------------------------------------------------------


def test_where_letta_compacted_the_thread_shows_a_marker_with_its_summary_not_json(
    logged_in, conversation, fake_gateway
):
    message(conversation, "message-1", "hello")
    alert = message(conversation, "message-5", system_alert("Ada said hello. " + HOSTILE))
    response = logged_in.get(reverse("conversation_detail", args=[conversation.letta_id]))
    html = response.content.decode()
    root = Node("root", {}, parse(html))
    article = root.find(f"msg-{alert.pk}")
    assert article is not None
    shown = " ".join(article.text().split())
    assert shown.startswith("Letta compacted the conversation here")
    assert "Ada said hello. " + HOSTILE in shown
    assert '"type"' not in shown
    assert "<script>window.__pwned" not in html and "&lt;script&gt;window.__pwned" in html


@pytest.mark.parametrize(
    ("content", "summary"),
    [
        (system_alert("Tea was discussed."), "Tea was discussed."),
        ("hello", None),
        ("what is a system_alert?", None),
        ('{"type": "other", "message": "x"}', None),
        ('{"type": "system_alert"', None),
        ('["system_alert"]', None),
    ],
)
def test_only_a_json_system_alert_is_a_compaction_marker(content, summary):
    found = compaction_summary(content)
    if summary is None:
        assert found is None
    else:
        assert found is not None and found.endswith(summary)
