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
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= 7, "\n".join(statements)
    # Every write inside the one atomic block (here a savepoint): one commit, one wait for disk.
    sql = [q["sql"] for q in queries.captured_queries]
    opened = next(i for i, q in enumerate(sql) if q.startswith("SAVEPOINT"))
    released = next(i for i, q in enumerate(sql) if q.startswith("RELEASE SAVEPOINT"))
    writes = [i for i, q in enumerate(sql) if q.startswith(("INSERT", "UPDATE"))]
    assert writes and all(opened < i < released for i in writes), "\n".join(sql)
