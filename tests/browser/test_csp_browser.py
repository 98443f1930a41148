"""The chat works in Chromium under its Content-Security-Policy, and the policy really bites.

Every ``securitypolicyviolation`` event and every console error is collected from before the first
script of each page runs; a person logs in, starts a conversation through the page, sends a
message over the websocket (connect-src 'self' covers ws: to the same host) and gets the reply
from the real Letta server: not one violation. Then an inline script is injected on purpose, and
the policy stops it (so the listener is known to work).
"""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"

REPORT_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  const report = {directive: e.effectiveDirective, blocked: e.blockedURI, sample: e.sample,
                  source: e.sourceFile, line: e.lineNumber};
  window.__cspViolations.push(report);
  window.__cspReport(report);
});
"""


@pytest.fixture
def watched(page):
    """The page, with every CSP violation and console error of every document it loads."""
    violations: list[dict] = []
    console_errors: list[str] = []
    page.expose_binding("__cspReport", lambda source, report: violations.append(report))
    page.add_init_script(REPORT_VIOLATIONS)

    def on_console(msg) -> None:
        if msg.type != "error":
            return
        # Not about the policy, and known: the admin's pages name no icon, so Chromium asks for
        # /favicon.ico; htmx logs an out-of-band swap with no target when a page's catch-up
        # clears streamed drafts it does not have (fragments.catch_up).
        if msg.location.get("url", "").endswith("/favicon.ico") or msg.text.startswith(
            "htmx:oobErrorNoTarget, #messages .msg-streaming"
        ):
            return
        console_errors.append(f"{msg.text} ({msg.location.get('url')})")

    page.on("console", on_console)
    page.violations = violations
    page.console_errors = console_errors
    return page


def log_in(page, live_server_url, username):
    page.goto(f"{live_server_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_the_chat_works_under_the_policy_with_no_violation(
    watched, live_server_url, make_user, letta_agent
):
    page = watched
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")
    response = page.goto(page.url)
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp

    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")
    page.fill("#composer-input", "hello under a strict policy")
    page.keyboard.press("Enter")
    final = page.wait_for_selector(
        "#messages .msg-assistant:not(.msg-streaming) .msg-body", timeout=30_000
    )
    assert final.inner_text() == "Echo: hello under a strict policy"
    assert page.input_value("#composer-input") == ""

    # Reload: the page from the mirror, its status check, and the socket again.
    with page.expect_response("**/status/letta/"):
        page.reload()
    page.wait_for_selector("#messages .msg-assistant")
    page.wait_for_function("document.querySelector('.thread-inner').dataset.connection === 'open'")

    assert page.violations == []
    assert page.console_errors == []
    assert page.errors == []

    # The control: an inline script put into the page is stopped, and reported.
    ran = page.evaluate(
        """() => {
            const script = document.createElement('script');
            script.textContent = 'window.__inlineRan = true';
            document.body.appendChild(script);
            return window.__inlineRan === true;
        }"""
    )
    assert ran is False
    page.wait_for_function("window.__cspViolations.length > 0")
    reported = page.evaluate("window.__cspViolations")
    assert [(v["directive"], v["blocked"]) for v in reported] == [("script-src-elem", "inline")]


def test_the_admin_works_under_the_policy_with_no_violation(
    watched, live_server_url, make_user, letta_agent
):
    page = watched
    boss = make_user("boss", PASSWORD, is_staff=True, is_superuser=True)
    conversation = Conversation.objects.create(
        letta_id="conv-admin", agent=letta_agent, owner=boss, summary="A thread"
    )
    Message.objects.create(
        conversation=conversation,
        message_type="assistant",
        content="**hello** with `code`",
        created_at="2026-01-01T00:00:00Z",
    )
    log_in(page, live_server_url, "boss")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")
    for path in [
        "/admin/",
        "/admin/conversations/conversation/",
        f"/admin/conversations/conversation/{conversation.pk}/change/",  # the transcript
        "/admin/conversations/conversation/?q=hello",
        f"/admin/conversations/conversation/{conversation.pk}/delete/",
        "/admin/conversations/run/",
        "/admin/staff/usagereport/",
        "/admin/staff/auditevent/",
        "/admin/conversations/agent/",
    ]:
        response = page.goto(f"{live_server_url}{path}")
        assert response.status == 200, path
        page.wait_for_load_state("load")
    # The changelist's action checkboxes run admin JavaScript: it works.
    page.goto(f"{live_server_url}/admin/conversations/conversation/")
    page.check("#action-toggle")
    page.wait_for_selector(".action-counter")
    assert "1 of 1 selected" in page.inner_text(".action-counter")
    assert page.violations == []
    assert page.console_errors == []
    assert page.errors == []
