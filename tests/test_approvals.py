"""Tool approvals, against the scripted gateway: a reply that asks, the owner's answer (once),
sends while it waits, requests found pending from elsewhere, answers that never reach Letta.

``tests/integration/test_approvals_letta.py`` does the same against the real Letta server.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from conversations import actions, approvals, events
from conversations.models import Approval, Message, Run
from conversations.relay import registry
from conversations.sinks import CollectingSink
from letta_gateway import (
    ApprovalPending,
    ApprovalRequest,
    ContentDelta,
    LettaUnavailable,
    MessageInfo,
    RunStarted,
    Stopped,
    ToolCallRequest,
)
from tests.page_model import PageModel
from tests.websocket import open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)

TOOL = "conversation_search"
ARGS = '{"query": "<script>alert(1)</script> & tea"}'


def asks(run: str = "run-1", message_id: str = "m-ask", call: str = "call-1") -> list:
    """A reply that asks for approval, its arguments in pieces, as Letta 0.16.8 streams it."""
    return [
        RunStarted(run, 1),
        ContentDelta("m-think", "reasoning", "I should search.", run, 2),
        ApprovalRequest(message_id, call, TOOL, "", run, 3),
        ApprovalRequest(message_id, call, "", ARGS[:10], run, 4),
        ApprovalRequest(message_id, call, "", ARGS[10:], run, 5),
        Stopped("requires_approval"),
    ]


def goes_on(text: str = "Found it.", run: str = "run-2") -> list:
    return [
        RunStarted(run, 1),
        ContentDelta("m-after", "assistant", text, run, 2),
        Stopped("end_turn"),
    ]


def card_of(page: PageModel, approval: Approval):
    return page.messages.find(f"approval-{approval.message_id}")


def has_buttons(node) -> bool:
    """Whether the card still offers Approve / Deny."""
    if node.attrs.get("value") in ("approve", "deny"):
        return True
    return any(not isinstance(c, str) and has_buttons(c) for c in node.children)


def page_text(page: PageModel) -> str:
    return " ".join(text for _, text in page.articles())


async def settled() -> None:
    await asyncio.wait_for(registry.wait_all_done(), 20)  # a hang fails, with a trace


async def pending_of(conversation) -> Approval | None:
    return await database_sync_to_async(approvals.approval_pending)(conversation=conversation)


async def refreshed(approval: Approval) -> Approval:
    return await database_sync_to_async(
        lambda: Approval.objects.select_related("message").get(pk=approval.pk)
    )()


async def ask(conversation, fake_gateway, sink: CollectingSink | None = None) -> Approval:
    fake_gateway.enqueue(asks())
    await actions.message_send(
        conversation=conversation, text="find tea", otid="", also=(sink,) if sink else ()
    )
    await settled()
    approval = await pending_of(conversation)
    assert approval is not None
    return approval


async def test_a_reply_that_asks_ends_with_the_request_pending_and_no_note(
    conversation, fake_gateway
):
    sink = CollectingSink()
    approval = await ask(conversation, fake_gateway, sink)

    assert approval.tool_calls == [{"id": "call-1", "name": TOOL, "arguments": ARGS}]
    assert approval.message.message_type == Message.Type.APPROVAL
    requested = sink.of(events.ApprovalRequested)
    assert [e.approval.pk for e in requested] == [approval.pk]
    # The request says it all: no "waiting for approval" note, and the run is over (not busy).
    types = await database_sync_to_async(
        lambda: list(conversation.messages.values_list("message_type", flat=True))
    )()
    assert Message.Type.ERROR not in types
    run = await database_sync_to_async(lambda: conversation.runs.get())()
    assert (run.status, run.stop_reason) == (Run.Status.DONE, "requires_approval")
    assert sink.of(events.ReplyFinished)


async def test_the_card_shows_the_tool_and_escaped_arguments_live_and_after_reload(
    conversation, user, fake_gateway
):
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    page = PageModel()
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    page.apply(await communicator.receive_from(timeout=5))
    approval = await ask(conversation, fake_gateway)
    frames = []
    while card_of(page, approval) is None:
        frames.append(await communicator.receive_from(timeout=5))
        page.apply(frames[-1])
    card = card_of(page, approval)
    assert card is not None and has_buttons(card)
    assert TOOL in card.text() and "<script>alert(1)</script>" in card.text()  # as text
    assert "<script>alert" not in "".join(frames)  # escaped in the HTML

    client = Client()
    await database_sync_to_async(client.force_login)(user)
    body = (await database_sync_to_async(client.get)(conversation.get_absolute_url())).text
    assert f'id="approval-{approval.message_id}"' in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body and "<script>alert(1)" not in body
    assert 'value="approve"' in body and 'value="deny"' in body
    await communicator.disconnect()


async def test_approving_over_the_socket_sends_one_answer_and_the_reply_goes_on_in_every_tab(
    conversation, user, fake_gateway
):
    approval = await ask(conversation, fake_gateway)
    tabs = []
    for _ in range(2):
        communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
        assert connected
        await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
        page = PageModel()
        page.apply(await communicator.receive_from(timeout=5))
        assert card_of(page, approval) is not None
        tabs.append((communicator, page))
    fake_gateway.enqueue(goes_on("Found it."))
    first = tabs[0][0]
    await first.send_to(
        text_data=json.dumps({"type": "approval", "approval": approval.pk, "decision": "approve"})
    )
    await settled()
    for communicator, page in tabs:
        while "Found it." not in page_text(page):
            page.apply(await communicator.receive_from(timeout=5))
        card = card_of(page, approval)
        assert card is not None and "Approved" in card.text()
        assert not has_buttons(card)  # gone, in every tab
        await communicator.disconnect()
    assert [
        [(a.tool_call_id, a.approve) for a in sent["answers"]]
        for sent in fake_gateway.approvals_sent
    ] == [[("call-1", True)]]
    answered = await refreshed(approval)
    assert (answered.status, answered.answered_by_id) == (Approval.Status.APPROVED, user.pk)


async def test_an_answer_given_the_moment_the_request_shows_is_taken(
    conversation, user, fake_gateway
):
    """A request is shown once its run is over: answered at once (a quick click, the terminal's
    prompt), the answer starts the next run instead of meeting this one as "still answering"."""

    class AnswersAtOnce(CollectingSink):
        answered: list[Approval] = []

        async def emit(self, conversation, event, stamp) -> None:
            await super().emit(conversation, event, stamp)
            if isinstance(event, events.ApprovalRequested):
                self.answered.append(
                    await actions.approval_answer(
                        conversation=conversation,
                        user=user,
                        approval_pk=event.approval.pk,
                        approve=True,
                    )
                )

    sink = AnswersAtOnce()
    fake_gateway.enqueue(asks())
    fake_gateway.enqueue(goes_on("Found it."))
    await actions.message_send(conversation=conversation, text="find tea", otid="", also=(sink,))
    await settled()
    assert len(sink.answered) == 1
    assert len(fake_gateway.approvals_sent) == 1
    assert ("assistant", "Found it.") in [
        (m.message_type, m.content)
        for m in await database_sync_to_async(lambda: list(conversation.messages.all()))()
    ]


async def test_a_denial_carries_its_reason_to_letta_and_shows_it(conversation, user, fake_gateway):
    approval = await ask(conversation, fake_gateway)
    fake_gateway.enqueue(goes_on("Fine, I will not."))
    sink = CollectingSink()
    await actions.approval_answer(
        conversation=conversation,
        user=user,
        approval_pk=approval.pk,
        approve=False,
        reason="  not <b>now</b>  ",
        also=(sink,),
    )
    await settled()
    [sent] = fake_gateway.approvals_sent
    assert [(a.tool_call_id, a.approve, a.reason) for a in sent["answers"]] == [
        ("call-1", False, "not <b>now</b>")
    ]
    [answered] = sink.of(events.ApprovalAnswered)
    assert answered.approval.status == Approval.Status.DENIED
    from chat import websink

    html = "".join(websink.html_of(conversation, answered))
    assert "Denied: not &lt;b&gt;now&lt;/b&gt;" in html
    assert sink.of(events.ReplyFinished)


async def test_a_double_click_sends_one_answer(conversation, user, fake_gateway):
    approval = await ask(conversation, fake_gateway)
    fake_gateway.enqueue(goes_on())

    async def answer():
        return await actions.approval_answer(
            conversation=conversation, user=user, approval_pk=approval.pk, approve=True
        )

    results = await asyncio.gather(answer(), answer(), answer(), return_exceptions=True)
    await settled()
    taken = [r for r in results if isinstance(r, Approval)]
    refused = [r for r in results if not isinstance(r, Approval)]
    assert len(taken) == 1 and len(refused) == 2
    assert all(isinstance(r, actions.ApprovalRefused) for r in refused), refused
    assert {str(r) for r in refused} == {approvals.ALREADY_ANSWERED}
    assert len(fake_gateway.approvals_sent) == 1
    # And after it is over: still refused, still one.
    with pytest.raises(actions.ApprovalRefused, match="answered already"):
        await answer()
    assert len(fake_gateway.approvals_sent) == 1


async def test_someone_elses_or_a_forged_request_is_refused_and_nothing_is_sent(
    conversation, user, other_user, make_conversation, fake_gateway
):
    approval = await ask(conversation, fake_gateway)
    with pytest.raises(actions.ApprovalRefused, match="no such approval request"):
        await actions.approval_answer(
            conversation=conversation, user=other_user, approval_pk=approval.pk, approve=True
        )
    for forged in (0, approval.pk + 1000):
        with pytest.raises(actions.ApprovalRefused, match="no such approval request"):
            await actions.approval_answer(
                conversation=conversation, user=user, approval_pk=forged, approve=True
            )
    # The request of one conversation cannot be answered through another one of one's own.
    mine = await database_sync_to_async(make_conversation)(user)
    with pytest.raises(actions.ApprovalRefused, match="no such approval request"):
        await actions.approval_answer(
            conversation=mine, user=user, approval_pk=approval.pk, approve=True
        )
    assert fake_gateway.approvals_sent == []
    assert (await refreshed(approval)).status == Approval.Status.PENDING


async def test_a_socket_answer_that_is_not_taken_says_why(conversation, user, fake_gateway):
    approval = await ask(conversation, fake_gateway)
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    for frame, expected in (
        ({"approval": approval.pk + 1, "decision": "approve"}, "no such approval request"),
        ({"approval": approval.pk, "decision": "maybe"}, "could not be read"),
        ({"approval": approval.pk, "decision": "deny", "reason": ["x"]}, "could not be read"),
    ):
        await communicator.send_to(text_data=json.dumps({"type": "approval", **frame}))
        answer = await communicator.receive_from(timeout=5)
        assert 'id="composer-error"' in answer and expected in answer.lower(), answer
    await communicator.disconnect()
    assert fake_gateway.approvals_sent == []


async def test_a_send_while_pending_says_answer_it_first_and_keeps_the_text(
    conversation, user, fake_gateway
):
    approval = await ask(conversation, fake_gateway)
    with pytest.raises(actions.ApprovalPendingError):
        await actions.message_send(conversation=conversation, text="hello?", otid="")
    communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    await communicator.receive_from(timeout=5)
    await send_message(communicator, "hello again?")
    frame = await communicator.receive_from(timeout=5)
    assert 'id="composer-error"' in frame and "approve or deny it first" in frame
    assert 'id="composer"' not in frame  # the box (and its text) is left alone
    assert "still answering" not in frame
    await communicator.disconnect()
    assert len(fake_gateway.sent) == 1  # only the message that asked
    assert (
        await database_sync_to_async(
            lambda: conversation.messages.filter(content__startswith="hello").count()
        )()
        == 0
    )
    assert (await refreshed(approval)).pending


async def test_a_request_answered_in_another_client_no_longer_blocks_a_send(
    conversation, fake_gateway
):
    approval = await ask(conversation, fake_gateway)
    # Letta moved on: the request was answered elsewhere, and more was said after it.
    fake_gateway.stored[conversation.letta_id] = [
        MessageInfo(approval.message.letta_id, "approval", ARGS, datetime.now(UTC), TOOL),
        MessageInfo("m-elsewhere", "tool_return", "done", datetime.now(UTC), "success"),
    ]
    fake_gateway.enqueue_text("Hi again.")
    sink = CollectingSink()
    sent = await actions.message_send(
        conversation=conversation, text="hello?", otid="", also=(sink,)
    )
    await settled()
    assert sent.started
    assert (await refreshed(approval)).status == Approval.Status.RESOLVED
    assert [e.approval.pk for e in sink.of(events.ApprovalAnswered)] == [approval.pk]


async def test_a_send_that_meets_a_request_made_elsewhere_shows_it_and_gives_the_text_back(
    conversation, user, fake_gateway
):
    # Another client made the agent ask; lettachat's mirror does not know yet.
    fake_gateway.stored[conversation.letta_id] = [
        MessageInfo("m-their", "user", "use the tool", datetime.now(UTC)),
        MessageInfo(
            "m-ask-elsewhere",
            "approval",
            ARGS,
            datetime.now(UTC),
            TOOL,
            tool_calls=(ToolCallRequest("call-9", TOOL, ARGS),),
        ),
    ]
    fake_gateway.enqueue([RunStarted("run-x", 1), Stopped("error"), ApprovalPending("run-x")])
    sink = CollectingSink()
    sent = await actions.message_send(
        conversation=conversation, text="hello?", otid="", sender="terminal", also=(sink,)
    )
    await settled()
    given_back = sink.of(events.TextGivenBack)
    assert [(e.text, e.sender) for e in given_back] == [("hello?", "terminal")]
    message = await database_sync_to_async(lambda: Message.objects.get(pk=sent.message.pk))()
    assert message.error == approvals.ANSWER_FIRST
    approval = await pending_of(conversation)
    assert approval is not None and approval.tool_calls[0]["id"] == "call-9"
    assert [e.approval.pk for e in sink.of(events.ApprovalRequested)] == [approval.pk]
    # And it can be answered from here.
    fake_gateway.enqueue(goes_on())
    await actions.approval_answer(
        conversation=conversation, user=user, approval_pk=approval.pk, approve=True
    )
    await settled()
    assert [a.tool_call_id for a in fake_gateway.approvals_sent[0]["answers"]] == ["call-9"]


async def test_an_answer_that_never_reached_letta_can_be_given_again(
    conversation, user, fake_gateway
):
    approval = await ask(conversation, fake_gateway)
    fake_gateway.enqueue(LettaUnavailable("down", reached=False))
    sink = CollectingSink()
    await actions.approval_answer(
        conversation=conversation, user=user, approval_pk=approval.pk, approve=True, also=(sink,)
    )
    await settled()
    again = await refreshed(approval)
    assert again.pending
    assert [e.approval.status for e in sink.of(events.ApprovalAnswered)] == [
        Approval.Status.APPROVED,
        Approval.Status.PENDING,
    ]
    fake_gateway.enqueue(goes_on())
    await actions.approval_answer(
        conversation=conversation, user=user, approval_pk=approval.pk, approve=True
    )
    await settled()
    assert len(fake_gateway.approvals_sent) == 1


async def test_stop_applies_to_the_continuation(conversation, user, fake_gateway):
    approval = await ask(conversation, fake_gateway)
    gate = fake_gateway.enqueue(goes_on("a long continuation"), hold_after=2)
    sink = CollectingSink()
    await actions.approval_answer(
        conversation=conversation, user=user, approval_pk=approval.pk, approve=True, also=(sink,)
    )
    while not sink.of(events.DraftStarted):
        await asyncio.sleep(0.01)
    assert await actions.reply_stop(conversation=conversation) is not None
    await settled()
    assert gate is not None
    assert conversation.letta_id in fake_gateway.cancels  # Letta was told to stop the run
    assert [e.outcome for e in sink.of(events.ReplyFinished)] == ["stopped"]


def test_the_url_refuses_a_forged_or_someone_elses_request(
    conversation, user, other_user, make_conversation, fake_gateway
):
    approval, _ = approvals.approval_record(
        conversation=conversation,
        letta_id="m-ask",
        tool_calls=[ToolCallRequest("call-1", TOOL, ARGS)],
    )
    mallory = Client()
    mallory.force_login(other_user)
    url = f"/c/{conversation.letta_id}/approval/"
    data = {"approval": approval.pk, "decision": "approve"}
    assert mallory.post(url, data).status_code == 404  # not her conversation
    theirs = make_conversation(other_user)
    response = mallory.post(f"/c/{theirs.letta_id}/approval/", data)  # her own, his request
    assert response.status_code == 409 and "no such approval request" in response.text
    owner = Client()
    owner.force_login(user)
    assert owner.post(url, {"approval": approval.pk, "decision": "?"}).status_code == 400
    approval.refresh_from_db()
    assert approval.pending and fake_gateway.approvals_sent == []


async def test_a_resync_finds_a_request_letta_waits_on_and_earlier_ones_answered(
    conversation, fake_gateway
):
    from conversations import sync
    from letta_gateway import ConversationInfo

    fake_gateway.conversations[conversation.letta_id] = ConversationInfo(
        conversation.letta_id, "agent-visible", "", datetime.now(UTC), None
    )
    at = datetime.now(UTC)
    fake_gateway.stored[conversation.letta_id] = [
        MessageInfo("m-1", "user", "use it", at),
        MessageInfo(
            "m-old", "approval", "{}", at, TOOL, tool_calls=(ToolCallRequest("c-0", TOOL, "{}"),)
        ),
        MessageInfo("m-r", "tool_return", "done", at, "success"),
        MessageInfo("m-2", "user", "again", at),
        MessageInfo(
            "m-new", "approval", ARGS, at, TOOL, tool_calls=(ToolCallRequest("c-1", TOOL, ARGS),)
        ),
    ]
    await database_sync_to_async(sync.conversation_resync)(
        gateway=fake_gateway, conversation=conversation
    )
    states = await database_sync_to_async(
        lambda: sorted(
            (a.message.letta_id, a.status)
            for a in Approval.objects.filter(conversation=conversation).select_related("message")
        )
    )()
    assert states == [("m-new", "pending"), ("m-old", "resolved")]
    with pytest.raises(actions.ApprovalPendingError):
        await actions.message_send(conversation=conversation, text="hello?", otid="")


async def test_several_tool_calls_in_one_request_are_answered_together(
    conversation, user, fake_gateway
):
    """Letta 0.16.8 wants every call of a request answered in one message: the card's buttons
    answer them all."""
    fake_gateway.enqueue(
        [
            RunStarted("run-1", 1),
            ApprovalRequest("m-ask", "call-a", TOOL, '{"query": "a"}', "run-1", 2),
            ApprovalRequest("m-ask", "call-b", "memory_insert", '{"label": "human"}', "run-1", 3),
            Stopped("requires_approval"),
        ]
    )
    await actions.message_send(conversation=conversation, text="do both", otid="")
    await settled()
    approval = await pending_of(conversation)
    assert approval is not None
    assert [c["id"] for c in approval.tool_calls] == ["call-a", "call-b"]
    assert approval.tool_names == f"{TOOL}, memory_insert"
    from chat import websink

    html = "".join(websink.html_of(conversation, events.ApprovalRequested(approval)))
    assert html.count('class="approval-call"') == 2 and "memory_insert" in html
    fake_gateway.enqueue(goes_on())
    await actions.approval_answer(
        conversation=conversation, user=user, approval_pk=approval.pk, approve=False, reason="no"
    )
    await settled()
    [sent] = fake_gateway.approvals_sent
    assert [(a.tool_call_id, a.approve, a.reason) for a in sent["answers"]] == [
        ("call-a", False, "no"),
        ("call-b", False, "no"),
    ]


async def test_an_answer_whose_relay_died_is_followed_by_otid_never_sent_twice(
    conversation, user, fake_gateway, settings
):
    from conversations.relay import reaper

    settings.LETTACHAT_REAP_AFTER_SECONDS = 0
    approval = await ask(conversation, fake_gateway)
    fake_gateway.enqueue(goes_on(), hold_after=0)  # Letta has not named the run yet
    answered = await actions.approval_answer(
        conversation=conversation, user=user, approval_pk=approval.pk, approve=True
    )
    running = registry.running_here(conversation.pk)
    while not fake_gateway.approvals_sent:
        await asyncio.sleep(0.01)
    running.task.cancel()  # the process dies
    with pytest.raises(asyncio.CancelledError):
        await running.task
    fake_gateway.enqueue_resume(goes_on("Found it after all."))
    assert await reaper.reap_once() == 1
    await settled()
    assert len(fake_gateway.approvals_sent) == 1  # never a second answer
    assert fake_gateway.resumed[-1].get("otid") == answered.otid
    texts = await database_sync_to_async(
        lambda: list(conversation.messages.values_list("content", flat=True))
    )()
    assert "Found it after all." in texts
