"""A person's message through the websocket to the real Letta server and back, mirrored."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.core.management import call_command

from conversations import services
from conversations.models import Agent, Message
from tests.page_model import streams_a_piece
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def letta_conversation(letta_gateway, letta_agent, user):
    return services.conversation_create(gateway=letta_gateway, user=user, agent=letta_agent)


async def test_a_reply_streams_from_letta_and_the_mirror_matches_letta(
    letta_gateway, letta_conversation, user
):
    communicator, connected, _ = await open_socket(letta_conversation.letta_id, user=user)
    assert connected
    await send_message(communicator, "hello there <b>friend</b>")
    frames = await frames_until_idle(communicator, timeout=30)
    await communicator.disconnect()

    drafts = [i for i, f in enumerate(frames) if 'id="stream-assistant-' in f]
    final = [i for i, f in enumerate(frames) if 'hx-swap-oob="outerHTML:#stream-assistant-' in f]
    assert drafts and final and drafts[0] < final[0], "the reply streams in before it is done"
    assert any("Echo: hello there &lt;b&gt;friend&lt;/b&gt;" in f or "friend" in f for f in frames)

    mirror = await database_sync_to_async(
        lambda: [
            (m.letta_id, m.message_type, m.content)
            for m in Message.objects.filter(conversation=letta_conversation).order_by(
                "created_at", "id"
            )
        ]
    )()
    stored = await letta_gateway.alist_messages(conversation_id=letta_conversation.letta_id)
    assert mirror == [
        (m.letta_id, m.message_type, m.content) for m in stored if m.message_type != "system"
    ]
    assert [kind for _, kind, _ in mirror] == ["user", "assistant"]


async def test_a_long_reply_reaches_the_page_in_pieces_as_letta_sends_them(
    letta_conversation, user
):
    """Letta's background stream sends what it has every half second or so: each batch goes to
    the page as it comes (a batch's pieces in one frame), never the whole reply at the end."""
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, "[[long:60]]")  # 60 words, 0.03 s apart: about 2 s
    frames = await frames_until_idle(communicator, timeout=30)
    await communicator.disconnect()
    pieces = [f for f in frames if 'id="stream-assistant-' in f or streams_a_piece(f)]
    assert len(pieces) >= 2, "the reply arrives in pieces"


def test_sync_agents_pulls_agents_from_letta(letta_gateway, letta_agent_info, db, capsys):
    call_command("sync_agents")
    agent = Agent.objects.get(letta_id=letta_agent_info.letta_id)
    assert agent.name == letta_agent_info.name
    assert agent.visible_to_users is False, "staff decide who sees an agent"
    assert agent.synced_at is not None
    assert letta_agent_info.letta_id in capsys.readouterr().out


def test_bootstrap_makes_a_demo_agent_visible_and_a_first_login(
    letta_gateway, db, settings, tmp_path, capsys
):
    from django.contrib.auth import get_user_model

    from devtools.local_letta import harness

    settings.VAR_DIR = tmp_path
    call_command("bootstrap", "--demo-agent-model", harness.MODEL_HANDLE)
    demo = Agent.objects.get(visible_to_users=True)
    assert demo.name == services.DEMO_AGENT_NAME
    out = capsys.readouterr().out
    password = (tmp_path / "first-login.txt").read_text().split()[1]
    assert f"as admin with password {password}" in out
    assert get_user_model().objects.get(username="admin").check_password(password)

    # Run again: nothing new is made.
    call_command("bootstrap", "--demo-agent-model", harness.MODEL_HANDLE)
    assert Agent.objects.filter(visible_to_users=True).count() == 1
    assert get_user_model().objects.count() == 1


@pytest.mark.parametrize("directive", ["[[fail:500]]", "[[fail_mid]]"])
async def test_a_failing_model_gives_a_clear_error_and_offers_retry(
    letta_gateway, letta_conversation, user, directive
):
    communicator, _, _ = await open_socket(letta_conversation.letta_id, user=user)
    await send_message(communicator, f"tell me {directive}")
    frames = await frames_until_idle(communicator, timeout=30)
    await communicator.disconnect()
    # The message keeps its text and offers Retry, the one route to send it again: the box is
    # left as the person left it.
    assert any('class="secondary retry"' in f for f in frames)
    assert not any(f"tell me {directive}</textarea>" in f for f in frames)
    [user_message] = await database_sync_to_async(
        lambda: list(Message.objects.filter(conversation=letta_conversation, message_type="user"))
    )()
    assert user_message.error
    assert any(f"Not sent: {user_message.error}" in f for f in frames)
