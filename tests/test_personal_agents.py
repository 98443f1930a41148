"""Personal and shared agents, against the scripted gateway.

A personal agent is a template: each person's conversations go to a Letta agent of their own,
made from it the first time. A shared agent is one agent for everyone, and people are told so.
(The real Letta server's side of this is tests/integration/test_privacy_letta.py.)
"""

from __future__ import annotations

import pytest
from django.db import IntegrityError
from django.test import Client
from django.urls import reverse

from conversations import personal_data, selectors, services
from conversations.models import Agent, Conversation
from letta_gateway import AgentInfo, ConversationInfo, LettaUnavailable, MemoryBlockInfo
from tests.websocket import open_socket, send_message

pytestmark = pytest.mark.django_db


@pytest.fixture
def template(personal_agent, fake_gateway) -> Agent:
    """The personal agent as Letta has it: two memory blocks."""
    fake_gateway.agents.append(AgentInfo("agent-personal", "Tutor", "Teaches.", "m"))
    fake_gateway.set_blocks("agent-personal", human="Nothing known yet.", policy="Be kind.")
    return personal_agent


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def start(user, agent: Agent) -> Conversation:
    response = logged_in(user).post(reverse("conversation_create", args=[agent.letta_id]))
    assert response.status_code == 302, response.status_code
    letta_id = response["Location"].rstrip("/").rsplit("/", 1)[-1]
    return Conversation.objects.select_related("agent").get(letta_id=letta_id)


# --- A copy of one's own -----------------------------------------------------------------------


def test_the_first_conversation_on_a_personal_agent_makes_the_persons_own_copy(
    template, user, fake_gateway
):
    conversation = start(user, template)

    copy = conversation.agent
    assert (copy.template, copy.owner, copy.sharing) == (template, user, "personal")
    assert copy.letta_id != template.letta_id
    [made] = fake_gateway.copies
    assert made == {
        "template": template.letta_id,
        "agent": copy.letta_id,
        "identity": fake_gateway.identities[personal_data.identity_key(user)],
    }
    assert copy.identity_id == made["identity"]
    # Its memory starts from the template's values, in blocks of its own.
    blocks = {b.label: b.value for b in fake_gateway.list_blocks(agent_id=copy.letta_id)}
    assert blocks == {"human": "Nothing known yet.", "policy": "Be kind."}


def test_later_conversations_go_to_the_same_copy(template, user, fake_gateway):
    first, second = start(user, template), start(user, template)
    assert first.agent == second.agent
    assert len(fake_gateway.copies) == 1


def test_each_person_gets_a_copy_of_their_own(template, user, other_user, fake_gateway):
    alices, mallorys = start(user, template), start(other_user, template)
    assert alices.agent != mallorys.agent
    assert alices.agent.owner == user and mallorys.agent.owner == other_user
    assert len({c["identity"] for c in fake_gateway.copies}) == 2


def test_a_shared_agent_takes_everyones_conversations_itself(agent, user, other_user, fake_gateway):
    assert start(user, agent).agent == agent
    assert start(other_user, agent).agent == agent
    assert not Agent.objects.filter(template__isnull=False).exists()


def test_two_copies_for_one_person_cannot_be_recorded(template, user):
    Agent.objects.create(letta_id="agent-c1", name="c1", template=template, owner=user)
    with pytest.raises(IntegrityError):
        Agent.objects.create(letta_id="agent-c2", name="c2", template=template, owner=user)


def test_a_copy_made_meanwhile_by_another_request_wins_and_ours_is_deleted(
    template, user, fake_gateway, monkeypatch
):
    """Two first conversations at once: both made a copy in Letta; one is kept."""
    real_create = fake_gateway.create_agent_copy

    def create_and_race(**kwargs):
        info = real_create(**kwargs)
        Agent.objects.create(letta_id="agent-winner", name="w", template=template, owner=user)
        return info

    monkeypatch.setattr(fake_gateway, "create_agent_copy", create_and_race)
    copy = services.agent_copy_ensure(gateway=fake_gateway, user=user, template=template)
    assert copy.letta_id == "agent-winner"
    assert fake_gateway.deleted_agents == [fake_gateway.copies[0]["agent"]]


def test_with_letta_down_no_copy_and_no_conversation_is_recorded(template, user, fake_gateway):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    response = logged_in(user).post(reverse("conversation_create", args=[template.letta_id]))
    assert response.status_code == 503
    assert b"Could not start a conversation" in response.content
    assert not Agent.objects.filter(template=template).exists()
    assert not Conversation.objects.exists()


def test_common_knowledge_is_one_read_only_block_attached_to_every_copy(
    template, user, other_user, fake_gateway
):
    template.common_labels = ["policy"]
    template.save()
    alices, mallorys = start(user, template).agent, start(other_user, template).agent

    template.refresh_from_db()
    block_id = template.common_blocks["policy"]
    assert fake_gateway.standalone_blocks[block_id].read_only
    for copy in (alices, mallorys):
        blocks = fake_gateway.list_blocks(agent_id=copy.letta_id)
        assert [(b.label, b.block_id) for b in blocks if b.label == "policy"] == [
            ("policy", block_id)
        ]
        assert [b.label for b in blocks if b.label == "human"] == ["human"]  # their own
    assert len(fake_gateway.standalone_blocks) == 1


def test_reapplying_a_template_updates_every_copy_and_its_common_blocks(
    template, user, other_user, fake_gateway
):
    template.common_labels = ["policy"]
    template.save()
    copies = [start(user, template).agent, start(other_user, template).agent]
    fake_gateway.set_blocks("agent-personal", human="Nothing known yet.", policy="Be kinder.")

    report = services.agent_reapply_template(gateway=fake_gateway, template=template)

    assert (report.updated, report.failed, report.common_blocks_updated) == (2, [], 1)
    assert fake_gateway.reapplied == [c.letta_id for c in copies]
    template.refresh_from_db()
    assert fake_gateway.standalone_blocks[template.common_blocks["policy"]].value == "Be kinder."


# --- Who sees what -------------------------------------------------------------------------------


def test_people_pick_the_template_and_never_see_a_copy(template, user, other_user):
    start(user, template)
    copy = Agent.objects.get(template=template, owner=user)
    assert list(selectors.agent_list_visible()) == [template]
    assert selectors.agent_get_visible(letta_id=copy.letta_id) is None
    page = logged_in(other_user).get(reverse("agent_detail", args=[template.letta_id]))
    assert copy.letta_id not in page.content.decode()
    assert logged_in(user).get(reverse("agent_detail", args=[copy.letta_id])).status_code == 404


def test_the_sidebar_lists_ones_own_conversations_on_ones_copy(template, user, other_user):
    mine = start(user, template)
    theirs = start(other_user, template)
    page = logged_in(user).get(reverse("agent_detail", args=[template.letta_id])).content.decode()
    assert f'id="conv-{mine.letta_id}"' in page
    assert theirs.letta_id not in page


def test_a_copys_conversation_is_its_owners_and_goes_with_the_templates_visibility(
    template, user, other_user
):
    mine = start(user, template)
    url = reverse("conversation_detail", args=[mine.letta_id])
    assert logged_in(user).get(url).status_code == 200
    assert logged_in(other_user).get(url).status_code == 404
    template.visible_to_users = False
    template.save()
    assert logged_in(user).get(url).status_code == 404


def test_a_conversation_recorded_on_someone_elses_copy_is_not_shown(template, user, other_user):
    """No conversation is ever made so; were one recorded (a bug, a hand-edited row), its page
    would show another person's agent and memory: it is refused like any other's."""
    theirs = start(other_user, template)
    stray = Conversation.objects.create(
        letta_id="conv-stray", agent=theirs.agent, owner=user, summary="Recorded by mistake"
    )
    assert selectors.conversation_get(user=user, letta_id=stray.letta_id) is None
    url = reverse("conversation_detail", args=[stray.letta_id])
    assert logged_in(user).get(url).status_code == 404


# --- Told before the first message ---------------------------------------------------------------


def test_a_shared_agents_page_and_empty_conversation_say_what_is_shared(agent, user, fake_gateway):
    page = logged_in(user).get(reverse("agent_detail", args=[agent.letta_id])).content.decode()
    assert 'id="shared-notice"' in page
    assert "may come up in other people's conversations" in page
    conversation = start(user, agent)
    thread = logged_in(user).get(conversation.get_absolute_url()).content.decode()
    assert 'id="shared-notice"' in thread and 'id="shared-reminder"' in thread
    memory = logged_in(user).get(reverse("conversation_memory", args=[conversation.letta_id]))
    assert "Shared by everyone who talks to Helper" in memory.content.decode()


def test_a_personal_agents_page_says_the_copy_is_the_persons_own(template, user):
    page = logged_in(user).get(reverse("agent_detail", args=[template.letta_id])).content.decode()
    assert 'id="personal-notice"' in page and 'id="shared-notice"' not in page
    assert "Your copy is made when you start your first conversation" in page
    conversation = start(user, template)
    thread = logged_in(user).get(conversation.get_absolute_url()).content.decode()
    assert 'id="personal-notice"' in thread and 'id="shared-reminder"' not in thread
    memory = logged_in(user).get(reverse("conversation_memory", args=[conversation.letta_id]))
    assert "Your own Tutor: this memory belongs to your copy" in memory.content.decode()


def test_no_page_claims_that_messages_stay_in_their_own_conversation(agent, template, user):
    """The old wording: false for every agent (conversation_search reaches all of them)."""
    for a in (agent, template):
        conversation = start(user, a)
        for url in (
            conversation.get_absolute_url(),
            reverse("conversation_memory", args=[conversation.letta_id]),
        ):
            assert "messages stay in their own" not in logged_in(user).get(url).content.decode()


# --- A shared agent made personal later -----------------------------------------------------------


@pytest.fixture
def made_personal(agent, user, fake_gateway) -> Conversation:
    """Alice's conversation from when the agent was shared; staff have since made it personal."""
    conversation = start(user, agent)
    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, agent.letta_id, "", None, None
    )
    agent.sharing = "personal"
    agent.save()
    fake_gateway.agents.append(AgentInfo(agent.letta_id, "Helper", "", "m"))
    return conversation


def test_an_earlier_conversation_stays_readable_but_takes_no_new_message(made_personal, user):
    page = logged_in(user).get(made_personal.get_absolute_url()).content.decode()
    assert 'id="read-only-note"' in page
    assert 'id="composer-input"' not in page
    page = logged_in(user).get(reverse("agent_detail", args=[made_personal.agent.letta_id]))
    assert f'id="conv-{made_personal.letta_id}"' in page.content.decode()  # still listed


@pytest.mark.django_db(transaction=True)
async def test_a_message_sent_to_it_anyway_is_refused_and_reaches_no_one(
    made_personal, user, fake_gateway
):
    communicator, _, _ = await open_socket(made_personal.letta_id, user=user)
    await communicator.send_to(text_data='{"type": "resume", "after": 0}')
    await communicator.receive_from()
    await send_message(communicator, "hello again")
    frame = await communicator.receive_from()
    assert "takes no new messages" in frame and 'id="composer-error"' in frame
    assert fake_gateway.sent == []
    await communicator.disconnect()


def test_it_cannot_be_forked(made_personal, user, fake_gateway):
    response = logged_in(user).post(reverse("conversation_fork", args=[made_personal.letta_id]))
    assert response.status_code == 409
    assert "takes no new messages" in response.content.decode()
    assert fake_gateway.forks == []


def test_a_new_conversation_goes_to_the_persons_own_copy(made_personal, user):
    fresh = start(user, made_personal.agent)
    assert fresh.agent.template == made_personal.agent and fresh.agent.owner == user


# --- Sync and the migration --------------------------------------------------------------------


def test_a_sync_never_turns_a_persons_copy_into_an_agent_to_pick(fake_gateway, db):
    fake_gateway.agents = [
        AgentInfo("agent-staff", "Staff agent", "", "m"),
        AgentInfo("agent-copy", "Tutor (alice)", "", "m", tags=(services.COPY_TAG,)),
    ]
    services.agent_sync(gateway=fake_gateway)
    assert list(Agent.objects.values_list("letta_id", flat=True)) == ["agent-staff"]


def test_new_agents_are_personal_by_default(fake_gateway, db):
    fake_gateway.agents = [AgentInfo("agent-new", "New", "", "m")]
    [agent] = services.agent_sync(gateway=fake_gateway)
    assert agent.sharing == "personal"


@pytest.mark.django_db(transaction=True)
def test_the_migration_marks_agents_that_already_have_conversations_as_shared(django_user_model):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    before = [("conversations", "0004_message_memory_change")]
    after = [("conversations", "0005_personal_and_shared_agents")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    OldAgent = old.get_model("conversations", "Agent")
    OldConversation = old.get_model("conversations", "Conversation")
    user = old.get_model("auth", "User").objects.create(username="old-timer")
    used = OldAgent.objects.create(letta_id="agent-used", name="Used")
    OldAgent.objects.create(letta_id="agent-unused", name="Unused")
    OldConversation.objects.create(letta_id="conv-old", agent=used, owner_id=user.pk)

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    new = executor.loader.project_state(after).apps.get_model("conversations", "Agent")
    assert dict(new.objects.values_list("letta_id", "sharing")) == {
        "agent-used": "shared",
        "agent-unused": "personal",
    }
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())


def test_memory_block_info_carries_its_id_and_read_only_flag():
    block = MemoryBlockInfo("policy", "Be kind.", 100, "block-1", True)
    assert (block.block_id, block.read_only) == ("block-1", True)
