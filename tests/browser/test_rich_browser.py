"""Rich messages and shared memory in headless Chromium, against the real Letta server: the memory
panel and its live update, the per-turn usage line, the code copy button, a visible tool error,
what screen readers are told, and reduced motion."""

from __future__ import annotations

import json
import re
import uuid

import pytest

from conversations import services
from conversations.models import Agent, Message, Run
from tests.integration.test_memory_letta import ensure_memory_agent, insert

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"
REPLY_MS = 60_000

# Every text #reply-announcer (the live region screen readers hear) is given, in order.
RECORD_ANNOUNCEMENTS = """
() => {
  window.__announced = [];
  const announcer = document.getElementById('reply-announcer');
  new MutationObserver(() => window.__announced.push(announcer.textContent))
    .observe(announcer, {childList: true, subtree: true, characterData: true});
}
"""


@pytest.fixture
def memory_agent(db, letta_url, letta_api_key) -> Agent:
    info = ensure_memory_agent(letta_url, letta_api_key)
    return Agent.objects.create(
        letta_id=info.letta_id,
        name=info.name,
        model=info.model,
        visible_to_users=True,
        sharing="shared",
    )


@pytest.fixture
def thread(page, live_server_url, make_user, letta_gateway, memory_agent):
    """Alice, logged in, on a new conversation of her own with the memory agent."""
    alice = make_user("alice", PASSWORD)
    conversation = services.conversation_create(
        gateway=letta_gateway, user=alice, agent=memory_agent
    )
    page.goto(f"{live_server_url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/a/{memory_agent.letta_id}/")
    page.goto(f"{live_server_url}{conversation.get_absolute_url()}")
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")
    return conversation


def send(page, text: str) -> None:
    # The line a finished reply leaves is dropped first: wait_until_idle waits for this reply's.
    page.evaluate("() => document.querySelectorAll('.reply-finished').forEach(e => e.remove())")
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")


def wait_until_idle(page) -> None:
    """Until the reply to the last ``send`` is over."""
    page.wait_for_selector(
        '#reply-status[data-busy="false"] .reply-finished', state="attached", timeout=REPLY_MS
    )


def test_the_memory_panel_shows_the_blocks_and_follows_a_memory_edit_live(
    page, thread, letta_gateway, memory_agent
):
    human = page.wait_for_selector('#memory-panel .memory-block[data-label="human"]')
    before = next(
        b for b in letta_gateway.list_blocks(agent_id=memory_agent.letta_id) if b.label == "human"
    )
    assert human.query_selector(".memory-value").inner_text() == before.value
    assert human.query_selector(".memory-size").inner_text() == (
        f"{len(before.value)} / {before.limit} characters"
    )
    assert page.query_selector('#memory-panel .memory-block[data-label="persona"]')
    assert "Shared by everyone who talks to" in page.inner_text("#memory-panel")  # a shared agent

    fact = f"Collects teapots, tag {uuid.uuid4().hex[:10]}."
    send(page, f"{insert(fact)} please remember")
    # The panel follows without a reload, and the turn says what changed.
    page.wait_for_function(
        'fact => document.querySelector(\'#memory-panel .memory-block[data-label="human"]'
        " .memory-value').textContent.endsWith(fact)",
        arg=fact,
        timeout=REPLY_MS,
    )
    change = page.wait_for_selector(".msg-tool_return .memory-change")
    assert change.is_visible()
    assert "Memory updated: human" in change.inner_text()
    assert f"+ {fact}" in change.inner_text()
    wait_until_idle(page)

    # A reload shows the same, read from the mirror and from Letta.
    page.reload()
    page.wait_for_selector('#memory-panel .memory-block[data-label="human"]')
    assert page.inner_text(
        '#memory-panel .memory-block[data-label="human"] .memory-value'
    ).endswith(fact)
    assert f"+ {fact}" in page.inner_text(".msg-tool_return .memory-change")
    assert page.errors == []


def test_a_reply_gets_its_usage_line_and_screen_readers_hear_it_start_and_end(page, thread):
    page.evaluate(RECORD_ANNOUNCEMENTS)
    send(page, "count one two three four five six seven eight nine ten")
    line = page.wait_for_selector("#messages .turn-usage", timeout=REPLY_MS)
    wait_until_idle(page)
    run = Run.objects.get(conversation=thread)
    assert line.get_attribute("id") == f"usage-{run.pk}"
    assert line.inner_text() == (
        f"{run.total_tokens} tokens (prompt {run.prompt_tokens}, "
        f"completion {run.completion_tokens}) · context {run.context_tokens}"
    )
    assert re.fullmatch(
        r"\d+ tokens \(prompt \d+, completion \d+\) · context \d+", line.inner_text()
    )
    # Under the reply: the last thing in the thread.
    assert page.evaluate(
        "() => document.querySelector('#messages > :last-child').id"
    ) == line.get_attribute("id")
    # Two announcements: the reply started, the reply ended; none per token.
    assert page.evaluate("window.__announced") == [
        f"{thread.agent.name} is answering…",
        "Reply finished.",
    ]
    page.reload()
    assert page.inner_text(f"#usage-{run.pk}") == line_text(run)
    assert page.errors == []


def line_text(run: Run) -> str:
    run.refresh_from_db()
    return (
        f"{run.total_tokens} tokens (prompt {run.prompt_tokens}, "
        f"completion {run.completion_tokens}) · context {run.context_tokens}"
    )


def test_a_code_block_has_a_copy_button_that_copies_the_code(page, thread, live_server_url):
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server_url)
    send(page, "[[markdown]]")
    button = page.wait_for_selector(
        "#messages .msg-assistant:not(.msg-streaming) .markdown pre .copy-code", timeout=REPLY_MS
    )
    code = page.inner_text("#messages .msg-assistant .markdown pre code")
    assert code.strip()
    assert button.inner_text() == "Copy"
    button.click()
    page.wait_for_function("() => document.querySelector('.copy-code').dataset.state === 'copied'")
    assert button.inner_text() == "Copied"
    assert page.evaluate("() => navigator.clipboard.readText()") == page.evaluate(
        "() => document.querySelector('#messages .markdown pre code').textContent"
    )
    # Rendered with the page too, and only one per block whatever the swaps.
    wait_until_idle(page)
    page.reload()
    page.wait_for_selector("#messages .markdown pre .copy-code")
    assert page.evaluate(
        "() => [...document.querySelectorAll('.markdown pre')]"
        ".every(pre => pre.querySelectorAll('.copy-code').length === 1)"
    )
    assert page.errors == []


def test_a_tool_error_is_visible_while_collapsed(page, thread):
    arguments = {"label": "human", "old_string": f"absent {uuid.uuid4().hex}", "new_string": "x"}
    send(page, "[[tool:memory_replace " + json.dumps(arguments) + "]]")
    summary = page.wait_for_selector(
        "#messages .msg-tool_return .activity-error summary", timeout=REPLY_MS
    )
    wait_until_idle(page)
    details = page.query_selector("#messages .msg-tool_return details")
    assert details.get_attribute("open") is None, "collapsed"
    assert summary.is_visible()
    assert summary.inner_text().startswith("Tool error: No replacement was performed")
    colour = summary.evaluate("el => getComputedStyle(el).color")
    error = page.evaluate(
        "() => getComputedStyle(document.documentElement).getPropertyValue('--error').trim()"
    )
    assert colour == "rgb(180, 35, 24)" and error == "#b42318"
    # The tool call and its return are grouped as the agent's activity.
    assert page.query_selector("#messages .msg-tool_call.msg-activity")
    assert Message.objects.get(conversation=thread, message_type="tool_return").name == "error"
    assert page.errors == []


def test_motion_stops_for_people_who_ask_for_less(page, thread):
    cursor = """() => {
      const article = document.createElement('article');
      article.className = 'msg msg-assistant msg-streaming';
      article.innerHTML = '<div class="msg-body">typing</div>';
      document.getElementById('messages').appendChild(article);
      const name = getComputedStyle(article.firstChild, '::after').animationName;
      article.remove();
      return name;
    }"""
    assert page.evaluate(cursor) == "blink"
    page.emulate_media(reduced_motion="reduce")
    assert page.evaluate(cursor) == "none"
