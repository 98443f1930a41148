"""The gateway against the real Letta server."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest

from letta_gateway import (
    ContentDelta,
    LettaError,
    LettaNotFound,
    LettaUnavailable,
    RunStarted,
    Stopped,
    Usage,
)
from letta_gateway.client import LettaGateway
from tests.conftest import require

pytestmark = pytest.mark.integration


def test_health_reports_the_server_version(letta_gateway):
    assert letta_gateway.health() == "0.16.8"


async def test_a_reply_streams_token_by_token(letta_gateway, letta_agent_info):
    conversation = letta_gateway.create_conversation(agent_id=letta_agent_info.letta_id)
    assert conversation.letta_id.startswith("conv-")
    otid = str(uuid.uuid4())

    events = [
        e
        async for e in letta_gateway.astream_reply(
            conversation_id=conversation.letta_id, text="one two three four", otid=otid
        )
    ]

    assert isinstance(events[0], RunStarted) and events[0].run_id.startswith("run-")
    deltas = [e for e in events if isinstance(e, ContentDelta)]
    assert len(deltas) >= 4, "one event per token"
    assert len({d.message_id for d in deltas}) == 1
    assert "".join(d.text for d in deltas) == "Echo: one two three four"
    assert Stopped("end_turn") in events
    assert any(isinstance(e, Usage) and e.total_tokens for e in events)

    stored = await letta_gateway.alist_messages(conversation_id=conversation.letta_id)
    user, assistant = [m for m in stored if m.message_type != "system"]
    assert (user.message_type, user.content, user.otid) == ("user", "one two three four", otid)
    assert (assistant.letta_id, assistant.content) == (
        deltas[0].message_id,
        "Echo: one two three four",
    )


def test_messages_are_read_with_a_cursor(letta_gateway, letta_agent_info):
    import asyncio

    conversation = letta_gateway.create_conversation(agent_id=letta_agent_info.letta_id)

    async def send(text):
        async for _ in letta_gateway.astream_reply(
            conversation_id=conversation.letta_id, text=text, otid=str(uuid.uuid4())
        ):
            pass

    asyncio.run(send("first"))
    asyncio.run(send("second"))
    everything = letta_gateway.list_messages(conversation_id=conversation.letta_id)
    first_reply = next(m for m in everything if m.content == "Echo: first")
    after = letta_gateway.list_messages(
        conversation_id=conversation.letta_id, after=first_reply.letta_id
    )
    assert [m.content for m in after] == ["second", "Echo: second"]


async def test_an_empty_api_key_in_the_environment_means_no_key(letta_url, monkeypatch):
    monkeypatch.setenv("LETTA_API_KEY", "")
    gateway = LettaGateway(base_url=letta_url, api_key="")
    assert gateway.health() == "0.16.8"  # the health check is open to all
    # No key is sent, and the local server (in Letta's secure mode) refuses the request.
    with pytest.raises(LettaError, match="LETTA_API_KEY") as refused:
        await gateway.alist_messages(conversation_id=f"conv-{uuid.uuid4()}")
    assert refused.value.status == 401


@pytest.mark.parametrize("key", ["", "not-the-key"], ids=["no-key", "wrong-key"])
def test_the_local_server_refuses_requests_without_its_key(letta_url, letta_api_key, key):
    require(bool(letta_api_key), "the Letta server under test has no key")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for path in ["/v1/agents/", "/v1/conversations/", "/v1/runs/"]:
        answer = httpx.get(letta_url + path, headers=headers, timeout=10, trust_env=False)
        assert answer.status_code == 401, path
    keyed = httpx.get(
        letta_url + "/v1/agents/",
        headers={"Authorization": f"Bearer {letta_api_key}"},
        timeout=10,
        trust_env=False,
    )
    assert keyed.status_code == 200


def test_an_unknown_agent_is_not_found(letta_gateway):
    with pytest.raises(LettaNotFound):
        letta_gateway.create_conversation(agent_id=f"agent-{uuid.uuid4()}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_server_is_reported_as_unavailable():
    gateway = LettaGateway(base_url=f"http://127.0.0.1:{_closed_port()}", api_key="", timeout=2)
    with pytest.raises(LettaUnavailable):
        gateway.health()
    with pytest.raises(LettaUnavailable):
        gateway.create_conversation(agent_id="agent-x")


async def test_a_send_to_a_dead_server_fails_once_without_retrying():
    gateway = LettaGateway(base_url=f"http://127.0.0.1:{_closed_port()}", api_key="", timeout=2)
    with pytest.raises(LettaUnavailable):
        async for _ in gateway.astream_reply(conversation_id="conv-x", text="hi", otid="o"):
            pass
