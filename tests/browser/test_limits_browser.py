"""Limits as a person meets them in the page: a message too large to send is said so at once."""

from __future__ import annotations

import pytest

from conversations.models import Conversation, Message
from tests.live import LiveServer, server_env

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "a-long-test-password"


@pytest.fixture
def small_frames_server(transactional_db, letta_url, letta_api_key, tmp_path):
    env = server_env(
        tmp_path,
        LETTA_BASE_URL=letta_url,
        LETTA_API_KEY=letta_api_key,
        LETTACHAT_MAX_FRAME_BYTES="4096",
        LETTACHAT_MAX_MESSAGE_CHARS="100000",
    )
    server = LiveServer(env, tmp_path / "daphne.log")
    server.start()
    yield server
    server.stop()


def test_a_message_too_large_to_send_is_refused_in_the_page_and_stays_in_the_box(
    browser, small_frames_server, make_user, letta_agent
):
    url = small_frames_server.url
    alice = make_user("alice", PASSWORD)
    conversation = Conversation.objects.create(
        letta_id="conv-large-frame-test", agent=letta_agent, owner=alice
    )
    context = browser.new_context()
    page = context.new_page()
    sent: list[str] = []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(payload)))
    page.goto(f"{url}/login/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/a/*/")
    page.goto(f"{url}/c/{conversation.letta_id}/")
    page.wait_for_function(
        "() => document.querySelector('.thread-inner').dataset.connection === 'open'"
    )

    text = "é" * 2500  # 2,500 characters, 5,000 bytes
    page.fill("#composer-input", text)
    page.keyboard.press("Enter")

    error = page.wait_for_selector("#composer-error:not(:empty)")
    assert error.inner_text() == (
        "That message is too large to send (5 KB; the limit is 4 KB). Please shorten it."
    )
    assert page.input_value("#composer-input") == text
    assert page.locator(".thread-inner").get_attribute("data-connection") == "open"
    assert not any(text[:100] in frame for frame in sent), "it never went out"
    assert not Message.objects.exists()
    context.close()
