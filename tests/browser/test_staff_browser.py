"""The staff console in Chromium against the real Letta server: a conversation re-synced from
Letta and read as a transcript in pages, then deleted after the confirmation, in Letta first;
each step in the audit log."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from conversations.models import Conversation, Message
from letta_gateway import LettaNotFound
from staff.models import AuditEvent
from tests.integration.test_threads_letta import say

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def log_in_to_the_admin(page, live_server_url):
    page.goto(f"{live_server_url}/admin/login/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"{live_server_url}/admin/")


def test_staff_resync_read_and_delete_a_conversation_in_letta_first(
    page, live_server_url, make_user, user, letta_agent, letta_gateway
):
    make_user("boss", PASSWORD, is_staff=True, is_superuser=True)
    letta_id = letta_gateway.create_conversation(agent_id=letta_agent.letta_id).letta_id
    with ThreadPoolExecutor(1) as thread:  # out of sync Playwright's event loop
        thread.submit(say, letta_gateway, letta_id, "tell staff about Lisbon").result()
    conversation = Conversation.objects.create(letta_id=letta_id, agent=letta_agent, owner=user)
    Message.objects.bulk_create(  # older history of its own, to page through
        Message(conversation=conversation, message_type="user", content=f"old message {i}",
                created_at=T0 + timedelta(seconds=i))
        for i in range(120)
    )  # fmt: skip
    log_in_to_the_admin(page, live_server_url)

    page.goto(f"{live_server_url}/admin/conversations/conversation/{conversation.pk}/change/")
    assert "page 1 of 2" in page.inner_text(".transcript-meta")
    assert page.locator(".transcript .msg").first.inner_text() == "old message 0"
    page.click("text=Re-sync from Letta")  # Letta's messages come into the mirror
    page.wait_for_selector("text=re-synced from Letta")
    page.click(".transcript-pages a[rel=next]")
    page.wait_for_url("**?page=2")
    transcript = page.inner_text(".transcript")
    assert "tell staff about Lisbon" in transcript
    assert "Echo: tell staff about Lisbon" in transcript

    page.click("text=Delete in Letta, then here…")
    assert "in Letta first" in page.inner_text(".staff-warning")
    page.click("input[value='Yes, delete in Letta and here']")
    page.wait_for_selector("text=1 conversation(s) deleted in Letta and here.")
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    with pytest.raises(LettaNotFound):
        letta_gateway.retrieve_conversation(conversation_id=letta_id)

    page.goto(f"{live_server_url}/admin/staff/auditevent/?q={letta_id}")
    listed = page.inner_text("#result_list")
    for action in ("Viewed a conversation", "Re-synced a conversation from Letta",
                   "Deleted a conversation"):  # fmt: skip
        assert action in listed
    actions = list(AuditEvent.objects.filter(target_id=letta_id).values_list("action", flat=True))
    assert sorted(set(actions)) == ["conversation.delete", "conversation.resync",
                                    "conversation.view"]  # fmt: skip
    assert page.errors == []
