"""Tool approvals against the real Letta server: a tool marked as needing approval, the scripted
model calling it, and lettachat's gateway, domain and socket answering for the person."""

from __future__ import annotations

import uuid

import pytest

from devtools.local_letta import harness
from letta_gateway import (
    ApprovalAnswer,
    ApprovalPending,
    ApprovalRequest,
    ContentDelta,
    RunStarted,
    Stopped,
)
from letta_gateway.client import LettaGateway

pytestmark = [pytest.mark.integration]

APPROVAL_AGENT_NAME = "lettachat-tests-approvals"
TOOL = "conversation_search"
ASK = '[[tool:conversation_search {"query": "<b>tea</b> & biscuits"}]] look it up'


@pytest.fixture(scope="session")
def approval_agent_info(letta_url, letta_api_key):
    """An agent whose ``conversation_search`` waits for approval (made once, reused)."""
    gateway = LettaGateway(base_url=letta_url, api_key=letta_api_key)
    info = next((a for a in gateway.list_agents() if a.name == APPROVAL_AGENT_NAME), None)
    if info is None:
        info = gateway.create_agent(
            name=APPROVAL_AGENT_NAME,
            model=harness.MODEL_HANDLE,
            description="Used by lettachat's approval tests.",
            blocks={"human": "A tester.", "persona": "A careful test agent."},
        )
    gateway.set_tool_approval(agent_id=info.letta_id, tool_name=TOOL, required=True)
    return info


async def collect(stream) -> list:
    return [event async for event in stream]


def test_marking_a_tool_for_approval_is_a_tool_rule_on_letta(letta_gateway, approval_agent_info):
    agent_id = approval_agent_info.letta_id
    assert TOOL in letta_gateway.agent_config(agent_id=agent_id).approval_tools
    letta_gateway.set_tool_approval(agent_id=agent_id, tool_name=TOOL, required=False)
    assert TOOL not in letta_gateway.agent_config(agent_id=agent_id).approval_tools
    letta_gateway.set_tool_approval(agent_id=agent_id, tool_name=TOOL, required=True)
    assert TOOL in letta_gateway.agent_config(agent_id=agent_id).approval_tools


async def test_a_run_asks_for_approval_and_the_answer_continues_it(
    letta_gateway, approval_agent_info
):
    conv = letta_gateway.create_conversation(agent_id=approval_agent_info.letta_id)
    events = await collect(
        letta_gateway.astream_reply(conversation_id=conv.letta_id, text=ASK, otid=str(uuid.uuid4()))
    )
    assert isinstance(events[0], RunStarted)
    pieces = [e for e in events if isinstance(e, ApprovalRequest)]
    assert pieces and {p.name for p in pieces} - {""} == {TOOL}
    assert len({p.tool_call_id for p in pieces}) == 1
    assert "".join(p.arguments for p in pieces) == '{"query": "<b>tea</b> & biscuits"}'
    assert Stopped("requires_approval") in events

    # Letta's stored copy names the same call; a message now is refused, and nothing is kept.
    stored = await letta_gateway.alist_messages(conversation_id=conv.letta_id)
    request = stored[-1]
    assert request.message_type == "approval"
    assert [(c.tool_call_id, c.name) for c in request.tool_calls] == [
        (pieces[0].tool_call_id, TOOL)
    ]
    refused = await collect(
        letta_gateway.astream_reply(
            conversation_id=conv.letta_id, text="hello?", otid=str(uuid.uuid4())
        )
    )
    assert any(isinstance(e, ApprovalPending) for e in refused)
    assert [
        m.letta_id for m in await letta_gateway.alist_messages(conversation_id=conv.letta_id)
    ] == [m.letta_id for m in stored]

    # Denied, with a reason: the tool does not run, and the agent is told why.
    answer = ApprovalAnswer(pieces[0].tool_call_id, approve=False, reason="not <now>")
    events = await collect(
        letta_gateway.astream_approval(
            conversation_id=conv.letta_id, answers=[answer], otid=str(uuid.uuid4())
        )
    )
    text = "".join(e.text for e in events if isinstance(e, ContentDelta) and e.kind == "assistant")
    assert text.startswith(f"Tool {TOOL} returned:")
    assert Stopped("end_turn") in events
    after = await letta_gateway.alist_messages(conversation_id=conv.letta_id)
    returns = [m for m in after if m.message_type == "tool_return"]
    assert returns and "denied" in returns[-1].content and "not <now>" in returns[-1].content


async def test_an_approved_call_runs_the_tool(letta_gateway, approval_agent_info):
    conv = letta_gateway.create_conversation(agent_id=approval_agent_info.letta_id)
    events = await collect(
        letta_gateway.astream_reply(conversation_id=conv.letta_id, text=ASK, otid=str(uuid.uuid4()))
    )
    call_id = next(e.tool_call_id for e in events if isinstance(e, ApprovalRequest))
    events = await collect(
        letta_gateway.astream_approval(
            conversation_id=conv.letta_id,
            answers=[ApprovalAnswer(call_id, approve=True)],
            otid=str(uuid.uuid4()),
        )
    )
    assert Stopped("end_turn") in events
    after = await letta_gateway.alist_messages(conversation_id=conv.letta_id)
    returns = [m for m in after if m.message_type == "tool_return"]
    assert returns and "denied" not in returns[-1].content


# --- Through lettachat: the relay, the actions, the socket and the URL ---------------------------


@pytest.fixture
def approval_agent(db, approval_agent_info):
    from conversations.models import Agent

    return Agent.objects.create(
        letta_id=approval_agent_info.letta_id,
        name=approval_agent_info.name,
        model=approval_agent_info.model,
        visible_to_users=True,
        sharing="shared",
    )


@pytest.fixture
def letta_conversation(letta_gateway, approval_agent, user):
    from conversations import services

    return services.conversation_create(gateway=letta_gateway, user=user, agent=approval_agent)


async def settled(timeout: float = 60) -> None:
    import asyncio

    from conversations.relay import registry

    await asyncio.wait_for(registry.wait_all_done(), timeout)


async def asked(conversation):
    """Send the message that makes the agent ask; the request as the mirror has it."""
    from channels.db import database_sync_to_async

    from conversations import actions, approvals

    await actions.message_send(conversation=conversation, text=ASK, otid="")
    await settled()
    approval = await database_sync_to_async(approvals.approval_pending)(conversation=conversation)
    assert approval is not None, "the agent's request is not pending"
    return approval


async def letta_kinds(gateway, conversation) -> list[str]:
    """The kinds of what Letta stored, approval answers and keep-alives included (read over
    plain HTTP: the gateway leaves out kinds lettachat does not show)."""
    import httpx

    headers = {"Authorization": f"Bearer {gateway.api_key}"} if gateway.api_key else {}
    async with httpx.AsyncClient(base_url=gateway.base_url, headers=headers) as client:
        response = await client.get(
            f"/v1/conversations/{conversation.letta_id}/messages",
            params={"order": "asc", "limit": 100},
        )
    response.raise_for_status()
    data = response.json()
    items = data if isinstance(data, list) else data.get("items", data.get("messages", []))
    return [
        "keep-alive" if "keep-alive" in str(m.get("content") or "") else str(m["message_type"])
        for m in items
    ]


def mirror(conversation) -> list[tuple[str, str]]:
    from conversations.models import Message

    return [
        (m.message_type, m.content)
        for m in Message.objects.filter(conversation=conversation).order_by("created_at", "id")
    ]


@pytest.mark.django_db(transaction=True)
async def test_approve_through_the_socket_and_the_reply_goes_on(
    letta_gateway, letta_conversation, user
):
    import json

    from channels.db import database_sync_to_async

    from conversations.models import Approval
    from tests.page_model import PageModel
    from tests.websocket import open_socket

    approval = await asked(letta_conversation)
    assert approval.tool_calls[0]["name"] == TOOL
    assert json.loads(approval.tool_calls[0]["arguments"]) == {"query": "<b>tea</b> & biscuits"}
    communicator, connected, _ = await open_socket(letta_conversation.letta_id, user=user)
    assert connected
    page = PageModel()
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    page.apply(await communicator.receive_from(timeout=10))
    assert page.messages.find(f"approval-{approval.message_id}") is not None
    await communicator.send_to(
        text_data=json.dumps({"type": "approval", "approval": approval.pk, "decision": "approve"})
    )
    while not any(f"Tool {TOOL} returned" in text for _, text in page.articles()):
        page.apply(await communicator.receive_from(timeout=30))
    card = page.messages.find(f"approval-{approval.message_id}")
    assert card is not None and "Approved" in card.text()
    await settled()
    await communicator.disconnect()
    answered = await database_sync_to_async(Approval.objects.get)(pk=approval.pk)
    assert answered.status == Approval.Status.APPROVED
    kinds = await letta_kinds(letta_gateway, letta_conversation)
    assert kinds.count("approval_response_message") == 1 and "keep-alive" not in kinds
    ours = await database_sync_to_async(mirror)(letta_conversation)
    assert [k for k, _ in ours if k == "tool_return"] == ["tool_return"]
    assert ours[-1][0] == "assistant" and ours[-1][1].startswith(f"Tool {TOOL} returned")


@pytest.mark.django_db(transaction=True)
async def test_deny_with_a_reason_reaches_the_agent(letta_gateway, letta_conversation, user):
    from channels.db import database_sync_to_async

    from conversations import actions

    approval = await asked(letta_conversation)
    await actions.approval_answer(
        conversation=letta_conversation,
        user=user,
        approval_pk=approval.pk,
        approve=False,
        reason="not <now>, thanks",
    )
    await settled()
    ours = await database_sync_to_async(mirror)(letta_conversation)
    returns = [text for kind, text in ours if kind == "tool_return"]
    assert returns and "denied" in returns[-1] and "not <now>, thanks" in returns[-1]
    # The agent answered after the denial (Letta streams the reply; its denied tool return
    # only comes with the re-read at the end, so the mirror adds that after the reply).
    after = ours[[kind for kind, _ in ours].index("approval") :]
    assert any(kind == "assistant" and text.startswith(f"Tool {TOOL}") for kind, text in after)
    assert "error" not in [kind for kind, _ in ours]  # no note: the request said it all


@pytest.mark.django_db(transaction=True)
async def test_a_send_while_pending_is_refused_here_and_letta_gets_nothing(
    letta_gateway, letta_conversation, user
):
    import json

    from tests.websocket import open_socket, send_message

    approval = await asked(letta_conversation)
    before = await letta_kinds(letta_gateway, letta_conversation)
    communicator, connected, _ = await open_socket(letta_conversation.letta_id, user=user)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    await communicator.receive_from(timeout=10)
    await send_message(communicator, "are you there?")
    frame = await communicator.receive_from(timeout=10)
    assert "approve or deny it first" in frame and 'id="composer"' not in frame
    await communicator.disconnect()
    assert await letta_kinds(letta_gateway, letta_conversation) == before
    assert approval.pending


@pytest.mark.django_db(transaction=True)
async def test_a_request_made_in_another_client_is_found_and_answered_here(
    letta_gateway, letta_conversation, user
):
    from channels.db import database_sync_to_async

    from conversations import actions, approvals

    # Another client makes the agent ask; lettachat's mirror has never seen it.
    await collect(
        letta_gateway.astream_reply(
            conversation_id=letta_conversation.letta_id, text=ASK, otid=str(uuid.uuid4())
        )
    )
    sent = await actions.message_send(conversation=letta_conversation, text="hi there", otid="")
    await settled()
    approval = await database_sync_to_async(approvals.approval_pending)(
        conversation=letta_conversation
    )
    assert approval is not None and approval.tool_calls[0]["name"] == TOOL
    from conversations.models import Message

    message = await database_sync_to_async(Message.objects.get)(pk=sent.message.pk)
    assert message.error == approvals.ANSWER_FIRST
    await actions.approval_answer(
        conversation=letta_conversation, user=user, approval_pk=approval.pk, approve=True
    )
    await settled()
    kinds = await letta_kinds(letta_gateway, letta_conversation)
    assert kinds.count("approval_response_message") == 1 and kinds[-1] == "assistant_message"


@pytest.mark.django_db(transaction=True)
async def test_a_double_click_reaches_letta_once(letta_gateway, letta_conversation, user):
    import asyncio

    from conversations import actions

    approval = await asked(letta_conversation)

    async def click():
        return await actions.approval_answer(
            conversation=letta_conversation, user=user, approval_pk=approval.pk, approve=True
        )

    results = await asyncio.gather(click(), click(), click(), return_exceptions=True)
    await settled()
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(refused) == 2 and all(isinstance(r, actions.ApprovalRefused) for r in refused)
    kinds = await letta_kinds(letta_gateway, letta_conversation)
    assert kinds.count("approval_response_message") == 1
    assert "keep-alive" not in kinds  # Letta takes a second answer as a new turn: none came


@pytest.mark.django_db(transaction=True)
async def test_another_persons_answer_is_refused_on_the_socket_and_the_url(
    letta_gateway, letta_conversation, user, other_user, make_conversation
):
    import json

    from channels.db import database_sync_to_async
    from django.test import Client

    from tests.websocket import open_socket

    approval = await asked(letta_conversation)
    # Her socket on his conversation is closed before any frame.
    from chat.consumers import CLOSE_NOT_FOUND

    refused, _, _ = await open_socket(letta_conversation.letta_id, user=other_user)
    assert (await refused.receive_output(timeout=10))["code"] == CLOSE_NOT_FOUND
    # On a conversation of her own, his request's id is refused.
    theirs = await database_sync_to_async(make_conversation)(other_user)
    communicator, connected, _ = await open_socket(theirs.letta_id, user=other_user)
    assert connected
    await communicator.send_to(
        text_data=json.dumps({"type": "approval", "approval": approval.pk, "decision": "approve"})
    )
    frame = await communicator.receive_from(timeout=10)
    assert "no such approval request" in frame.lower()
    await communicator.disconnect()

    def by_url():
        mallory = Client()
        mallory.force_login(other_user)
        data = {"approval": approval.pk, "decision": "deny", "reason": "mine now"}
        return (
            mallory.post(f"/c/{letta_conversation.letta_id}/approval/", data).status_code,
            mallory.post(f"/c/{theirs.letta_id}/approval/", data).status_code,
        )

    assert await database_sync_to_async(by_url)() == (404, 409)
    kinds = await letta_kinds(letta_gateway, letta_conversation)
    assert "approval_response_message" not in kinds
    assert approval.pending


@pytest.mark.django_db(transaction=True)
async def test_approve_through_the_url(letta_gateway, letta_conversation, user):
    from channels.db import database_sync_to_async
    from django.test import Client

    from conversations.models import Approval

    approval = await asked(letta_conversation)

    def post():
        client = Client()
        client.force_login(user)
        url = f"/c/{letta_conversation.letta_id}/approval/"
        return client.post(url, {"approval": approval.pk, "decision": "approve"}).status_code

    assert await database_sync_to_async(post)() == 302  # back to the conversation
    await settled()
    answered = await database_sync_to_async(Approval.objects.get)(pk=approval.pk)
    assert answered.status == Approval.Status.APPROVED
    kinds = await letta_kinds(letta_gateway, letta_conversation)
    assert kinds.count("approval_response_message") == 1 and kinds[-1] == "assistant_message"
