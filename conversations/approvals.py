"""Tool approvals in the mirror: requests the agent made, and the person's answers.

Letta stops a run whose tool call needs a person's approval (stop reason ``requires_approval``)
and takes no other message in the conversation until every tool call of the request has an
answer. Here a request is a ``Message`` of type ``approval`` (its place in the thread) with an
``Approval`` (its state). Writes here are synchronous services (run them with ``db``); the
events they cause are sent by ``conversations.actions``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from conversations import quotas
from conversations.models import Approval, Conversation, Message, Run
from letta_gateway import ApprovalAnswer, MessageInfo, ToolCallRequest

# Said to a person (and to the terminal): fit to show as they are.
NO_SUCH_REQUEST = "There is no such approval request in this conversation."
ALREADY_ANSWERED = "This request has been answered already; nothing more was sent."
ANSWER_FIRST = (
    "The agent is waiting for your answer to its request to use a tool: approve or deny it "
    "first. Your message is still in the box."
)
REASON_CHARS = 2000


class ApprovalRefused(Exception):
    """An answer that is not taken (unknown request, someone else's, answered already);
    ``str()`` is fit to show."""


class ApprovalPendingError(Exception):
    """A message sent while the conversation waits for an approval: answer that first."""

    def __init__(self, approval: Approval) -> None:
        super().__init__(ANSWER_FIRST)
        self.approval = approval

    def __str__(self) -> str:
        return ANSWER_FIRST


# Reads --------------------------------------------------------------------------------------------


def approval_pending(*, conversation: Conversation) -> Approval | None:
    """The conversation's request waiting for an answer, if any."""
    return (
        Approval.objects.select_related("message")
        .filter(conversation=conversation, status=Approval.Status.PENDING)
        .first()
    )


def approval_get(*, pk: int) -> Approval:
    """One approval with its message (for events: nothing left to read in an event loop)."""
    return Approval.objects.select_related("message").get(pk=pk)


def approval_list_pending() -> QuerySet[Approval]:
    """Every request waiting for an answer, oldest first (for staff)."""
    return (
        Approval.objects.filter(status=Approval.Status.PENDING)
        .select_related("conversation__owner", "conversation__agent", "message")
        .order_by("created_at", "pk")
    )


def arguments_shown(arguments: str) -> str:
    """A tool call's arguments, readable: JSON indented, anything else as it came."""
    try:
        return json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except (ValueError, TypeError):
        return arguments


# Writes -----------------------------------------------------------------------------------------


def approval_record(
    *,
    conversation: Conversation,
    letta_id: str,
    tool_calls: Sequence[ToolCallRequest],
    run: Run | None = None,
    run_id: str = "",
    pending: bool = True,
) -> tuple[Approval, bool]:
    """Mirror one of Letta's approval requests: (its approval, whether it is new here).

    ``pending``: Letta waits for it now (an older pending one is then no longer asked). Made once
    per Letta message, however often it is seen (streamed, then re-read).
    """
    calls = [{"id": c.tool_call_id, "name": c.name, "arguments": c.arguments} for c in tool_calls]
    first = calls[0] if calls else {"name": "", "arguments": ""}
    now = timezone.now()
    with transaction.atomic():
        message, made = Message.objects.get_or_create(
            conversation=conversation,
            letta_id=letta_id,
            message_type=Message.Type.APPROVAL,
            defaults={
                "content": first["arguments"],
                "name": first["name"],
                "run_id": run_id,
                "created_at": now,
            },
        )
        known = Approval.objects.filter(message=message).first()
        if known is not None:
            return known, False
        if pending:
            Approval.objects.filter(
                conversation=conversation, status=Approval.Status.PENDING
            ).update(status=Approval.Status.RESOLVED)
        approval = Approval.objects.create(
            conversation=conversation,
            message=message,
            run=run,
            tool_calls=calls,
            status=Approval.Status.PENDING if pending else Approval.Status.RESOLVED,
        )
        if made:
            Conversation.objects.filter(pk=conversation.pk).update(last_message_at=now)
    approval.message = message
    return approval, True


def approvals_from_letta(
    *, conversation: Conversation, infos: Sequence[MessageInfo], run: Run | None = None
) -> list[Approval]:
    """Mirror the approval requests among ``infos`` (Letta's messages, oldest first, up to its
    last): the last message, if it is one, is pending; earlier ones were answered. Returns the
    approvals new here."""
    shown = [i for i in infos if i.message_type != "system"]
    made = []
    for index, info in enumerate(shown):
        if info.message_type != "approval":
            continue
        approval, new = approval_record(
            conversation=conversation,
            letta_id=info.letta_id,
            tool_calls=info.tool_calls or (ToolCallRequest("", info.name, info.content),),
            run=run,
            run_id=info.run_id,
            pending=index == len(shown) - 1,
        )
        if new:
            made.append(approval)
    return made


def approval_answer(
    *,
    conversation: Conversation,
    user: AbstractBaseUser | AnonymousUser,
    approval_pk: int,
    approve: bool,
    reason: str = "",
    relay_channel: str = "",
    by_staff: bool = False,
) -> tuple[Approval, Run]:
    """Take the owner's answer to the pending request ``approval_pk`` and open the run that
    carries it to Letta: (the answered approval, the run).

    One answer per request, across tabs and processes: the change from pending is a conditional
    update in the transaction that opens the run. Raises ``ApprovalRefused`` (unknown, someone
    else's, answered already), ``ConversationBusy`` (a reply runs), ``QuotaExceeded``.
    ``by_staff``: a staff member denies it from the admin (whose permission the admin checked).
    """
    from conversations.services import ConversationBusy, _ensure_writable

    if not user.is_authenticated or (conversation.owner_id != user.pk and not by_staff):
        raise ApprovalRefused(NO_SUCH_REQUEST)
    approval = Approval.objects.filter(pk=approval_pk, conversation=conversation).first()
    if approval is None:
        raise ApprovalRefused(NO_SUCH_REQUEST)
    if not approval.pending:
        raise ApprovalRefused(ALREADY_ANSWERED)
    _ensure_writable(conversation)
    status = Approval.Status.APPROVED if approve else Approval.Status.DENIED
    reason = reason.strip()[:REASON_CHARS]
    otid = str(uuid.uuid4())
    try:
        with transaction.atomic():
            run = Run.objects.create(
                conversation=conversation, user_message=None, relay_channel=relay_channel
            )
            taken = Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
                status=status,
                reason=reason,
                answered_by=user,
                answered_at=timezone.now(),
                otid=otid,
                answer_run=run,
            )
            if not taken:
                raise ApprovalRefused(ALREADY_ANSWERED)  # rolls the run back
            if not by_staff:  # the owner's places, not staff's, are counted
                quotas.reply_start_check(conversation=conversation)
    except IntegrityError as exc:
        # Another run is running: an answer (this one, clicked twice) or a reply.
        approval.refresh_from_db()
        if not approval.pending:
            raise ApprovalRefused(ALREADY_ANSWERED) from exc
        raise ConversationBusy from exc
    Conversation.objects.filter(pk=conversation.pk).update(last_message_at=timezone.now())
    return approval_get(pk=approval.pk), run


def approval_answers(approval: Approval) -> list[ApprovalAnswer]:
    """What goes to Letta: the same answer for every tool call of the request."""
    approve = approval.status == Approval.Status.APPROVED
    return [
        ApprovalAnswer(str(call.get("id") or ""), approve, approval.reason)
        for call in approval.tool_calls
    ]


def approval_reopen(*, approval: Approval) -> Approval | None:
    """The answer never reached Letta: the request is pending again (None if another one is
    pending meanwhile, or the answer was taken after all)."""
    try:
        with transaction.atomic():
            reopened = Approval.objects.filter(
                pk=approval.pk,
                status__in=[Approval.Status.APPROVED, Approval.Status.DENIED],
            ).update(
                status=Approval.Status.PENDING,
                reason="",
                answered_by=None,
                answered_at=None,
                otid="",
                answer_run=None,
            )
    except IntegrityError:
        return None
    if not reopened:
        return None
    return approval_get(pk=approval.pk)


def approval_resolve(*, approval: Approval, since: datetime | None = None) -> bool:
    """The request is no longer asked (answered in another client): False if it was not
    pending."""
    return bool(
        Approval.objects.filter(pk=approval.pk, status=Approval.Status.PENDING).update(
            status=Approval.Status.RESOLVED, answered_at=since or timezone.now()
        )
    )
