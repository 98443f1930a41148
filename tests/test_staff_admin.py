"""The rest of the staff console: runs (read-only), and the notice on every page that staff may
read conversations. (Agents: tests/test_staff_agents.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from conversations.models import Run

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def staff_client(client, make_user):
    client.force_login(make_user("sam", is_staff=True, is_superuser=True))
    return client


# --- Runs ----------------------------------------------------------------------------------------


def test_runs_show_status_timing_stop_reason_and_tokens_and_nothing_is_edited(
    staff_client, conversation
):
    run = Run.objects.create(
        conversation=conversation, letta_run_id="run-42", status="done", stop_reason="max_steps",
        prompt_tokens=100, completion_tokens=20, total_tokens=120,
    )  # fmt: skip
    Run.objects.filter(pk=run.pk).update(created_at=T0, finished_at=T0 + timedelta(seconds=3.5))
    body = staff_client.get(reverse("admin:conversations_run_changelist")).content.decode()
    for shown in ("run-42", conversation.letta_id, "alice", "Helper", "Done", "3.5 s",
                  "max_steps", "100", "20", "120"):  # fmt: skip
        assert shown in body, shown
    change = reverse("admin:conversations_run_change", args=[run.pk])
    assert 'name="status"' not in staff_client.get(change).content.decode()
    assert staff_client.post(change, {"status": "failed"}).status_code == 403
    run.refresh_from_db()
    assert run.status == "done"


# --- The notice ----------------------------------------------------------------------------------


def test_every_page_says_staff_may_read_conversations(client, user, agent, settings):
    client.force_login(user)
    page = client.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    assert "The staff of this service can read conversations" in page
    settings.LETTACHAT_STAFF_NOTICE = "Support staff may read <your> chats."
    page = client.get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    footer = '<footer class="site-footer" id="staff-notice">'
    assert f"{footer}Support staff may read &lt;your&gt; chats." in page
    settings.LETTACHAT_STAFF_NOTICE = ""
    assert 'id="staff-notice"' not in client.get(reverse("login")).content.decode()
