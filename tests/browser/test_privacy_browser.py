"""People are told, in the page, whose memory an agent uses: a shared agent's notice comes before
the first message; a personal agent's page says the copy is the person's own."""

from __future__ import annotations

import uuid

import pytest

from conversations.models import Agent, Conversation
from devtools.local_letta import harness
from letta_gateway.client import LettaGateway
from tests.browser.test_chat_in_browser import PASSWORD, log_in

pytestmark = [pytest.mark.browser, pytest.mark.integration]


def letta_agent_named(letta_url: str, name: str) -> str:
    info = LettaGateway(base_url=letta_url).create_agent(
        name=name,
        model=harness.MODEL_HANDLE,
        description="Privacy test agent.",
        blocks={"human": "Nothing known yet.", "persona": "A test agent."},
    )
    return info.letta_id


def test_a_shared_agent_is_announced_before_the_first_message(
    page, live_server_url, make_user, letta_url, letta_gateway
):
    shared = Agent.objects.create(
        letta_id=letta_agent_named(letta_url, f"team-{uuid.uuid4().hex[:6]}"),
        name="Team desk",
        visible_to_users=True,
        sharing="shared",
    )
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/a/{shared.letta_id}/")

    notice = page.locator("#shared-notice")
    assert notice.is_visible()
    assert "may come up in other people's conversations" in notice.inner_text()

    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    # In the empty thread, above the box, before anything is typed.
    assert page.locator("#thread #shared-notice").is_visible()
    reminder = page.locator("#shared-reminder")
    assert reminder.is_visible() and "Shared agent" in reminder.inner_text()
    memory = page.wait_for_selector("#memory-whose")
    assert "Shared by everyone who talks to Team desk" in memory.inner_text()
    assert page.errors == []


def test_a_personal_agents_page_says_whose_memory_it_is(
    page, live_server_url, make_user, letta_url, letta_gateway
):
    template = Agent.objects.create(
        letta_id=letta_agent_named(letta_url, f"tutor-{uuid.uuid4().hex[:6]}"),
        name="Tutor",
        visible_to_users=True,
        sharing="personal",
    )
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/a/{template.letta_id}/")
    notice = page.locator("#personal-notice")
    assert "Your own Tutor" in notice.inner_text()
    assert "Your copy is made when you start your first conversation" in notice.inner_text()

    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    conversation = Conversation.objects.select_related("agent").get()
    assert conversation.agent.template == template and conversation.agent.owner.username == "alice"
    memory = page.wait_for_selector("#memory-whose")
    assert "Your own Tutor: this memory belongs to your copy" in memory.inner_text()
    assert page.locator("#shared-notice").count() == 0
    assert page.errors == []
