"""What a person does in the page, in headless Chromium, against the real Letta server."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Message

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"

RECORD_PARTIALS = """
() => {
  window.__partials = [];
  new MutationObserver(() => {
    const draft = document.querySelector(
      '#messages .msg-assistant.msg-streaming .msg-body');
    if (draft) window.__partials.push(draft.textContent);
  }).observe(document.getElementById('messages'),
             {childList: true, subtree: true, characterData: true});
}
"""


def log_in(page, live_server_url, username):
    page.goto(f"{live_server_url}/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")


def test_a_person_chats_and_sees_the_reply_stream_in(page, live_server_url, make_user, letta_agent):
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")

    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    conversation = Conversation.objects.get()
    assert page.url.endswith(f"/c/{conversation.letta_id}/")
    page.wait_for_selector(f'#conv-{conversation.letta_id} a[aria-current="page"]')
    page.wait_for_function(
        "() => document.querySelector('.thread-inner').dataset.connection === 'open'"
    )

    page.evaluate(RECORD_PARTIALS)
    # Long enough (50 words, 0.03 s apart) to span several of the batches that Letta's
    # background stream sends about every half second: each batch comes as one piece.
    text = "please count " + " ".join(["one two three four five six seven eight"] * 6)
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")

    # The message shows at once, and the box is emptied.
    page.wait_for_selector(".msg-user >> text=please count one two")
    final = page.wait_for_selector(
        "#messages .msg-assistant:not(.msg-streaming) .msg-body", timeout=30_000
    )
    assert final.inner_text() == f"Echo: {text}"
    assert page.input_value("#composer-input") == ""

    partials = page.evaluate("window.__partials")
    distinct = [p for i, p in enumerate(partials) if p and p not in partials[:i]]
    assert len(distinct) >= 2, f"expected the reply to arrive in pieces, saw {distinct}"
    # Each is the start of the reply (formatted: a paragraph's closing newline aside).
    assert all(f"Echo: {text}".startswith(p.rstrip("\n")) for p in distinct)
    assert distinct[0] != f"Echo: {text}"

    # Reload: the whole exchange is read back from the mirror.
    page.reload()
    page.wait_for_selector("#messages .msg-assistant")
    assert page.locator("#messages .msg-user .msg-body").inner_text() == text
    assert page.locator("#messages .msg-assistant .msg-body").inner_text() == f"Echo: {text}"
    assert list(Message.objects.values_list("message_type", flat=True)) == ["user", "assistant"]
    assert page.errors == []


def test_switching_threads_pushes_the_url_and_back_and_forward_work(
    page, live_server_url, make_user, letta_agent
):
    alice = make_user("alice", PASSWORD)
    first = Conversation.objects.create(
        letta_id="conv-first", agent=letta_agent, owner=alice, summary="First thread"
    )
    second = Conversation.objects.create(
        letta_id="conv-second", agent=letta_agent, owner=alice, summary="Second thread"
    )
    Message.objects.create(
        conversation=first,
        message_type="user",
        content="in the first",
        created_at="2026-01-01T00:00:00Z",
    )
    Message.objects.create(
        conversation=second,
        message_type="user",
        content="in the second",
        created_at="2026-01-01T00:00:00Z",
    )
    log_in(page, live_server_url, "alice")
    page.goto(f"{live_server_url}/c/conv-first/")
    page.wait_for_selector("text=in the first")

    page.evaluate("window.__sameDocument = true")
    page.click("#conv-conv-second a")
    page.wait_for_url("**/c/conv-second/")
    page.wait_for_selector("text=in the second")
    assert page.evaluate("window.__sameDocument") is True, "switched without a reload"

    page.go_back()
    page.wait_for_url("**/c/conv-first/")
    page.wait_for_selector("text=in the first")
    page.go_forward()
    page.wait_for_url("**/c/conv-second/")
    page.wait_for_selector("text=in the second")
    assert page.errors == []


def test_another_persons_conversation_is_not_found(page, live_server_url, make_user, letta_agent):
    owner = make_user("bob", PASSWORD)
    Conversation.objects.create(
        letta_id="conv-bobs", agent=letta_agent, owner=owner, summary="Bob's secret"
    )
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")
    assert "Bob's secret" not in page.content()
    response = page.goto(f"{live_server_url}/c/conv-bobs/")
    assert response.status == 404


def test_a_reload_mid_reply_shows_the_text_so_far_and_goes_on_streaming(
    page, live_server_url, make_user, letta_agent
):
    make_user("alice", PASSWORD)
    log_in(page, live_server_url, "alice")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")
    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    connected = "() => document.querySelector('.thread-inner').dataset.connection === 'open'"
    page.wait_for_function(connected)
    page.fill("#composer-input", "count [[long:120]]")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('#messages .msg-streaming')?.textContent || '')"
        ".split(' ').length > 10"
    )

    page.reload()
    # The text so far is there at once, and the reply goes on from where it was.
    page.wait_for_function(connected)
    page.wait_for_selector("#messages .msg-streaming")
    page.wait_for_selector('#reply-status[data-busy="false"]', timeout=30_000)
    final = page.locator("#messages .msg-assistant .msg-body").inner_text()
    assert len(final.split()) == 120
    assert page.locator("#messages .msg-streaming").count() == 0
    assert page.locator("#messages .msg-assistant").count() == 1, "not shown twice"
    stored = Message.objects.get(message_type="assistant")
    assert " ".join(final.split()) == " ".join(stored.content.split())
    assert page.errors == []


def test_the_app_server_killed_mid_reply_comes_back_and_the_reply_finishes_once(
    page, app_server, make_user, letta_agent
):
    """The process relaying the reply dies (SIGKILL); a new one starts on the same port. The
    page reconnects by itself, the new process takes the run over, and the reply completes."""
    make_user("alice", PASSWORD)
    log_in(page, app_server.url, "alice")
    page.wait_for_url(f"**/a/{letta_agent.letta_id}/")
    page.click("#new-conversation")
    page.wait_for_url("**/c/conv-*/")
    connection = "() => document.querySelector('.thread-inner').dataset.connection"
    page.wait_for_function(f"() => ({connection})() === 'open'")
    page.fill("#composer-input", "count [[long:200]]")
    page.keyboard.press("Enter")
    page.wait_for_function(
        "() => (document.querySelector('#messages .msg-streaming')?.textContent || '')"
        ".split(' ').length > 10"
    )

    app_server.kill()
    page.wait_for_function(f"() => ({connection})() === 'closed'")
    app_server.env["LETTACHAT_RELAY_ANSWER_SECONDS"] = "0.5"
    # A page takes a relay for dead after three missed heartbeats (of this length).
    app_server.env["LETTACHAT_RELAY_HEARTBEAT_SECONDS"] = "0.5"
    app_server.start()

    page.wait_for_function(f"() => ({connection})() === 'open'", timeout=30_000)
    page.wait_for_selector('#reply-status[data-busy="false"]', timeout=60_000)
    stored = Message.objects.get(message_type="assistant")
    assert len(stored.content.split()) == 200
    assert page.locator("#messages .msg-streaming").count() == 0
    assert page.locator("#messages .msg-assistant").count() == 1, "shown once"
    shown = page.locator("#messages .msg-assistant .msg-body").inner_text()
    assert " ".join(shown.split()) == " ".join(stored.content.split())
    assert page.errors == []


def test_two_tabs_on_two_server_processes_both_see_the_reply_live(
    browser, app_server, make_user, letta_agent, letta_gateway, tmp_path
):
    """Production runs several processes: the Redis channel layer carries a reply to every tab."""
    from django.conf import settings

    from conversations import services
    from tests.conftest import require
    from tests.live import LiveServer

    require(bool(settings.REDIS_URL), "REDIS_URL is not set: no cross-process channel layer")
    other_process = LiveServer(dict(app_server.env), tmp_path / "daphne-2.log")
    other_process.start()
    contexts = []
    try:
        alice = make_user("alice", PASSWORD)
        conversation = services.conversation_create(
            gateway=letta_gateway, user=alice, agent=letta_agent
        )
        pages = []
        for server in (app_server, other_process):
            context = browser.new_context()
            contexts.append(context)
            tab = context.new_page()
            log_in(tab, server.url, "alice")
            tab.wait_for_url(f"**/a/{letta_agent.letta_id}/")
            tab.goto(f"{server.url}/c/{conversation.letta_id}/")
            tab.wait_for_function(
                "() => document.querySelector('.thread-inner').dataset.connection === 'open'"
            )
            pages.append(tab)
        sender, watcher = pages
        watcher.evaluate(RECORD_PARTIALS)

        sender.fill("#composer-input", "hello from the first process [[long:40]]")
        sender.keyboard.press("Enter")
        for tab in pages:
            tab.wait_for_selector('#reply-status[data-busy="false"]', timeout=30_000)
            tab.wait_for_selector("#messages .msg-assistant:not(.msg-streaming)")

        stored = Message.objects.get(message_type="assistant").content
        for tab in pages:
            user_text = tab.locator("#messages .msg-user .msg-body").inner_text()
            assert user_text.startswith("hello from")
            reply = tab.locator("#messages .msg-assistant .msg-body").inner_text()
            assert " ".join(reply.split()) == (" ".join(stored.split()))
        partials = watcher.evaluate("window.__partials")
        assert len({p for p in partials if p}) >= 2, "the other process's tab saw it stream"
    finally:
        for context in contexts:
            context.close()
        other_process.stop()
