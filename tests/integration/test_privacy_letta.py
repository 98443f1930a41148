"""What one person tells an agent never reaches another, against the real Letta server.

The scripted model calls whatever tool a message asks for (``[[tool:NAME {json}]]``), so each
test tries every route Letta has from one person's words to another's conversation: the
agent's conversation search, its archival memory, its memory blocks (read and written by its
memory tools), and a common-knowledge block. On a personal agent every route is closed; on a
shared agent (the control, which shows the test can fail) the same steps carry the secret across.
Then a person's data is exported and erased, and Letta is asked what is left.
"""

from __future__ import annotations

import json
import uuid

import letta_client  # noqa: TID251 - setting up and inspecting Letta itself, not lettachat's calls
import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from conversations import exports, personal_data, services
from conversations.models import Agent, Conversation, Message
from devtools.local_letta import harness
from letta_gateway import LettaNotFound
from tests.websocket import frames_until_idle, open_socket, send_message

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

SECRET = "PURPLE-42"
# What Bob searches for: part of the secret, so that his own words (the search asked for, shown
# back to him, and findable) never contain the secret itself.
QUERY = "PURPLE"
BOBS_WORDS = "BOB-WRITES-9"
RECALL_TOOLS = ("conversation_search", "archival_memory_insert", "archival_memory_search")


def raw_letta() -> letta_client.Letta:
    return letta_client.Letta(
        base_url=settings.LETTA_BASE_URL,
        api_key=settings.LETTA_API_KEY or None,
        max_retries=0,
    )


def make_agent(name: str) -> str:
    """An agent as staff would set one up: memory blocks, the default tools (conversation
    search, memory insert/replace) and the archival memory tools too."""
    client = raw_letta()
    agent = client.agents.create(
        name=name,
        model=harness.MODEL_HANDLE,
        memory_blocks=[
            {"label": "human", "value": "Nothing is known about the person yet."},
            {"label": "persona", "value": "A careful test agent."},
            {"label": "policy", "value": "Be kind to everyone."},
        ],
    )
    for tool in RECALL_TOOLS[1:]:
        [found] = [t for t in client.tools.list(name=tool, limit=5).items if t.name == tool]
        client.agents.tools.attach(found.id, agent_id=agent.id)
    return agent.id


@pytest.fixture
def personal(letta_gateway, db) -> Agent:
    letta_id = make_agent(f"privacy-personal-{uuid.uuid4().hex[:6]}")
    return Agent.objects.create(
        letta_id=letta_id,
        name="Tutor",
        visible_to_users=True,
        sharing="personal",
        common_labels=["policy"],
    )


@pytest.fixture
def shared(letta_gateway, db) -> Agent:
    letta_id = make_agent(f"privacy-shared-{uuid.uuid4().hex[:6]}")
    return Agent.objects.create(
        letta_id=letta_id, name="Team", visible_to_users=True, sharing="shared"
    )


async def say(user, conversation: Conversation, text: str) -> list[str]:
    """Send through lettachat's websocket and wait for the reply to end."""
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    await communicator.receive_from(timeout=10)
    await send_message(communicator, text)
    frames = await frames_until_idle(communicator, timeout=60)
    await communicator.disconnect()
    return frames


async def tool_returns(gateway, conversation: Conversation) -> list[str]:
    stored = await gateway.alist_messages(conversation_id=conversation.letta_id, limit=200)
    return [m.content for m in stored if m.message_type == "tool_return"]


async def start(gateway, user, agent: Agent) -> Conversation:
    return await database_sync_to_async(services.conversation_create)(
        gateway=gateway, user=user, agent=agent
    )


async def everything_alice_tells(gateway, alice, agent: Agent) -> Conversation:
    conversation = await start(gateway, alice, agent)
    await say(alice, conversation, f"my secret code is {SECRET}")
    await say(
        alice,
        conversation,
        f'[[tool:memory_insert {{"label": "human", "new_string": "Alice code {SECRET}"}}]]',
    )
    await say(
        alice, conversation, f'[[tool:archival_memory_insert {{"content": "Alice code {SECRET}"}}]]'
    )
    returns = await tool_returns(gateway, conversation)
    assert any(SECRET in r for r in returns), "Alice's memory insert worked in her own agent"
    return conversation


async def what_bob_can_find(gateway, bob, agent: Agent) -> tuple[Conversation, str]:
    """Everything Bob's conversation brings back when he goes looking for Alice's words."""
    conversation = await start(gateway, bob, agent)
    texts = []
    for ask in (
        f'[[tool:conversation_search {{"query": "{QUERY}"}}]]',
        f'[[tool:archival_memory_search {{"query": "{QUERY}"}}]]',
        "[[block:human]]",
    ):
        texts += await say(bob, conversation, ask)
    texts += await tool_returns(gateway, conversation)
    blocks = await gateway.alist_blocks(agent_id=conversation.agent.letta_id)
    texts += [b.value for b in blocks]
    return conversation, "\n".join(texts)


async def test_on_a_personal_agent_nothing_alice_says_reaches_bob_by_any_tool(
    letta_gateway, personal, make_user
):
    alice, bob = (
        await database_sync_to_async(make_user)("alice"),
        await database_sync_to_async(make_user)("bob"),
    )
    alices = await everything_alice_tells(letta_gateway, alice, personal)

    bobs, found = await what_bob_can_find(letta_gateway, bob, personal)

    assert SECRET not in found
    assert alices.agent.letta_id != bobs.agent.letta_id  # two agents in Letta

    # Bob writes into his memory; none of it reaches Alice's, nor her next conversation.
    await say(
        bob, bobs, f'[[tool:memory_insert {{"label": "human", "new_string": "{BOBS_WORDS}"}}]]'
    )
    alices_blocks = await letta_gateway.alist_blocks(agent_id=alices.agent.letta_id)
    assert BOBS_WORDS not in "".join(b.value for b in alices_blocks)
    fresh = await start(letta_gateway, alice, personal)
    recited = "".join(await say(alice, fresh, "[[block:human]]"))
    assert BOBS_WORDS not in recited and SECRET in recited  # her own memory, not his

    # Common knowledge: one block both copies read; neither person can write into it.
    await say(
        bob, bobs, f'[[tool:memory_insert {{"label": "policy", "new_string": "{BOBS_WORDS}"}}]]'
    )
    assert any("read-only" in r for r in await tool_returns(letta_gateway, bobs))
    [alices_policy] = [b for b in alices_blocks if b.label == "policy"]
    bobs_blocks = await letta_gateway.alist_blocks(agent_id=bobs.agent.letta_id)
    [bobs_policy] = [b for b in bobs_blocks if b.label == "policy"]
    assert alices_policy.block_id == bobs_policy.block_id and alices_policy.read_only
    assert bobs_policy.value == "Be kind to everyone."

    # Each copy names its person as a Letta identity.
    client = raw_letta()
    for conversation, person in ((alices, alice), (bobs, bob)):
        agent = client.agents.retrieve(conversation.agent.letta_id, include=["agent.identities"])
        [identity] = agent.identities
        assert identity.identifier_key == personal_data.identity_key(person)
        assert identity.name == person.get_username()


async def test_on_a_shared_agent_the_same_steps_carry_alices_words_to_bob(
    letta_gateway, shared, make_user
):
    """The control: the routes above are real, and open on a shared agent."""
    alice, bob = (
        await database_sync_to_async(make_user)("alice"),
        await database_sync_to_async(make_user)("bob"),
    )
    await everything_alice_tells(letta_gateway, alice, shared)
    _, found = await what_bob_can_find(letta_gateway, bob, shared)
    assert SECRET in found


# --- Export and erase --------------------------------------------------------------------------


@pytest.fixture
def alice_and_bob(make_user):
    return make_user("alice"), make_user("bob")


async def test_the_export_holds_all_of_alices_messages_and_nothing_of_bobs(
    letta_gateway, personal, shared, alice_and_bob
):
    alice, bob = alice_and_bob
    on_shared = await start(letta_gateway, alice, shared)
    await say(alice, on_shared, "ALICE-ONE on the team agent")
    on_personal = await start(letta_gateway, alice, personal)
    await say(alice, on_personal, "ALICE-TWO with my tutor")
    bobs = await start(letta_gateway, bob, shared)
    await say(bob, bobs, "BOB-ONLY words")

    archive = await database_sync_to_async(_export)(letta_gateway, alice)

    everything = "\n".join(archive.values())
    for conversation in (on_shared, on_personal):
        stored = await letta_gateway.alist_messages(conversation_id=conversation.letta_id)
        for message in stored:
            if message.message_type in ("user", "assistant"):
                assert message.content in everything, message
    assert "BOB-ONLY" not in everything and bobs.letta_id not in everything
    assert f"memory/{on_personal.agent.letta_id}.json" in archive


def _export(gateway, user) -> dict[str, str]:
    import io
    import zipfile

    buffer = io.BytesIO()
    exports.user_export_zip(gateway=gateway, user=user, out=buffer)
    with zipfile.ZipFile(buffer) as archive:
        return {name: archive.read(name).decode() for name in archive.namelist()}


def letta_holds(gateway, *, conversations: list[str], agents: list[str], blocks: list[str]) -> dict:
    """What Letta itself still has of these, asked one by one."""
    client = raw_letta()
    left: dict[str, list[str]] = {"conversations": [], "agents": [], "blocks": []}
    for letta_id in conversations:
        try:
            gateway.retrieve_conversation(conversation_id=letta_id)
            left["conversations"].append(letta_id)
        except LettaNotFound:
            pass
    for letta_id in agents:
        try:
            gateway.agent_config(agent_id=letta_id)
            left["agents"].append(letta_id)
        except LettaNotFound:
            pass
    for block_id in blocks:
        try:
            client.blocks.retrieve(block_id)
            left["blocks"].append(block_id)
        except letta_client.NotFoundError:
            pass
    return left


def alices_things(gateway, alice) -> dict[str, list[str]]:
    agents = list(Agent.objects.filter(owner=alice).select_related("template"))
    own_blocks = [
        b.block_id
        for a in agents
        for b in gateway.list_blocks(agent_id=a.letta_id)
        if b.block_id not in (a.template.common_blocks or {}).values()
    ]
    return {
        "conversations": list(
            Conversation.objects.filter(owner=alice).values_list("letta_id", flat=True)
        ),
        "agents": [a.letta_id for a in agents],
        "blocks": own_blocks,
    }


async def test_an_erase_stopped_half_way_by_letta_going_down_is_finished_by_the_next_run(
    letta_gateway, personal, shared, alice_and_bob
):
    alice, bob = alice_and_bob
    for agent in (shared, shared, personal):
        conversation = await start(letta_gateway, alice, agent)
        await say(alice, conversation, f"ALICE {SECRET} in {agent.name}")
    bobs = await start(letta_gateway, bob, shared)
    await say(bob, bobs, "Bob's own words")
    things = await database_sync_to_async(alices_things)(letta_gateway, alice)
    assert len(things["conversations"]) == 3 and len(things["agents"]) == 1 and things["blocks"]

    def letta_dies_after_the_first(kind: str, letta_id: str) -> None:
        if kind == "conversation" and not stopped:
            stopped.append(letta_id)
            harness.stop_letta()

    stopped: list[str] = []
    try:
        report = await database_sync_to_async(personal_data.user_erase)(
            gateway=letta_gateway, user=alice, on_progress=letta_dies_after_the_first
        )
    finally:
        await database_sync_to_async(harness.start_letta)()

    assert not report.done and report.error
    assert report.conversations_deleted == 1
    # Nothing was deleted here that Letta still had: the mirror and Letta agree.
    left_here = await database_sync_to_async(alices_things)(letta_gateway, alice)
    left_there = await database_sync_to_async(letta_holds)(letta_gateway, **things)
    assert sorted(left_here["conversations"]) == sorted(left_there["conversations"])
    assert left_here["agents"] == left_there["agents"] == things["agents"]

    again = await database_sync_to_async(personal_data.user_erase)(
        gateway=letta_gateway, user=alice
    )

    assert again.done, again
    assert await database_sync_to_async(letta_holds)(letta_gateway, **things) == {
        "conversations": [],
        "agents": [],
        "blocks": [],
    }
    assert not await database_sync_to_async(
        lambda: (
            Conversation.objects.filter(owner=alice).exists()
            or Message.objects.filter(conversation__owner=alice).exists()
            or Agent.objects.filter(owner=alice).exists()
        )
    )()
    client = raw_letta()
    identities = client.get(
        "/v1/identities/",
        options={"params": {"identifier_key": personal_data.identity_key(alice)}},
        cast_to=object,
    )
    assert identities == []
    # The common-knowledge block belongs to the template and stays; Bob's conversation too.
    await database_sync_to_async(personal.refresh_from_db)()
    client.blocks.retrieve(personal.common_blocks["policy"])
    letta_gateway.retrieve_conversation(conversation_id=bobs.letta_id)
    # What Alice said on the shared agent is gone from its conversation search as well.
    found = await what_bob_can_find(letta_gateway, bob, shared)
    assert SECRET not in found[1]
