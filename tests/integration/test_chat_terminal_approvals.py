"""Tool approvals in `manage.py chat`, through a pseudo-terminal against the real Letta server.

The agent's ``conversation_search`` needs approval (``test_approvals_letta``'s agent) and the
scripted model calls it: the terminal shows the request and asks ``approve? [y/N/reason]``, and
what it answers is checked against the database and against what Letta stored.
"""

# ruff: noqa: F811  (the fixtures imported below are the tests' arguments)
from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from conversations.models import Agent, Approval, Conversation, Run
from letta_gateway.client import LettaGateway
from tests.integration.test_approvals_letta import (  # noqa: F401 (fixtures)
    ASK,
    TOOL,
    approval_agent,
    approval_agent_info,
    letta_kinds,
    mirror,
)
from tests.integration.test_chat_terminal import (  # noqa: F401 (fixtures)
    CONV_ID,
    Terminal,
    alice,
    chat,
)

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

QUESTION = re.escape("approve? [y/N/reason] ")
REQUEST = re.escape(f"asks to use {TOOL} (your approval first):")
RETURNED = f"Tool {TOOL} returned"


def asking(terminal: Terminal) -> tuple[str, Conversation]:
    """Send the message that makes the agent ask; what the terminal printed up to the question,
    and the conversation (a new one, or the only one)."""
    terminal.child.sendline(ASK)
    start = terminal.at
    match = terminal.expect(QUESTION)
    said = terminal.text[start : match.start()]
    [letta_id] = re.findall(rf"New conversation ({CONV_ID})", said) or [None]
    if letta_id is None:  # the conversation open already
        conversation = Conversation.objects.latest("created_at")
    else:
        conversation = Conversation.objects.get(letta_id=letta_id)
    return said, conversation


def flat(said: str) -> str:
    """What was printed, its lines (wrapped at the terminal's width) joined by single spaces."""
    return " ".join(said.split())


def answers_in_letta(gateway: LettaGateway, conversation: Conversation) -> int:
    kinds = asyncio.run(letta_kinds(gateway, conversation))
    return kinds.count("approval_response_message")


def test_a_request_is_asked_inline_waits_for_an_answer_and_approved_the_reply_goes_on(
    chat, alice, approval_agent: Agent, letta_gateway: LettaGateway
):
    terminal = chat("--user", "alice", "--agent", approval_agent.letta_id)
    said = terminal.run("/help")
    assert "/approve [reason]" in said and "/deny [reason]" in said
    assert (
        "answer approve? [y/N/reason]: y approves, n or Enter denies, any other text denies with "
        "it as the reason"
    ) in flat(said)

    said, conversation = asking(terminal)
    assert re.search(REQUEST, said)
    # The arguments as they are, indented: the tags and the ampersand are not interpreted.
    assert '"query": "<b>tea</b> & biscuits"' in said
    assert "y approves · n/Enter denies · other text denies, as the reason · Ctrl-C: later" in said
    approval = Approval.objects.get(conversation=conversation)
    assert approval.pending

    # Ctrl-C at the question leaves the request waiting; a message then is refused, kept.
    terminal.interrupt()
    said = terminal.until_prompt()
    assert "The request waits: /approve or /deny [reason] answers it." in said
    said = flat(terminal.run("are you there?"))
    assert (
        f"{approval_agent.name} is waiting for your answer to its request to use {TOOL}: "
        "answer it first (/approve, or /deny [reason]). Your text is back at the prompt."
    ) in said
    terminal.expect(re.escape("are you there?"))  # typed again for them, at the prompt
    terminal.child.sendcontrol("u")  # cleared (readline), for the commands below
    assert not conversation.messages.filter(content="are you there?").exists()
    assert answers_in_letta(letta_gateway, conversation) == 0

    # Opening the conversation again shows the request and asks; "y" approves, and the reply
    # Letta continues streams in, as any reply.
    terminal.child.sendline(f"/switch {conversation.letta_id}")
    start = terminal.at
    match = terminal.expect(QUESTION)
    assert re.search(REQUEST, terminal.text[start : match.start()])
    said = terminal.run("y")
    assert f"✓ Approved: {TOOL}." in said
    assert f"{approval_agent.name} is answering" in said
    assert RETURNED in said
    assert said.index("✓ Approved") < said.index(RETURNED)

    approval.refresh_from_db()
    assert approval.status == Approval.Status.APPROVED and approval.answered_by == alice
    assert answers_in_letta(letta_gateway, conversation) == 1
    ours = mirror(conversation)
    assert ours[-1][0] == "assistant" and ours[-1][1].startswith(RETURNED)

    said = terminal.run("/history")
    assert f'? asked to use {TOOL} {{"query": "<b>tea</b> & biscuits"}}' in said

    # Nothing waits now: the message goes, and /approve says there is nothing to approve.
    assert "Nothing in this conversation is waiting for your approval." in terminal.run("/approve")
    assert "Echo: are you there now?" in terminal.run("are you there now?")
    terminal.child.sendline("/quit")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.text


def test_a_denial_with_a_reason_reaches_the_agent_and_an_answer_given_elsewhere_is_refused(
    chat, alice, approval_agent: Agent, letta_gateway: LettaGateway
):
    terminal = chat("--user", "alice", "--agent", approval_agent.letta_id)
    _, conversation = asking(terminal)

    # Any other text denies, with it as the reason (printed as typed: no markup).
    said = terminal.run("not <now>, [b]thanks[/b]")
    assert f"✗ Denied {TOOL}: not <now>, [b]thanks[/b]" in said
    assert RETURNED in said  # the agent was told, and answered
    approval = Approval.objects.get(conversation=conversation)
    assert approval.status == Approval.Status.DENIED
    assert approval.reason == "not <now>, [b]thanks[/b]"
    returns = [text for kind, text in mirror(conversation) if kind == "tool_return"]
    assert returns and "denied" in returns[-1] and "not <now>, [b]thanks[/b]" in returns[-1]
    assert answers_in_letta(letta_gateway, conversation) == 1

    # Asked again; another client (a second terminal here: a browser tab does the same) opens
    # the conversation and approves first. This terminal's answer is then refused, in one line.
    _, again = asking(terminal)
    assert again == conversation
    second = chat("--user", "alice")
    second.child.sendline(f"/switch {conversation.letta_id}")
    second.expect(QUESTION)
    said = second.run("y")
    assert f"✓ Approved: {TOOL}." in said and RETURNED in said

    said = flat(terminal.run("y"))
    assert (
        "This request has been answered already; nothing more was sent. "
        "It was approved elsewhere." in said
    )
    assert answers_in_letta(letta_gateway, conversation) == 2  # one per request
    statuses = list(
        Approval.objects.filter(conversation=conversation)
        .order_by("pk")
        .values_list("status", flat=True)
    )
    assert statuses == [Approval.Status.DENIED, Approval.Status.APPROVED]

    # Empty denies too.
    asking(terminal)
    said = terminal.run("")
    assert f"✗ Denied {TOOL}." in said and RETURNED in said
    for t in (terminal, second):
        t.child.sendline("/quit")
        assert t.exit_status() == 0
        assert "Traceback" not in t.text


def test_ctrl_c_stops_the_reply_an_approval_continues_keeping_its_start(
    chat, alice, approval_agent: Agent, letta_gateway: LettaGateway
):
    terminal = chat("--user", "alice", "--agent", approval_agent.letta_id)
    # The model's reply after the tool's result sends its first word, then pauses a minute.
    terminal.child.sendline(f"[[then_stall:60]] {ASK}")
    terminal.expect(QUESTION)
    conversation = Conversation.objects.get(owner=alice)
    terminal.child.sendline("y")
    terminal.expect(re.escape(f"✓ Approved: {TOOL}."))
    terminal.expect(r"\nTool")  # the continuation's first word
    terminal.interrupt()
    said = terminal.until_prompt(timeout=30)
    assert "Stopped. The partial reply is kept." in said

    approval = Approval.objects.get(conversation=conversation)
    assert approval.status == Approval.Status.APPROVED
    assert approval.answer_run is not None
    assert approval.answer_run.status == Run.Status.STOPPED
    partial = conversation.messages.filter(message_type="assistant").latest("created_at")
    assert partial.content.startswith("Tool") and partial.error == "Stopped."
    assert answers_in_letta(letta_gateway, conversation) == 1

    # Letta let go of the stopped run: the next message is answered.
    assert "Echo: after the stop" in terminal.run("after the stop")
    terminal.child.sendline("/quit")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.text


def test_a_request_made_in_another_client_is_found_by_a_message_asked_and_the_text_kept(
    chat, alice, approval_agent: Agent, letta_gateway: LettaGateway
):
    terminal = chat("--user", "alice", "--agent", approval_agent.letta_id)
    said = terminal.run("/new")
    [letta_id] = re.findall(rf"New conversation ({CONV_ID})", said)
    conversation = Conversation.objects.get(letta_id=letta_id)

    async def ask_elsewhere() -> (
        None
    ):  # another client makes the agent ask; the mirror never saw it
        async for _ in letta_gateway.astream_reply(
            conversation_id=letta_id, text=ASK, otid=str(uuid.uuid4())
        ):
            pass

    asyncio.run(ask_elsewhere())
    assert not Approval.objects.filter(conversation=conversation).exists()

    # A message meets it: Letta refuses the message, the request is shown and asked here.
    terminal.child.sendline("hi there")
    start = terminal.at
    match = terminal.expect(QUESTION)
    said = flat(terminal.text[start : match.start()])
    assert re.search(REQUEST, said)
    assert (
        "Your message: the agent is waiting for your answer to its request to use a tool first."
        in said
    )
    said = terminal.run("y")
    assert f"✓ Approved: {TOOL}." in said and RETURNED in said
    assert "Your text is back at the prompt." in said
    terminal.expect(re.escape("hi there"))  # at the prompt again: Enter sends it now
    said = terminal.run("")
    assert "Echo: hi there" in said
    assert answers_in_letta(letta_gateway, conversation) == 1
    terminal.child.sendline("/quit")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.text
