"""Approvals in the staff console: which tools of an agent need approval (applied on Letta), the
pending requests (which conversation, since when), and staff denying one (audited)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from conversations import approvals
from conversations.models import Approval
from conversations.relay import registry
from letta_gateway import AgentInfo, ContentDelta, RunStarted, Stopped, ToolCallRequest
from staff.models import AuditEvent

TOOL = "conversation_search"


@pytest.fixture
def staff(make_user) -> Client:
    boss = make_user("boss", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(boss)
    return client


@pytest.fixture
def letta_agent_known(fake_gateway, agent):
    fake_gateway.agents.append(AgentInfo(agent.letta_id, agent.name, "", "m"))
    return fake_gateway


@pytest.mark.django_db
def test_staff_mark_a_tool_for_approval_and_it_is_applied_on_letta_and_audited(
    staff, letta_agent_known, agent
):
    url = reverse("admin:conversations_agent_change", args=[agent.pk])
    page = staff.get(url).content.decode()
    assert 'name="approval_tools"' in page and f'value="{TOOL}"' in page
    assert "checked" not in page.split('name="approval_tools"')[1].split(">")[0]

    form = {"visible_to_users": "on", "sharing": "shared", "approval_tools": [TOOL]}
    response = staff.post(url, form, follow=True)
    assert "now wait(s) for the person" in response.content.decode()
    assert letta_agent_known.approval_tools[agent.letta_id] == {TOOL}
    page = staff.get(url).content.decode()
    checkbox = page.split(f'value="{TOOL}"')[1].split(">")[0]
    assert "checked" in checkbox  # the page shows what Letta now has
    event = AuditEvent.objects.filter(action="agent.edit", target_id=agent.letta_id).last()
    assert event is not None and event.detail["approval_tools"] == {TOOL: True}

    staff.post(url, {"visible_to_users": "on", "sharing": "shared"}, follow=True)
    assert letta_agent_known.approval_tools[agent.letta_id] == set()


@pytest.mark.django_db
def test_pending_requests_are_listed_with_their_conversation_and_since_when(
    staff, conversation, fake_gateway
):
    approval, _ = approvals.approval_record(
        conversation=conversation,
        letta_id="m-ask",
        tool_calls=[ToolCallRequest("call-1", TOOL, "{}")],
    )
    page = staff.get(
        reverse("admin:conversations_approval_changelist") + "?status__exact=pending"
    ).content.decode()
    assert conversation.letta_id in page and TOOL in page and "alice" in page
    assert "0 min" in page  # waiting for
    assert approval.pending


@pytest.mark.django_db(transaction=True)
async def test_staff_deny_a_pending_request_once_and_it_is_audited(
    staff, conversation, fake_gateway
):
    approval, _ = await database_sync_to_async(approvals.approval_record)(
        conversation=conversation,
        letta_id="m-ask",
        tool_calls=[ToolCallRequest("call-1", TOOL, "{}")],
    )
    fake_gateway.enqueue(
        [RunStarted("run-2", 1), ContentDelta("m-2", "assistant", "OK.", "run-2", 2),
         Stopped("end_turn")]
    )  # fmt: skip
    url = reverse("admin:conversations_approval_changelist")
    data = {"action": "deny_pending", "_selected_action": [approval.pk]}
    response = await database_sync_to_async(staff.post)(url, data, follow=True)
    assert "1 request(s) denied" in response.content.decode()
    await registry.wait_all_done()
    again = await database_sync_to_async(staff.post)(url, data, follow=True)
    assert "0 request(s) denied" in again.content.decode()  # no longer pending: nothing sent

    denied = await database_sync_to_async(Approval.objects.get)(pk=approval.pk)
    assert denied.status == Approval.Status.DENIED and "Denied by staff (boss)" in denied.reason
    [sent] = fake_gateway.approvals_sent
    assert [(a.tool_call_id, a.approve) for a in sent["answers"]] == [("call-1", False)]
    events = await database_sync_to_async(
        lambda: list(AuditEvent.objects.filter(action="approval.deny").values_list(
            "actor_name", "owner_name", "target_id", "detail"
        ))
    )()  # fmt: skip
    assert [(a, o, t, d["outcome"]) for a, o, t, d in events] == [
        ("boss", "alice", conversation.letta_id, "denied")
    ]
