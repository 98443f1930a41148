"""Tool approvals in headless Chromium, against the real Letta server: the request shows in the
thread (tool, escaped arguments), after a reload and in a second tab; Approve in one tab and
both see it answered and the reply go on; Deny with a reason shows the reason."""

from __future__ import annotations

import pytest

from conversations import services
from conversations.models import Agent
from tests.integration.test_approvals_letta import (  # noqa: F401  (a fixture)
    ASK,
    TOOL,
    approval_agent_info,
)

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"
REPLY_MS = 60_000
CARD = ".approval"
PENDING = ".approval.approval-pending"


@pytest.fixture
def approval_agent(db, approval_agent_info):  # noqa: F811
    return Agent.objects.create(
        letta_id=approval_agent_info.letta_id,
        name=approval_agent_info.name,
        model=approval_agent_info.model,
        visible_to_users=True,
        sharing="shared",
    )


@pytest.fixture
def thread(page, live_server_url, make_user, letta_gateway, approval_agent):
    """Alice, logged in, on a new conversation of her own with the approval agent."""
    alice = make_user("alice", PASSWORD)
    conversation = services.conversation_create(
        gateway=letta_gateway, user=alice, agent=approval_agent
    )
    page.goto(f"{live_server_url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/a/{approval_agent.letta_id}/")
    open_thread(page, f"{live_server_url}{conversation.get_absolute_url()}")
    return conversation


def open_thread(page, url: str) -> None:
    page.goto(url)
    page.wait_for_function(  # a function, not an expression: the CSP forbids eval
        "() => document.querySelector('.thread-inner').dataset.connection === 'open'"
    )


def ask(page) -> None:
    page.fill("#composer-input", ASK)
    page.keyboard.press("Enter")
    page.wait_for_selector(PENDING, timeout=REPLY_MS)


def test_the_request_shows_everywhere_and_approving_continues_the_reply(
    page, thread, live_server_url
):
    ask(page)
    card = page.inner_text(PENDING)
    assert TOOL in card
    assert '"query": "<b>tea</b> & biscuits"' in card  # the arguments, as text
    assert page.query_selector(f"{PENDING} b") is None  # never as markup
    assert page.is_visible(f"{PENDING} button.approve") and page.is_visible(
        f"{PENDING} button.deny"
    )

    # After a reload, and in a second tab: the same request, still waiting.
    page.reload()
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")
    assert TOOL in page.inner_text(PENDING)
    other = page.context.new_page()
    other_errors: list[str] = []
    other.on("pageerror", lambda exc: other_errors.append(str(exc)))
    open_thread(other, f"{live_server_url}{thread.get_absolute_url()}")
    assert other.is_visible(f"{PENDING} button.approve")

    # A message meanwhile is refused with the reason, and stays in the box.
    page.fill("#composer-input", "are you there?")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "document.getElementById('composer-error').textContent.includes('approve or deny it')"
    )
    assert page.input_value("#composer-input") == "are you there?"

    # Approved in the second tab: both tabs see it answered, and the reply goes on.
    other.click(f"{PENDING} button.approve")
    for tab in (page, other):
        tab.wait_for_function(
            "tool => [...document.querySelectorAll('.msg-assistant')].some("
            "m => m.textContent.includes('Tool ' + tool + ' returned'))",
            arg=TOOL,
            timeout=REPLY_MS,
        )
        assert tab.query_selector(PENDING) is None
        assert "Approved" in tab.inner_text(CARD)
        assert tab.query_selector(f"{CARD} button") is None
    assert page.errors == [] and other_errors == []


def test_a_denial_with_a_reason_shows_the_reason_and_the_reply(page, thread):
    ask(page)
    page.fill(f"{PENDING} input[name=reason]", "Not <today>, please")
    page.click(f"{PENDING} button.deny")
    page.wait_for_function(
        "tool => [...document.querySelectorAll('.msg-assistant')].some("
        "m => m.textContent.includes('Tool ' + tool + ' returned'))",
        arg=TOOL,
        timeout=REPLY_MS,
    )
    assert "Denied: Not <today>, please" in page.inner_text(CARD)
    page.reload()
    page.wait_for_selector(CARD)
    assert "Denied: Not <today>, please" in page.inner_text(CARD)
    assert page.errors == []
