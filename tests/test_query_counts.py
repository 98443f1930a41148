"""The database work of a page does not grow with history: the conversation page, older pages,
the agent page and sidebar pages issue as many queries for a long history as for a short one.

``bench/long_history.py`` measures the time of these pages with 10,000 messages and 5,000
conversations; this holds the property that keeps them fast, at a size a unit test can afford.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations.models import Agent, Conversation, Message

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HTMX = {"HX-Request": "true"}
# The short history fits in one page of each list; the long one's last pages are partly filled, so
# a query per message or per conversation shows as a different count.
SMALL = {"messages": 60, "conversations": 30}
LARGE = {"messages": 1_530, "conversations": 610}


@dataclass
class History:
    """One person's history on an agent: a thread of ``messages`` among ``conversations``."""

    client: Client
    agent: Agent
    thread: Conversation
    message_pks: list[int]


def make_history(make_user, agent: Agent, *, name: str, messages: int, conversations: int):
    user = make_user(name)
    Conversation.objects.bulk_create(
        Conversation(
            letta_id=f"conv-{name}-{i}",
            agent=agent,
            owner=user,
            summary=f"Thread {i}",
            last_message_at=T0 + timedelta(minutes=i),
        )
        for i in range(conversations - 1)
    )
    thread = Conversation.objects.create(
        letta_id=f"conv-{name}-long",
        agent=agent,
        owner=user,
        summary="The long one",
        last_message_at=T0 + timedelta(days=30),
    )
    kinds = [Message.Type.USER, Message.Type.ASSISTANT, Message.Type.REASONING,
             Message.Type.ASSISTANT, Message.Type.TOOL_CALL, Message.Type.TOOL_RETURN]  # fmt: skip
    created = Message.objects.bulk_create(
        Message(
            conversation=thread,
            letta_id=f"message-{name}-{i}",
            message_type=kinds[i % len(kinds)],
            content=f"Message {i} with **markdown** and `code`",
            name="archival_search" if kinds[i % len(kinds)] == Message.Type.TOOL_CALL else "",
            created_at=T0 + timedelta(seconds=i),
        )
        for i in range(messages)
    )
    client = Client()
    client.force_login(user)
    return History(client, agent, thread, [m.pk for m in created])


@pytest.fixture
def small(make_user, agent, fake_gateway) -> History:
    return make_history(make_user, agent, name="small", **SMALL)


@pytest.fixture
def large(make_user, agent, fake_gateway) -> History:
    return make_history(make_user, agent, name="large", **LARGE)


def queries_of(history: History, url: str, **headers: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        response = history.client.get(url, headers=headers)
    assert response.status_code == 200, (url, response.status_code)
    return [q["sql"] for q in captured.captured_queries]


def assert_same_number(reference: list[str], other: list[str]) -> None:
    assert len(reference) == len(other), (
        f"{len(reference)} queries for the first page, {len(other)} for the second; its "
        "queries:\n" + "\n".join(other)
    )


def conversation_url(history: History) -> str:
    return reverse("conversation_detail", args=[history.thread.letta_id])


def older_url(history: History, before_index: int) -> str:
    url = reverse("message_list_older", args=[history.thread.letta_id])
    return f"{url}?before={history.message_pks[before_index]}"


def sidebar_cursors(history: History) -> list[str]:
    """Every sidebar page's cursor, walked from the agent page as the browser would."""
    pattern = re.compile(r'id="sidebar-more"[^>]*hx-get="[^"]*\?cursor=([^&"]+)', re.S)
    html = history.client.get(reverse("agent_detail", args=[history.agent.letta_id])).content
    cursors = []
    page_url = reverse("conversation_list_page", args=[history.agent.letta_id])
    while found := pattern.search(html.decode()):
        cursors.append(found.group(1))
        html = history.client.get(f"{page_url}?cursor={found.group(1)}").content
    return cursors


def test_the_conversation_page_issues_the_same_queries_for_1530_messages_as_for_60(small, large):
    assert_same_number(
        queries_of(small, conversation_url(small)), queries_of(large, conversation_url(large))
    )


def test_switching_to_a_conversation_issues_the_same_queries_whatever_its_length(small, large):
    assert_same_number(
        queries_of(small, conversation_url(small), **HTMX),
        queries_of(large, conversation_url(large), **HTMX),
    )


def test_an_older_page_issues_the_same_queries_at_any_depth(large):
    n = len(large.message_pks)
    just_before_the_first_page = queries_of(large, older_url(large, n - 100))
    assert_same_number(just_before_the_first_page, queries_of(large, older_url(large, n // 2)))
    # The last page back holds the thread's first 30 messages.
    assert_same_number(just_before_the_first_page, queries_of(large, older_url(large, 30)))


def test_the_agent_page_issues_the_same_queries_for_610_conversations_as_for_30(small, large):
    def url(history: History) -> str:
        return reverse("agent_detail", args=[history.agent.letta_id])

    assert_same_number(queries_of(small, url(small)), queries_of(large, url(large)))


def test_every_sidebar_page_issues_the_same_queries(large):
    cursors = sidebar_cursors(large)
    assert len(cursors) == 12  # 610 conversations, 50 a page: the last page holds 10
    page_url = reverse("conversation_list_page", args=[large.agent.letta_id])
    second_page = queries_of(large, f"{page_url}?cursor={cursors[0]}")
    for cursor in cursors[1:]:
        assert_same_number(second_page, queries_of(large, f"{page_url}?cursor={cursor}"))


@pytest.mark.django_db
def test_a_send_reads_and_writes_in_seven_statements_and_one_transaction(make_conversation, user):
    """The otid checks are one query, and so are the read-only and approval checks (see
    conversations/services.message_send): a send is on the path of every reply's first token."""
    from conversations import services

    conversation = make_conversation(user)
    with CaptureQueriesContext(connection) as queries:
        services.message_send(conversation=conversation, text="hello", otid=str(uuid.uuid4()))
    statements = _writes_in_one_transaction(queries)
    assert len(statements) <= 7, "\n".join(statements)


def _writes_in_one_transaction(queries: CaptureQueriesContext) -> list[str]:
    """The statements captured (savepoints aside), once every write is shown to be inside the
    one atomic block (in a test, a savepoint): one commit, one wait for the disk."""
    sql = [q["sql"] for q in queries.captured_queries]
    opened = [i for i, q in enumerate(sql) if q.startswith("SAVEPOINT")]
    released = [i for i, q in enumerate(sql) if q.startswith("RELEASE SAVEPOINT")]
    assert len(opened) == len(released) == 1, "\n".join(sql)
    writes = [i for i, q in enumerate(sql) if q.startswith(("INSERT", "UPDATE"))]
    assert writes and all(opened[0] < i < released[0] for i in writes), "\n".join(sql)
    return [q for q in sql if "SAVEPOINT" not in q]


def test_a_streamed_message_is_stored_in_four_statements_and_one_transaction(
    make_conversation, user
):
    """Every message of every reply is stored this way: no locking read, no savepoint of its own
    (update_or_create took both, before its insert)."""
    from conversations import services
    from conversations.models import Run

    conversation = make_conversation(user)
    run = Run.objects.create(conversation=conversation)
    with CaptureQueriesContext(connection) as queries:
        message = services.message_record(
            conversation=conversation, letta_id="message-1", message_type="assistant",
            content="Hello.", run=run, seq_id=7,
        )  # fmt: skip
    statements = _writes_in_one_transaction(queries)
    assert len(statements) == 4, "\n".join(statements)
    assert (message.content, message.letta_id, message.conversation_id) == (
        "Hello.", "message-1", conversation.pk,
    )  # fmt: skip
    run.refresh_from_db()
    conversation.refresh_from_db()
    assert run.last_seq_id == 7
    assert conversation.last_message_at == message.created_at


def test_a_message_stored_twice_is_one_message_with_the_last_words(make_conversation, user):
    from conversations import services

    conversation = make_conversation(user)
    record = dict(conversation=conversation, letta_id="message-1", message_type="assistant")
    first = services.message_record(**record, content="Hel")
    second = services.message_record(**record, content="Hello.", error="Stopped.")
    assert second.pk == first.pk
    assert second.created_at == first.created_at  # it keeps its place in the thread
    stored = Message.objects.get(conversation=conversation)
    assert (stored.content, stored.error) == ("Hello.", "Stopped.")


def test_a_message_stored_meanwhile_by_another_relay_is_updated_not_doubled(
    make_conversation, user, monkeypatch
):
    """Two relays of one run (a takeover) may store the same message at once: the second one's
    insert meets the first one's row (the real unique constraint), and updates it instead."""
    from django.db.models import QuerySet

    from conversations import services

    conversation = make_conversation(user)
    record = dict(conversation=conversation, letta_id="message-1", message_type="assistant")
    first = services.message_record(**record, content="Hel")
    update = QuerySet.update
    misses = iter([0])  # the other relay's row is not there yet when this one looks: once

    def update_racing(self, **kwargs):
        done = update(self, **kwargs)
        return next(misses, done) if self.model is Message else done

    monkeypatch.setattr(QuerySet, "update", update_racing)
    second = services.message_record(**record, content="Hello.")
    assert second.pk == first.pk
    assert Message.objects.get(conversation=conversation).content == "Hello."


def test_reconciling_a_turn_reads_the_mirror_once_whatever_its_length(make_conversation, user):
    """After every reply, Letta's copy of the turn is matched against the mirror: one read for
    all its messages, the person's message confirmed by its otid, in one transaction."""
    from conversations.models import Run
    from conversations.relay.loop import _reconcile_with
    from letta_gateway import MessageInfo

    conversation = make_conversation(user)
    run = Run.objects.create(conversation=conversation)
    mine = Message.objects.create(
        conversation=conversation, otid="otid-1", message_type="user", content="hi", created_at=T0
    )
    infos = [MessageInfo("message-0", "user", "hi", T0, otid="otid-1", run_id="run-1")]
    for n in range(1, 13):
        kind = "reasoning" if n % 2 else "assistant"
        Message.objects.create(
            conversation=conversation, letta_id=f"message-{n}", message_type=kind,
            content=f"part {n}", created_at=T0,
        )  # fmt: skip
        infos.append(MessageInfo(f"message-{n}", kind, f"part {n}", T0, run_id="run-1"))
    infos.append(MessageInfo("message-13", "assistant", "not streamed", T0, run_id="run-1"))
    with CaptureQueriesContext(connection) as queries:
        added, made = _reconcile_with(conversation, infos, run)
    statements = _writes_in_one_transaction(queries)
    reads = [q for q in statements if q.startswith("SELECT")]
    assert len(reads) == 1, "\n".join(statements)
    assert len(statements) == 3, "\n".join(statements)  # the read, the otid's match, the insert
    assert [m.content for m in added] == ["not streamed"] and made == []
    mine.refresh_from_db()
    assert (mine.letta_id, mine.run_id) == ("message-0", "run-1")
    assert Message.objects.filter(conversation=conversation).count() == 14
