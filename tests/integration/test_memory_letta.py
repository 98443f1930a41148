"""Shared memory and rich messages against the real Letta server.

The seed's demo: conversation 1 stores a fact in core memory (a real ``memory_insert`` tool call,
through the websocket), conversation 2 on the same agent recalls it, and neither conversation's
messages ever show up in the other. Also: the memory panel, a real tool error, real token usage.

These tests use an agent of their own (``lettachat-tests-memory``, made once on the server and
reused), so the memory of the agent other tests use is never touched; each run stores a fact of
its own, so what earlier runs stored cannot make a test pass.
"""

from __future__ import annotations

import json
import uuid

import pytest
from channels.db import database_sync_to_async
from django.test import Client
from django.urls import reverse

from conversations import services
from conversations.models import Agent, Message, Run
from devtools.local_letta import harness
from letta_gateway import AgentInfo, LettaNotFound
from letta_gateway.client import LettaGateway
from tests.page_model import PageModel, parse
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

MEMORY_AGENT_NAME = "lettachat-tests-memory"
REPLY_SECONDS = 60


def ensure_memory_agent(letta_url: str, letta_api_key: str) -> AgentInfo:
    """The memory tests' own agent on the real server (made on first use)."""
    gateway = LettaGateway(base_url=letta_url, api_key=letta_api_key)
    for info in gateway.list_agents():
        if info.name == MEMORY_AGENT_NAME:
            return info
    return gateway.create_agent(
        name=MEMORY_AGENT_NAME,
        model=harness.MODEL_HANDLE,
        description="Used by lettachat's memory tests: its memory is theirs to change.",
        blocks={"human": "A tester.", "persona": "A patient test agent."},
    )


@pytest.fixture(scope="session")
def memory_agent_info(letta_url, letta_api_key) -> AgentInfo:
    return ensure_memory_agent(letta_url, letta_api_key)


@pytest.fixture
def memory_agent(db, memory_agent_info) -> Agent:
    return Agent.objects.create(
        letta_id=memory_agent_info.letta_id,
        name=memory_agent_info.name,
        model=memory_agent_info.model,
        visible_to_users=True,
        sharing="shared",
    )


def insert(fact: str, *, label: str = "human") -> str:
    """A message that makes the scripted model call ``memory_insert`` for real."""
    return "[[tool:memory_insert " + json.dumps({"label": label, "new_string": fact}) + "]]"


def elements(html: str) -> list:
    return [n for n in parse(html) if not isinstance(n, str)]


async def chat(conversation, user, text: str) -> list[str]:
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    await send_message(communicator, text)
    frames = await frames_until_idle(communicator, timeout=REPLY_SECONDS)
    await communicator.disconnect()
    return frames


async def contents(conversation) -> list[str]:
    return await database_sync_to_async(
        lambda: list(conversation.messages.values_list("content", flat=True))
    )()


async def test_memory_is_shared_across_conversations_and_messages_are_not(
    letta_gateway, memory_agent, user
):
    run = uuid.uuid4().hex[:10]
    fact = f"Drinks rooibos, tag {run}."
    marker_a, marker_b = f"only-in-A-{run}", f"only-in-B-{run}"
    first = await database_sync_to_async(services.conversation_create)(
        gateway=letta_gateway, user=user, agent=memory_agent
    )

    # Conversation 1 stores the fact in core memory: a real tool call, through the websocket.
    frames = await chat(first, user, f"{insert(fact)} remember this, {marker_a}")
    returned = await database_sync_to_async(
        lambda: first.messages.get(message_type=Message.Type.TOOL_RETURN)
    )()
    assert returned.name == "success"
    human = next(
        b for b in await letta_gateway.alist_blocks(agent_id=memory_agent.letta_id)
        if b.label == "human"
    )  # fmt: skip
    assert human.value.endswith(fact), "Letta stored it"
    assert returned.memory_change == {
        "label": "human",
        "removed": "",
        "added": fact,
        "size": len(human.value),
        "limit": human.limit,
    }
    # The page was sent the refreshed panel, with the block as Letta now holds it ...
    [panel_frame] = [f for f in frames if 'id="memory-panel"' in f]
    [panel] = [n for n in elements(panel_frame) if n.id == "memory-panel"]
    assert human.value in panel.text()
    assert f"{len(human.value)} / {human.limit} characters" in panel.text()
    # ... and the turn says what changed.
    page = PageModel()
    for frame in frames:
        page.apply(frame)
    turn = dict(page.articles())[f"msg-{returned.pk}"]
    assert f"Memory updated: human ({len(human.value)} / {human.limit} characters)" in turn
    assert f"Added: + {fact}" in turn

    # The panel, loaded by a page, reads the same from Letta.
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    response = await database_sync_to_async(client.get)(
        reverse("conversation_memory", args=[first.letta_id])
    )
    assert fact in response.content.decode()

    # Conversation 2, started after the update on the same agent, recalls the fact.
    second = await database_sync_to_async(services.conversation_create)(
        gateway=letta_gateway, user=user, agent=memory_agent
    )
    await chat(second, user, f"[[block:human]] what do you know about me? {marker_b}")
    stored_b = await letta_gateway.alist_messages(conversation_id=second.letta_id)
    [recited] = [m.content for m in stored_b if m.message_type == "assistant"]
    assert recited.startswith("human=") and fact in recited

    # What the panel's note says: a conversation sees memory as it was when it started (Letta
    # 0.16.8 compiles it then), even the one that made the edit.
    await chat(first, user, "[[block:human]]")
    stored_a = await letta_gateway.alist_messages(conversation_id=first.letta_id)
    recited_a = [m.content for m in stored_a if m.message_type == "assistant"][-1]
    assert recited_a.startswith("human=") and fact not in recited_a

    # Messages are not shared: neither conversation holds the other's, in Letta or the mirror.
    ids_a = {m.letta_id for m in stored_a}
    ids_b = {m.letta_id for m in stored_b}
    assert ids_a and ids_b and not ids_a & ids_b
    texts_a = [m.content for m in stored_a if m.message_type != "system"]
    texts_b = [m.content for m in stored_b if m.message_type != "system"]
    assert any(marker_a in t for t in texts_a) and any(marker_b in t for t in texts_b)
    for text in [*texts_b, *await contents(second)]:
        assert marker_a not in text and "remember this" not in text
    for text in [*texts_a, *await contents(first)]:
        assert marker_b not in text
    # Conversation 1's own reply, not its memory, is what must not cross over.
    reply_a = next(m.content for m in stored_a if m.message_type == "assistant")
    assert reply_a.startswith("Tool memory_insert returned") and reply_a not in texts_b


async def test_a_real_tool_error_shows_and_changes_no_memory(letta_gateway, memory_agent, user):
    conversation = await database_sync_to_async(services.conversation_create)(
        gateway=letta_gateway, user=user, agent=memory_agent
    )
    before = await letta_gateway.alist_blocks(agent_id=memory_agent.letta_id)
    missing = f"not in memory {uuid.uuid4().hex}"
    arguments = {"label": "human", "old_string": missing, "new_string": "x"}
    frames = await chat(conversation, user, "[[tool:memory_replace " + json.dumps(arguments) + "]]")
    returned = await database_sync_to_async(
        lambda: conversation.messages.get(message_type=Message.Type.TOOL_RETURN)
    )()
    assert returned.name == "error"
    assert returned.memory_change is None
    [shown] = [f for f in frames if f'id="msg-{returned.pk}"' in f]
    summary = shown.split("<summary>")[1].split("</summary>")[0]
    assert summary.startswith("Tool error: ")
    assert "No replacement was performed" in summary
    assert not [f for f in frames if 'id="memory-panel"' in f]
    assert await letta_gateway.alist_blocks(agent_id=memory_agent.letta_id) == before


async def test_a_real_turn_shows_lettas_token_usage(letta_gateway, memory_agent, user):
    conversation = await database_sync_to_async(services.conversation_create)(
        gateway=letta_gateway, user=user, agent=memory_agent
    )
    frames = await chat(conversation, user, "count the tokens of this reply please")
    run = await database_sync_to_async(lambda: Run.objects.get(conversation=conversation))()
    assert run.stop_reason == "end_turn"
    assert run.total_tokens and run.prompt_tokens and run.completion_tokens and run.context_tokens
    assert run.total_tokens == run.prompt_tokens + run.completion_tokens
    [line] = [f for f in frames if f'id="usage-{run.pk}"' in f]
    assert elements(line)[0].text().strip() == (
        f"{run.total_tokens} tokens (prompt {run.prompt_tokens}, "
        f"completion {run.completion_tokens}) · context {run.context_tokens}"
    )
    assert "Reply finished." in frames[-1]

    # On a reload the line is under the reply.
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    response = await database_sync_to_async(client.get)(
        reverse("conversation_detail", args=[conversation.letta_id])
    )
    html = response.content.decode()
    answer = await database_sync_to_async(
        lambda: conversation.messages.get(message_type=Message.Type.ASSISTANT)
    )()
    assert html.index(f'id="msg-{answer.pk}"') < html.index(f'id="usage-{run.pk}"')


def test_the_gateway_reads_an_agents_blocks(letta_gateway, memory_agent_info):
    blocks = {b.label: b for b in letta_gateway.list_blocks(agent_id=memory_agent_info.letta_id)}
    assert {"human", "persona"} <= blocks.keys()
    assert blocks["persona"].value == "A patient test agent."
    assert blocks["persona"].limit and blocks["persona"].limit > 0
    with pytest.raises(LettaNotFound):
        letta_gateway.list_blocks(agent_id=f"agent-{uuid.uuid4()}")
