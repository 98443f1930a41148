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
