"""The page when its session ends: it says so, with a link to log in, and sends nothing more."""

from __future__ import annotations

import pytest

from conversations.models import Conversation

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"


def log_in(page, live_server_url, username):
    page.goto(f"{live_server_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_logging_out_in_another_tab_signs_the_open_thread_out(
    page, live_server_url, make_user, letta_agent
):
    alice = make_user("alice", PASSWORD)
    conversation = Conversation.objects.create(
        letta_id="conv-signed-out-test", agent=letta_agent, owner=alice
    )
    log_in(page, live_server_url, "alice")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")
    page.goto(f"{live_server_url}/c/{conversation.letta_id}/")
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")
    page.fill("#composer-input", "a draft I was writing")

    other_tab = page.context.new_page()
    other_tab.goto(f"{live_server_url}/")
    other_tab.click(".topbar-user button")  # Log out
    other_tab.wait_for_url("**/login/")

    notice = page.wait_for_selector("#signed-out", timeout=15_000)
    assert notice.inner_text().startswith("You were signed out.")
    link = page.get_attribute("#signed-out a", "href")
    assert link == f"/login/?next=%2Fc%2F{conversation.letta_id}%2F"
    assert page.locator(".thread-inner").get_attribute("data-connection") == "signed-out"
    # No login form inside the thread; the draft stays, and the box can send no more.
    assert page.locator("#thread input[type=password]").count() == 0
    assert page.input_value("#composer-input") == "a draft I was writing"
    assert page.is_disabled("#composer-input") and page.is_disabled("#send")
    assert page.errors == []

    page.click("#signed-out a")
    page.wait_for_url("**/login/?next=*")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/c/{conversation.letta_id}/")
