"""Conversations in the staff console: the list, the transcript in pages (rendered as the chat page
renders it), read-only mirrored data, actions through the page's services (Letta first), and an
audit event for every view, search, change and delete."""

from __future__ import annotations

import io
import json
import re
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations import exports
from conversations.models import Conversation, Message, Run
from letta_gateway import ConversationInfo, LettaUnavailable, MessageInfo
from staff.models import AuditEvent
from staff.selectors import TRANSCRIPT_PAGE_SIZE
from tests.html_safety import assert_inert

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CHANGELIST = "admin:conversations_conversation_changelist"


@pytest.fixture
def boss(make_user):
    return make_user("sam", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(client, boss):
    client.force_login(boss)
    return client


def change_url(conversation, **query):
    url = reverse("admin:conversations_conversation_change", args=[conversation.pk])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def add_messages(conversation, count, *, start=T0, content="message {i}"):
    Message.objects.bulk_create(
        Message(
            conversation=conversation,
            letta_id=f"m-{start.timestamp():.0f}-{i}",
            message_type="user" if i % 2 == 0 else "assistant",
            content=content.format(i=i),
            created_at=start + timedelta(seconds=i),
        )
        for i in range(count)
    )


def events(action):
    return list(AuditEvent.objects.filter(action=action).order_by("id"))


# --- The list -------------------------------------------------------------------------------------


def test_the_list_shows_owner_agent_title_message_count_activity_and_archived(
    staff_client, make_conversation, user
):
    conversation = make_conversation(user, summary="Lisbon plans", last_message_at=T0)
    add_messages(conversation, 3)
    body = staff_client.get(reverse(CHANGELIST)).content.decode()
    row = re.search(r"<tr>.*?Lisbon plans.*?</tr>", body, re.S).group(0)
    assert "alice" in row and "Helper" in row
    assert '<td class="field-message_count">3</td>' in row
    assert "Jan. 1, 2026" in row
    assert "field-archived" in row


def test_filters_by_agent_owner_archived_and_date(
    staff_client, make_conversation, user, other_user, hidden_agent
):
    make_conversation(user, summary="Alice now", last_message_at=datetime.now(UTC))
    make_conversation(other_user, summary="Mallory old", last_message_at=T0, archived=True)
    make_conversation(user, summary="On the other agent", on_agent=hidden_agent)

    def titles(**query):
        body = staff_client.get(reverse(CHANGELIST), query).content.decode()
        return {t for t in ("Alice now", "Mallory old", "On the other agent") if t in body}

    assert titles(owner__id__exact=user.pk) == {"Alice now", "On the other agent"}
    assert titles(agent__id__exact=hidden_agent.pk) == {"On the other agent"}
    assert titles(archived__exact=1) == {"Mallory old"}
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert titles(last_message_at__gte=str(today),
                  last_message_at__lt=str(today + timedelta(days=1))) == {"Alice now"}  # fmt: skip


def test_search_finds_by_title_owner_and_message_text_and_is_recorded(
    staff_client, make_conversation, user, other_user
):
    lisbon = make_conversation(user, summary="Lisbon plans")
    porto = make_conversation(other_user, summary="Untitled")
    add_messages(porto, 2, content="we talked about Porto {i}")
    add_messages(porto, 2, start=T0 + timedelta(days=1), content="Porto again {i}")

    def found(query):
        body = staff_client.get(reverse(CHANGELIST), {"q": query}).content.decode()
        return {c.summary for c in (lisbon, porto) if f"{c.pk}/change/" in body}

    assert found("lisbon") == {"Lisbon plans"}
    assert found("mallory") == {"Untitled"}
    assert found("porto") == {"Untitled"}  # once, though four messages match
    body = staff_client.get(reverse(CHANGELIST), {"q": "porto"}).content.decode()
    assert "1 result" in body
    assert [e.detail["query"] for e in events("conversation.search")] == [
        "lisbon", "mallory", "porto", "porto",
    ]  # fmt: skip
    assert events("conversation.search")[0].actor_name == "sam"


# --- One conversation: the transcript -------------------------------------------------------------


def test_the_transcript_shows_the_thread_in_order_as_the_chat_page_renders_it(
    staff_client, conversation
):
    rows = [
        ("user", "What is <b>Lisbon</b>?", "", ""),
        ("reasoning", "They ask about a city.", "", ""),
        ("tool_call", '{"query": "Lisbon"}', "archival_search", ""),
        ("tool_return", "no results", "error", ""),
        ("assistant", "**Lisbon** is a city.", "", ""),
        ("error", "The reply ended early (max_steps).", "", ""),
        ("user", "Still there?", "", "the agent was busy"),
    ]
    for i, (kind, content, name, error) in enumerate(rows):
        Message.objects.create(
            conversation=conversation, message_type=kind, content=content, name=name, error=error,
            letta_id=f"m-{i}" if kind != "error" else None, run_id="run-1" if 0 < i < 6 else "",
            created_at=T0 + timedelta(seconds=i),
        )  # fmt: skip
    Message.objects.filter(message_type="tool_return").update(
        memory_change={"label": "human", "removed": "", "added": "Likes Lisbon", "size": 12,
                       "limit": 5000}
    )  # fmt: skip
    Run.objects.create(conversation=conversation, letta_run_id="run-1", status="done",
                       prompt_tokens=100, completion_tokens=20, total_tokens=120)  # fmt: skip

    body = staff_client.get(change_url(conversation)).content.decode()
    transcript = body[body.index('class="transcript"') : body.index("</section>")]
    order = [
        "What is &lt;b&gt;Lisbon&lt;/b&gt;?", "They ask about a city.",
        "Tool call: archival_search", "{&quot;query&quot;: &quot;Lisbon&quot;}",
        "Tool error:", "Memory updated", "Likes Lisbon", "<strong>Lisbon</strong> is a city.",
        "The reply ended early (max_steps).", "120 tokens (prompt 100, completion 20)",
        "Not sent: the agent was busy",
    ]  # fmt: skip
    positions = [transcript.index(piece) for piece in order]
    assert positions == sorted(positions)
    assert "7 messages" in transcript
    assert 'name="type" value="retry"' not in transcript  # read-only: no Retry
    assert_inert(transcript)


def test_long_threads_are_paged_and_each_view_is_recorded(staff_client, conversation):
    add_messages(conversation, TRANSCRIPT_PAGE_SIZE * 2 + 5)
    first = staff_client.get(change_url(conversation)).content.decode()
    assert "message 0<" in first and f"message {TRANSCRIPT_PAGE_SIZE - 1}<" in first
    assert f"message {TRANSCRIPT_PAGE_SIZE}<" not in first
    assert "page 1 of 3" in first and 'href="?page=2"' in first
    last = staff_client.get(change_url(conversation, page=3)).content.decode()
    assert f"message {TRANSCRIPT_PAGE_SIZE * 2}<" in last and "page 3 of 3" in last
    assert staff_client.get(change_url(conversation, page="nonsense")).status_code == 200
    views = events("conversation.view")
    assert [(e.target_id, e.owner_name, e.detail["page"]) for e in views] == [
        (conversation.letta_id, "alice", 1),
        (conversation.letta_id, "alice", 3),
        (conversation.letta_id, "alice", 1),
    ]
    assert views[0].ip_address == "127.0.0.1" and views[0].actor_name == "sam"


def transcript_request(client, conversation, page):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(change_url(conversation, page=page))
    assert response.status_code == 200
    return len(queries), len(response.content)


def test_a_10000_message_threads_transcript_page_stays_flat_and_under_200_kb(
    staff_client, make_conversation, user
):
    short = make_conversation(user, summary="short")
    add_messages(short, 150, content="A line of ordinary length for a chat message, number {i}.")
    long = make_conversation(user, summary="long")
    add_messages(long, 10_000, content="A line of ordinary length for a chat message, number {i}.")
    every_seventh = list(long.messages.order_by("pk").values_list("pk", flat=True))[::7]
    Message.objects.filter(pk__in=every_seventh).update(  # longer answers, in markdown
        content="**Markdown** with `code` and a list:\n\n- one\n- two\n\n" + "words " * 120
    )

    transcript_request(staff_client, short, 1)  # warm: the content-type cache, the session
    short_queries, _ = transcript_request(staff_client, short, 2)
    for page in (1, 50, 100):
        queries, size = transcript_request(staff_client, long, page)
        assert queries == short_queries, (page, queries, short_queries)
        assert size < 200_000, (page, size)


def test_only_a_viewer_with_permission_reads_and_nothing_is_recorded_otherwise(
    client, make_user, conversation
):
    clerk = make_user("clerk", is_staff=True)
    client.force_login(clerk)
    assert client.get(change_url(conversation)).status_code == 403
    assert not AuditEvent.objects.exists()
    clerk.user_permissions.add(Permission.objects.get(codename="view_conversation"))
    page = client.get(change_url(conversation))
    assert page.status_code == 200
    assert len(events("conversation.view")) == 1
    assert "Re-sync from Letta" not in page.content.decode()  # viewing only: no actions


# --- Mirrored data is read-only -------------------------------------------------------------------


def test_nothing_of_a_conversation_is_edited_or_added_here(staff_client, conversation):
    page = staff_client.get(change_url(conversation)).content.decode()
    assert 'name="summary"' not in page and 'name="archived"' not in page
    assert 'name="_save"' not in page
    response = staff_client.post(change_url(conversation), {"summary": "x", "archived": "on"})
    assert response.status_code == 403
    conversation.refresh_from_db()
    assert (conversation.summary, conversation.archived) == ("", False)
    add = reverse("admin:conversations_conversation_add")
    assert staff_client.get(add).status_code == 403
    assert not any(re.search(r"admin:conversations_message_", name) for name in _admin_names()), (
        "messages are read in a conversation's transcript, not on pages of their own"
    )


def _admin_names():
    from django.contrib import admin

    return [f"admin:{m._meta.app_label}_{m._meta.model_name}_" for m in admin.site._registry]


# --- Actions: export, re-sync, archive -----------------------------------------------------------


def action(client, name, *conversations, **extra):
    data = {"action": name, "_selected_action": [c.pk for c in conversations], **extra}
    return client.post(reverse(CHANGELIST), data)


def test_export_gives_the_pages_own_markdown_and_json_and_each_is_recorded(
    staff_client, make_conversation, user, other_user
):
    alices = make_conversation(user, summary="Lisbon plans")
    add_messages(alices, 2, content="about Lisbon {i}")
    markdown = action(staff_client, "export_markdown", alices)
    assert markdown["Content-Type"] == "text/markdown; charset=utf-8"
    assert markdown["Content-Disposition"] == (
        f'attachment; filename="{exports.conversation_filename(alices, "md")}"'
    )
    text = markdown.content.decode()
    assert text.startswith("# Lisbon plans") and "about Lisbon 1" in text
    as_json = json.loads(action(staff_client, "export_json", alices).content)
    assert [m["content"] for m in as_json["messages"]] == ["about Lisbon 0", "about Lisbon 1"]
    both = action(staff_client, "export_json", alices, make_conversation(other_user))
    assert both["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(both.content)) as archive:
        assert len(archive.namelist()) == 2
    recorded = [(e.target_id, e.owner_name, e.detail["format"])
                for e in events("conversation.export")]  # fmt: skip
    assert recorded[:2] == [(alices.letta_id, "alice", "md"), (alices.letta_id, "alice", "json")]
    assert len(recorded) == 4 and recorded[3][1] == "mallory"


def test_resync_reads_letta_into_the_mirror_and_is_recorded(staff_client, conversation,
                                                            fake_gateway):  # fmt: skip
    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, conversation.agent.letta_id, "Named in Letta", T0, None
    )
    fake_gateway.stored[conversation.letta_id] = [
        MessageInfo("m-1", "user", "hello", T0),
        MessageInfo("m-2", "assistant", "Echo: hello", T0),
    ]
    response = action(staff_client, "resync_from_letta", conversation,
                      _back_to=conversation.pk)  # fmt: skip
    assert response.status_code == 302
    assert response["Location"] == change_url(conversation)  # back where it was asked
    conversation.refresh_from_db()
    assert conversation.summary == "Named in Letta"
    assert list(conversation.messages.values_list("content", flat=True)) == ["hello", "Echo: hello"]
    (event,) = events("conversation.resync")
    assert event.detail == {"added": 2, "updated": 0, "retitled": True}


def test_a_resync_letta_refuses_changes_nothing_and_says_so(staff_client, conversation,
                                                            fake_gateway):  # fmt: skip
    fake_gateway.unknown.add(conversation.letta_id)
    response = action(staff_client, "resync_from_letta", conversation)
    page = staff_client.get(response["Location"]).content.decode()
    assert "was not re-synced: Letta does not know this item." in page
    assert not events("conversation.resync")


def test_archive_and_unarchive_are_lettachats_own_and_recorded(staff_client, conversation):
    action(staff_client, "archive", conversation)
    conversation.refresh_from_db()
    assert conversation.archived
    action(staff_client, "unarchive", conversation)
    conversation.refresh_from_db()
    assert not conversation.archived
    assert [e.action for e in AuditEvent.objects.order_by("id")] == [
        "conversation.archive", "conversation.unarchive",
    ]  # fmt: skip


# --- Delete: Letta first, then here, after a confirmation that says so --------------------------


def test_delete_asks_first_saying_letta_goes_first(staff_client, conversation, fake_gateway):
    url = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
    page = staff_client.get(url).content.decode()
    assert "in Letta first" in page and "then here" in page and "cannot be undone" in page
    assert fake_gateway.deleted == [] and Conversation.objects.filter(pk=conversation.pk).exists()
    response = staff_client.post(url, {"post": "yes"})
    assert response.status_code == 302 and response["Location"] == reverse(CHANGELIST)
    assert fake_gateway.deleted == [conversation.letta_id]
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    (event,) = events("conversation.delete")
    assert (event.target_id, event.owner_name, event.detail["title"]) == (
        conversation.letta_id, "alice", "New conversation",
    )  # fmt: skip


def test_a_delete_letta_refuses_keeps_the_conversation_here(staff_client, conversation,
                                                            fake_gateway):  # fmt: skip
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    url = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
    response = staff_client.post(url, {"post": "yes"}, follow=True)
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert "was not deleted (Letta: The Letta server cannot be reached.)" in (
        response.content.decode()
    )
    (event,) = events("conversation.delete")
    assert event.detail["failed"] == "The Letta server cannot be reached."


def test_deleting_several_confirms_then_deletes_each_in_letta(
    staff_client, make_conversation, user, other_user, fake_gateway
):
    chosen = [make_conversation(user), make_conversation(other_user)]
    kept = make_conversation(user)
    confirm = action(staff_client, "delete_in_letta_and_here", *chosen)
    assert confirm.status_code == 200
    assert "This deletes 2 conversations in Letta first" in confirm.content.decode()
    assert Conversation.objects.count() == 3
    assert "delete_selected" not in staff_client.get(reverse(CHANGELIST)).content.decode()
    action(staff_client, "delete_in_letta_and_here", *chosen, post="yes")
    assert sorted(fake_gateway.deleted) == sorted(c.letta_id for c in chosen)
    assert list(Conversation.objects.all()) == [kept]
    assert len(events("conversation.delete")) == 2


def test_staff_without_delete_permission_cannot_delete(client, make_user, conversation):
    clerk = make_user("clerk", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(
        codename__in=["view_conversation", "change_conversation"]))  # fmt: skip
    client.force_login(clerk)
    url = reverse("admin:conversations_conversation_delete", args=[conversation.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert not events("conversation.delete")
