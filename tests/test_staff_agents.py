"""The staff console for agents and people: sharing modes and their privacy warnings, memory
blocks staff edit, a person's data exported or erased. Every such read and write is audited."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Agent, Conversation
from letta_gateway import AgentInfo
from staff.models import AuditEvent

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(make_user) -> Client:
    boss = make_user("boss", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(boss)
    return client


@pytest.fixture
def letta_agents(fake_gateway, agent, personal_agent):
    fake_gateway.agents += [
        AgentInfo(agent.letta_id, agent.name, "", "m"),
        AgentInfo(personal_agent.letta_id, personal_agent.name, "", "m"),
    ]
    fake_gateway.set_blocks(agent.letta_id, human="Alice likes tea.", persona="A helper.")
    fake_gateway.set_blocks(personal_agent.letta_id, human="Nothing yet.", policy="Be kind.")
    return fake_gateway


def change_page(client: Client, agent: Agent) -> str:
    response = client.get(reverse("admin:conversations_agent_change", args=[agent.pk]))
    assert response.status_code == 200
    return response.content.decode()


def test_a_shared_agent_visible_to_several_people_shows_what_crosses_between_them(
    staff, letta_agents, agent, user, other_user
):
    page = change_page(staff, agent)
    assert 'id="shared-warning"' in page
    assert "What crosses between people" in page
    assert "<code>conversation_search</code>: finds what anyone said" in page
    assert "Alice likes tea." in page and "A helper." in page


def test_a_shared_agent_seen_by_one_person_only_has_no_warning(staff, letta_agents, agent):
    get_user_model().objects.exclude(username="boss").update(is_active=False)
    assert 'id="shared-warning"' not in change_page(staff, agent)


def test_a_personal_template_says_each_person_gets_a_copy(staff, letta_agents, personal_agent):
    page = change_page(staff, personal_agent)
    assert "each person talks to a copy of their own (0 made so far)" in page
    assert 'name="common_labels"' in page and 'value="policy"' in page


def test_reading_a_persons_copy_is_recorded(staff, letta_agents, personal_agent, user):
    copy = services.agent_copy_ensure(gateway=letta_agents, user=user, template=personal_agent)
    page = change_page(staff, copy)
    assert "alice's own agent" in page
    [event] = AuditEvent.objects.filter(action="memory.view")
    assert (event.actor_name, event.owner_name, event.target_id) == ("boss", "alice", copy.letta_id)


def test_making_a_shared_agent_personal_says_what_happens_to_its_conversations(
    staff, letta_agents, agent, make_conversation, user
):
    make_conversation(user)
    response = staff.post(
        reverse("admin:conversations_agent_change", args=[agent.pk]),
        {"visible_to_users": "on", "sharing": "personal"},
        follow=True,
    )
    text = response.content.decode()
    assert "is now personal" in text
    assert "1 earlier conversation(s) on it stay readable by their owners" in text
    agent.refresh_from_db()
    assert agent.sharing == "personal"
    assert AuditEvent.objects.filter(action="agent.edit", target_id=agent.letta_id).exists()


def test_staff_edit_a_shared_agents_block_and_the_edit_is_audited(staff, letta_agents, agent):
    url = reverse("admin:conversations_agent_block_edit", args=[agent.pk, "human"])
    assert "Alice likes tea." in staff.get(url).content.decode()
    response = staff.post(url, {"value": "", "clear": "Clear this block"})
    assert response.status_code == 302
    [human] = [b for b in letta_agents.list_blocks(agent_id=agent.letta_id) if b.label == "human"]
    assert human.value == ""
    [event] = AuditEvent.objects.filter(action="memory_block.edit")
    assert event.detail == {"label": "human", "before": "Alice likes tea.", "after": ""}


def test_a_block_over_its_limit_is_refused(staff, letta_agents, agent):
    letta_agents.set_blocks(agent.letta_id, human=("short", 10))
    url = reverse("admin:conversations_agent_block_edit", args=[agent.pk, "human"])
    response = staff.post(url, {"value": "x" * 11, "save": "Save"})
    assert response.status_code == 200
    assert "at most 10 characters" in response.content.decode()
    assert not AuditEvent.objects.filter(action="memory_block.edit").exists()


def test_a_persons_own_memory_is_not_edited_from_here(staff, letta_agents, personal_agent, user):
    copy = services.agent_copy_ensure(gateway=letta_agents, user=user, template=personal_agent)
    url = reverse("admin:conversations_agent_block_edit", args=[copy.pk, "human"])
    assert staff.post(url, {"value": "x", "save": "Save"}).status_code == 403


def test_agents_are_neither_added_nor_deleted_here(staff, letta_agents, agent):
    assert staff.get(reverse("admin:conversations_agent_add")).status_code == 403
    assert (
        staff.get(reverse("admin:conversations_agent_delete", args=[agent.pk])).status_code == 403
    )


def test_reapply_action_reports_what_it_did(staff, letta_agents, personal_agent, user):
    services.agent_copy_ensure(gateway=letta_agents, user=user, template=personal_agent)
    response = staff.post(
        reverse("admin:conversations_agent_changelist"),
        {"action": "reapply_template", "_selected_action": [personal_agent.pk]},
        follow=True,
    )
    assert "re-applied to 1 copies; their memory was not touched" in response.content.decode()


def test_staff_export_a_persons_data_and_it_is_audited(
    staff, fake_gateway, make_conversation, user
):
    make_conversation(user, summary="Tea plans")
    response = staff.post(
        reverse("admin:auth_user_changelist"),
        {"action": "export_data", "_selected_action": [user.pk]},
    )
    raw = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(raw)) as archive:
        assert any(n.startswith("conversations/Tea-plans") for n in archive.namelist())
    assert AuditEvent.objects.filter(action="user.export", owner_name="alice").exists()


def test_staff_erase_a_persons_data_after_a_confirmation(
    staff, fake_gateway, make_conversation, user
):
    conversation = make_conversation(user)
    url = reverse("admin:auth_user_changelist")
    asked = staff.post(url, {"action": "erase_data", "_selected_action": [user.pk]})
    assert "Yes, erase their data" in asked.content.decode()
    assert Conversation.objects.filter(pk=conversation.pk).exists()

    done = staff.post(
        url,
        {"action": "erase_data", "_selected_action": [user.pk], "confirmed": "yes"},
        follow=True,
    )
    assert "deleted in Letta and here" in done.content.decode()
    assert not Conversation.objects.filter(pk=conversation.pk).exists()
    assert AuditEvent.objects.filter(action="user.erase", owner_name="alice").exists()
