"""Nothing a model or a person writes runs as code: in the page, streamed fragments, the admin.

Hostile text (tags, ``<script>``, event handlers, ``javascript:`` links, markdown tricks) is put
everywhere text can be: stored in the mirror (user and assistant messages, reasoning, tool calls
and returns, errors, a conversation title, an agent's name), and streamed live from the real
Letta server (the scripted model says back what it is told, reasoning and tool calls included).

The browser contexts here **bypass the Content-Security-Policy**, so these tests prove escaping
and sanitising alone keep the payloads inert; the policy is a second wall on top
(``tests/browser/test_csp_browser.py``). Every payload would set ``window.__pwned`` or open a
dialog if it ran: neither may happen, and each payload must be visible as text.
"""

from __future__ import annotations

import json

import pytest

from conversations.models import Agent, Conversation, Message, Run

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"
T0 = "2026-01-01T00:00:{:02d}Z"


def pwn(where: str) -> str:
    return f"<img src=x onerror=\"window.__pwned='{where}'\">"


# Everything inside these must be text or sanitised markup: no handlers, no active elements.
CONTENT = "#messages .msg-body, #messages .activity, #messages .msg-error, #thread-title, #sidebar"
FIND_ACTIVE = """
(selector) => {
  const found = [];
  for (const root of document.querySelectorAll(selector)) {
    for (const el of [root, ...root.querySelectorAll('*')]) {
      const tag = el.tagName.toLowerCase();
      // The admin's own icons and scripts are files of ours; a JSON data block never runs.
      const ours = ['img', 'script'].includes(tag) &&
        (el.getAttribute('src') || '').startsWith('/static/');
      const data = tag === 'script' && el.getAttribute('type') === 'application/json';
      if (['script', 'img', 'svg', 'iframe', 'object', 'embed', 'style', 'math'].includes(tag)
          && !ours && !data) {
        found.push(`<${tag}> in ${root.id || root.className}`);
      }
      for (const attr of el.attributes) {
        const value = attr.value.trim().toLowerCase();
        if (attr.name.startsWith('on') || attr.name === 'style' ||
            value.startsWith('javascript:') || value.startsWith('data:')) {
          found.push(`${attr.name}=${attr.value} on <${tag}>`);
        }
        // htmx acts on hx-*/ws-* attributes: only our own markup may carry them.
        if ((attr.name.startsWith('hx-') || attr.name.startsWith('ws-')) &&
            el.closest('.msg-body, .activity > div, .activity pre, #thread-title')) {
          found.push(`${attr.name} inside text on <${tag}>`);
        }
      }
    }
  }
  return found;
}
"""


@pytest.fixture
def naked(browser, live_server_url):
    """A page in a context that ignores the CSP, with a trap for dialogs."""
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    page.dialogs = []
    page.errors = []

    def on_dialog(dialog):
        page.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    yield page
    context.close()


def log_in(page, live_server_url, username):
    page.goto(f"{live_server_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login/" not in url)


def assert_nothing_ran(page):
    assert page.evaluate("typeof window.__pwned") == "undefined", page.evaluate("window.__pwned")
    assert page.dialogs == []


def open_every_activity(page):
    for summary in page.query_selector_all("#messages details > summary"):
        summary.click()


def test_stored_hostile_text_is_shown_as_text_in_the_page(naked, live_server_url, make_user):
    page = naked
    alice = make_user("alice", PASSWORD)
    agent = Agent.objects.create(
        letta_id="agent-hostile",
        name=f"Helper {pwn('agent-name')}",
        description=f'" onmouseover="window.__pwned=1" {pwn("agent-description")}',
        visible_to_users=True,
        sharing="shared",
    )
    conversation = Conversation.objects.create(
        letta_id="conv-hostile", agent=agent, owner=alice, summary=pwn("title")
    )
    stored = [
        ("user", pwn("user") + "<script>window.__pwned='script'</script>", "", ""),
        ("user", "failed one", "", pwn("user-error")),
        (
            "assistant",
            "**bold** "
            + pwn("assistant")
            + " [click me](javascript:window.__pwned='link')"
            + " <a href=\"javascript:window.__pwned='a'\">a</a>"
            + " ![pic](x\" onerror=\"window.__pwned='md-img')"
            + " <svg onload=\"window.__pwned='svg'\"></svg>"
            + " <details open ontoggle=\"window.__pwned='toggle'\">d</details>"
            + "\n\n[ref][r]\n\n[r]: javascript:window.__pwned='ref'",
            "",
            "",
        ),
        ("reasoning", pwn("reasoning"), "", ""),
        ("tool_call", json.dumps({"query": pwn("tool-args")}), pwn("tool"), ""),
        ("tool_return", "</code></pre>" + pwn("tool-return"), "success", ""),
        ("error", pwn("error-note"), "", ""),
    ]
    for index, (kind, content, name, error) in enumerate(stored):
        Message.objects.create(
            conversation=conversation,
            message_type=kind,
            content=content,
            name=name,
            error=error,
            created_at=T0.format(index),
        )
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/c/conv-hostile/")
    page.wait_for_selector("#messages .msg-error")
    open_every_activity(page)
    page.hover("#messages .markdown")

    # Each payload is there to read, as text.
    text = page.inner_text("body")
    for where in ["user", "user-error", "reasoning", "tool", "tool-return", "error-note", "title"]:
        assert pwn(where) in text, where
    assert pwn("agent-name") in text
    assert "<script>window.__pwned='script'</script>" in text
    # The markdown is rendered, the dangerous parts dropped or shown as text.
    assert page.inner_text("#messages .markdown strong") == "bold"
    hrefs = page.eval_on_selector_all("#messages a", "links => links.map(a => a.href)")
    assert all(h.startswith(("http:", "https:", "mailto:")) for h in hrefs if h), hrefs
    if page.query_selector("#messages .markdown a"):
        page.click("#messages .markdown a >> nth=0")

    assert page.evaluate(FIND_ACTIVE, CONTENT) == []
    assert_nothing_ran(page)
    assert page.errors == []


def test_a_hostile_reply_streamed_from_letta_runs_nothing(
    naked, live_server_url, make_user, letta_agent
):
    page = naked
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")

    # The scripted model thinks, then says it all back, token by token.
    hostile = (
        f"{pwn('streamed')} [[think:{pwn('thought')}]]"
        " [x](javascript:window.__pwned='streamed-link') <script>window.__pwned=1</script>"
    )
    page.fill("#composer-input", hostile)
    page.keyboard.press("Enter")
    final = page.wait_for_selector("#messages .msg-assistant:not(.msg-streaming)", timeout=30_000)
    assert pwn("streamed") in final.inner_text()
    assert "<script>window.__pwned=1</script>" in final.inner_text()
    page.wait_for_selector('#reply-status[data-busy="false"]')
    # The first message titled the thread, live: as text.
    assert pwn("streamed")[:40] in page.inner_text("#thread-title")

    # A tool call with hostile arguments, and its return.
    page.fill(
        "#composer-input",
        "[[tool:conversation_search " + json.dumps({"query": pwn("tool-args")}) + "]]",
    )
    page.keyboard.press("Enter")
    page.wait_for_selector("#messages .msg-tool_return", timeout=30_000)
    page.wait_for_selector('#reply-status[data-busy="false"]', timeout=30_000)
    open_every_activity(page)
    assert pwn("thought") in page.inner_text("#messages .msg-reasoning")
    assert "pwned" in page.inner_text("#messages .msg-tool_call")

    assert page.evaluate(FIND_ACTIVE, CONTENT) == []
    assert_nothing_ran(page)

    # And again after a reload, from the mirror.
    page.reload()
    page.wait_for_selector("#messages .msg-tool_return")
    open_every_activity(page)
    assert page.evaluate(FIND_ACTIVE, CONTENT) == []
    assert_nothing_ran(page)
    assert page.errors == []


def test_the_admin_shows_hostile_text_as_text(naked, live_server_url, make_user):
    page = naked
    boss = make_user("boss", PASSWORD, is_staff=True, is_superuser=True)
    agent = Agent.objects.create(
        letta_id="agent-hostile", name=pwn("admin-agent"), visible_to_users=True, sharing="shared"
    )
    conversation = Conversation.objects.create(
        letta_id="conv-hostile", agent=agent, owner=boss, summary=pwn("admin-title")
    )
    Message.objects.create(
        conversation=conversation,
        message_type="assistant",
        content=pwn("admin-message") + " [x](javascript:window.__pwned='admin-link')",
        name=pwn("admin-name"),
        error=pwn("admin-error"),
        created_at=T0.format(0),
    )
    Run.objects.create(conversation=conversation, status="done", total_tokens=1)
    log_in(page, live_server_url, "boss")
    conversation_page = f"/admin/conversations/conversation/{conversation.pk}"
    for path, expected in [
        ("/admin/conversations/conversation/", "admin-title"),
        ("/admin/conversations/conversation/?q=onerror", "admin-title"),  # by message text
        (f"{conversation_page}/change/", "admin-message"),  # the transcript
        (f"{conversation_page}/change/", "admin-error"),
        (f"{conversation_page}/delete/", "admin-title"),
        ("/admin/staff/auditevent/", "admin-title"),
        ("/admin/conversations/run/", "admin-agent"),
        ("/admin/staff/usagereport/", "admin-agent"),
        ("/admin/conversations/agent/", "admin-agent"),
        (f"/admin/conversations/agent/{agent.pk}/change/", "admin-agent"),
    ]:
        response = page.goto(f"{live_server_url}{path}")
        assert response.status == 200, path
        assert pwn(expected) in page.inner_text("#content"), path
        active = page.evaluate(FIND_ACTIVE, "#content")
        assert active == [], (path, active)
        assert_nothing_ran(page)
    assert page.errors == []
