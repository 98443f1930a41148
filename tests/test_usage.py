"""Usage (conversations/usage.py) and its page and CSV in the staff console; the daily quotas that
refuse a send before it reaches Letta."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.urls import reverse
from django.utils import timezone

from conversations import usage
from conversations.models import Agent, Message, Run
from staff.models import AuditEvent
from tests.websocket import open_socket, send_message

pytestmark = pytest.mark.django_db


def run(conversation, *, tokens=(100, 20), days_ago=0, status="done"):
    prompt, completion = tokens
    made = Run.objects.create(
        conversation=conversation, status=status, prompt_tokens=prompt,
        completion_tokens=completion, total_tokens=prompt + completion,
    )  # fmt: skip
    if days_ago:
        Run.objects.filter(pk=made.pk).update(created_at=timezone.now() - timedelta(days=days_ago))
    return made


@pytest.fixture
def history(make_conversation, user, other_user, hidden_agent):
    """Alice: two messages today on Helper, one three days ago on Internal. Mallory: one today,
    its tokens unknown (a run Letta sent no usage for), and one 40 days ago."""
    alices = make_conversation(user)
    run(alices)
    run(alices, tokens=(300, 50))
    run(make_conversation(user, on_agent=hidden_agent), tokens=(10, 5), days_ago=3)
    mallorys = make_conversation(other_user)
    Run.objects.create(conversation=mallorys, status="failed")
    run(mallorys, days_ago=40)


def test_usage_per_person_agent_and_day_from_what_each_run_recorded(history):
    today = timezone.localdate()
    since = today - timedelta(days=29)
    people = usage.usage_by_person(since=since, until=today)
    assert [(r.key, r.messages, r.prompt_tokens, r.completion_tokens, r.total_tokens)
            for r in people] == [("alice", 3, 410, 75, 485), ("mallory", 1, 0, 0, 0)]  # fmt: skip
    agents = usage.usage_by_agent(since=since, until=today)
    assert [(r.key, r.label, r.messages, r.total_tokens) for r in agents] == [
        ("agent-visible", "Helper", 3, 470),
        ("agent-hidden", "Internal", 1, 15),
    ]
    days = usage.usage_by_day(since=since, until=today)
    assert [(r.key, r.messages, r.total_tokens) for r in days] == [
        ((today - timedelta(days=3)).isoformat(), 1, 15),
        (today.isoformat(), 3, 470),
    ]
    assert usage.usage_by_person(since=today - timedelta(days=50), until=today)[1].messages == 2


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("sam", is_staff=True, is_superuser=True))
    return client


def test_the_usage_page_shows_each_table_and_links_its_csv(staff_client, history):
    page = staff_client.get(reverse("admin:staff_usagereport_changelist")).content.decode()
    for title in ("Per person", "Per agent", "Per day"):
        assert f">{title}</h2>" in page
    assert '<td>alice</td><td class="number">3</td>' in page
    assert "<td>Helper</td>" in page
    assert f"{reverse('admin:staff_usagereport_csv')}?by=agent&amp;since=" in page
    assert "Daily quota per person: none" in page
    assert not AuditEvent.objects.exists()  # usage is not a conversation: reading it is not


def read_csv(response):
    return list(csv.reader(io.StringIO(response.content.decode())))


def test_usage_as_csv_holds_the_figures_and_each_download_is_recorded(staff_client, history):
    today = timezone.localdate()
    url = reverse("admin:staff_usagereport_csv")
    people = staff_client.get(url, {"by": "person"})
    assert people["Content-Type"] == "text/csv; charset=utf-8"
    since = today - timedelta(days=29)
    assert people["Content-Disposition"] == (
        f'attachment; filename="lettachat-usage-per-person-{since}-to-{today}.csv"'
    )
    assert read_csv(people) == [
        ["person", "messages", "prompt_tokens", "completion_tokens", "total_tokens"],
        ["alice", "3", "410", "75", "485"],
        ["mallory", "1", "0", "0", "0"],
    ]
    agents = staff_client.get(url, {"by": "agent", "since": str(today), "until": str(today)})
    assert read_csv(agents) == [
        ["agent", "agent_name", "messages", "prompt_tokens", "completion_tokens", "total_tokens"],
        ["agent-visible", "Helper", "3", "400", "70", "470"],
    ]
    days = read_csv(staff_client.get(url, {"by": "day"}))
    assert days[1:] == [[str(today - timedelta(days=3)), "1", "10", "5", "15"],
                        [str(today), "3", "400", "70", "470"]]  # fmt: skip
    recorded = AuditEvent.objects.filter(action="usage.export").order_by("id")
    assert [(e.actor_name, e.detail["by"], e.detail["rows"]) for e in recorded] == [
        ("sam", "person", 2), ("sam", "agent", 1), ("sam", "day", 2),
    ]  # fmt: skip


def test_a_csv_cell_never_runs_as_a_formula(staff_client, conversation):
    Agent.objects.filter(pk=conversation.agent.pk).update(name='=HYPERLINK("http://x")')
    run(conversation)
    rows = read_csv(staff_client.get(reverse("admin:staff_usagereport_csv"), {"by": "agent"}))
    assert rows[1][1] == '\'=HYPERLINK("http://x")'


# --- Quotas --------------------------------------------------------------------------------------


def test_without_a_quota_nothing_is_refused_and_nothing_is_counted(
    user, conversation, django_assert_num_queries
):
    for _ in range(5):
        run(conversation)
    with django_assert_num_queries(0):
        assert usage.quota_refusal(user=user) is None


def test_a_quota_counts_today_only_and_says_why_it_refuses(user, conversation, settings):
    settings.LETTACHAT_QUOTA_MESSAGES_PER_DAY = 2
    run(conversation, days_ago=1)
    run(conversation)
    assert usage.quota_refusal(user=user) is None
    run(conversation)
    assert usage.quota_refusal(user=user) == (
        "You have sent 2 messages today, your daily limit of 2. You can send messages again "
        "tomorrow. Your message is still in the box."
    )
    settings.LETTACHAT_QUOTA_MESSAGES_PER_DAY = 0
    settings.LETTACHAT_QUOTA_TOKENS_PER_DAY = 240
    assert usage.quota_refusal(user=user) == (
        "Your conversations have used 240 tokens today, your daily limit of 240. You can send "
        "messages again tomorrow. Your message is still in the box."
    )


@pytest.mark.django_db(transaction=True)
async def test_a_send_over_quota_is_refused_before_it_reaches_letta(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_QUOTA_TOKENS_PER_DAY = 100
    await database_sync_to_async(run)(conversation, tokens=(90, 10))
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    await send_message(communicator, "one more, please")
    frame = await communicator.receive_from(timeout=10)
    assert 'id="composer-error"' in frame
    assert "your daily limit of 100" in frame
    assert 'id="composer"' not in frame  # the box is not emptied: the text stays
    await communicator.disconnect()
    assert fake_gateway.sent == []
    assert not await database_sync_to_async(
        Message.objects.filter(content="one more, please").exists
    )()
    assert await database_sync_to_async(Run.objects.count)() == 1


@pytest.mark.django_db(transaction=True)
async def test_a_retry_over_quota_is_refused_too(conversation, user, fake_gateway, settings):
    settings.LETTACHAT_QUOTA_MESSAGES_PER_DAY = 1
    failed = await database_sync_to_async(Message.objects.create)(
        conversation=conversation, message_type="user", content="lost", error="Letta was down",
        created_at=timezone.now(),
    )  # fmt: skip
    await database_sync_to_async(run)(conversation)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await communicator.send_json_to({"type": "retry", "message": failed.pk})
    assert "your daily limit of 1" in await communicator.receive_from(timeout=10)
    await communicator.disconnect()
    assert fake_gateway.sent == []
