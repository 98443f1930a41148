"""Every write that other clients must hear about, and the events it sends (after the commit).

The consumer, the terminal chat and the views call these; none of them publishes itself. A write
goes through a service (``conversations.services``) in a database thread, which commits before it
returns; only then are its events emitted to the sinks (``conversations.sinks``). Starting and
following up a reply (a retry after a stop) is decided here too: the relay only reports how a
reply ended.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils import timezone

from conversations import approvals, quotas, selectors, services, sinks
from conversations.events import (
    ApprovalAnswered,
    ConversationActive,
    Event,
    MessageAdded,
    MessageChanged,
    TextGivenBack,
)
from conversations.models import Approval, Conversation, Message, Run
from conversations.relay import (
    UNCONFIRMED,
    UNREAD,
    Finished,
    ReplyRelay,
    Unread,
    relay_channel_new,
    request_stop,
)
from conversations.relay import registry as relays
from letta_gateway import LettaError, get_gateway
from lettachat.aio import db

logger = logging.getLogger(__name__)

# Raised to the caller, who tells the person: the conversation is answering, or takes no more.
ConversationBusy = services.ConversationBusy
ConversationReadOnly = services.ConversationReadOnly
# A message sent while the agent waits for an approval; an answer that is not taken.
ApprovalPendingError = approvals.ApprovalPendingError
ApprovalRefused = approvals.ApprovalRefused


@dataclass(frozen=True)
class Sent:
    message: Message
    started: bool  # False: the same message (its otid) was sent before; nothing new happened


async def message_send(
    *,
    conversation: Conversation,
    text: str,
    otid: str,
    sender: str = "",
    also: tuple[sinks.Sink, ...] = (),
) -> Sent:
    """Record the person's message, show it everywhere, and start the reply.

    ``sender``: the sending client's address (its text comes back there if the agent does not
    take it). ``also``: sinks of the caller's own, told this and the whole reply. Raises
    ``ConversationBusy`` while a reply runs, ``ConversationReadOnly`` for a closed conversation,
    ``ApprovalPendingError`` while the agent waits for an answer to an approval request.
    """
    untitled = not conversation.summary
    otid = otid or str(uuid.uuid4())  # one made by the client makes its resends recognisable
    channel = await relay_channel_new()
    send = db(services.message_send)
    try:
        message, run, cursor = await send(
            conversation=conversation, text=text, otid=otid, relay_channel=channel
        )
    except approvals.ApprovalPendingError as exc:
        if not await _approval_gone(conversation=conversation, approval=exc.approval, also=also):
            raise
        message, run, cursor = await send(
            conversation=conversation, text=text, otid=otid, relay_channel=channel
        )
    if run is None:
        return Sent(message, started=False)  # sent before: already shown and answered
    # Shown by the relay once its request to Letta is on its way, before anything of the reply.
    await _relay_start(
        conversation=conversation,
        run=run,
        user_message=message,
        sender=sender,
        channel=channel,
        also=also,
        announce=(MessageAdded(message), ConversationActive(conversation, retitled=untitled)),
        cursor=cursor,
    )
    return Sent(message, started=True)


async def message_retry(
    *,
    conversation: Conversation,
    message: Message,
    sender: str = "",
    also: tuple[sinks.Sink, ...] = (),
) -> bool:
    """Send a failed message again. False when a reply is still running.

    Never a second turn in Letta: a message whose fate was unknown keeps its otid, so that Letta
    re-attaches to the turn it has, if it has one; others are new turns. Raises
    ``quotas.QuotaExceeded`` when the person has the most replies running they may.
    """
    unconfirmed = message.error == UNCONFIRMED
    try:
        message, run, cursor = await db(services.message_resend)(
            conversation=conversation, message=message, keep_otid=unconfirmed
        )
    except services.ConversationBusy:
        return False
    assert run is not None  # a resend always opens a run
    await sinks.emit(conversation, MessageChanged(message), also=also)
    await _relay_start(
        conversation=conversation,
        run=run,
        user_message=message,
        sender=sender,
        also=also,
        cursor=cursor,
    )
    return True


async def approval_answer(
    *,
    conversation: Conversation,
    user: AbstractBaseUser | AnonymousUser,
    approval_pk: int,
    approve: bool,
    reason: str = "",
    sender: str = "",
    also: tuple[sinks.Sink, ...] = (),
    by_staff: bool = False,
) -> Approval:
    """The owner's answer to the pending approval request ``approval_pk``: every client sees it
    answered, and the reply goes on (streamed like any reply: resume and Stop apply).

    Exactly one answer reaches Letta, however often it is given (two tabs, a double click).
    ``by_staff``: a staff member answers (denies) from the admin instead of the owner.
    Raises ``ApprovalRefused`` (unknown request, someone else's, answered already: ``str()`` says
    which), ``ConversationBusy``, ``ConversationReadOnly``, ``quotas.QuotaExceeded``.
    """
    channel = await relay_channel_new()
    approval, run = await db(approvals.approval_answer)(
        conversation=conversation,
        user=user,
        approval_pk=approval_pk,
        approve=approve,
        reason=reason,
        relay_channel=channel,
        by_staff=by_staff,
    )
    await sinks.emit(conversation, ApprovalAnswered(approval), also=also)
    await sinks.emit(conversation, ConversationActive(conversation), also=also)
    await _relay_start(
        conversation=conversation,
        run=run,
        user_message=None,
        approval=approval,
        sender=sender,
        channel=channel,
        also=also,
    )
    return approval


async def _approval_gone(
    *, conversation: Conversation, approval: Approval, also: tuple[sinks.Sink, ...] = ()
) -> bool:
    """Whether a request pending here was answered elsewhere (Letta has moved on past it); if
    so it is marked so, and every client is told. False when Letta cannot be asked."""
    try:
        later = await get_gateway().alist_messages(
            conversation_id=conversation.letta_id, after=approval.message.letta_id, limit=5
        )
    except LettaError as exc:
        logger.info("could not ask Letta about approval %s: %s", approval.pk, exc)
        return False
    if not [m for m in later if m.message_type != "system"]:
        return False
    if await db(approvals.approval_resolve)(approval=approval):
        resolved = await db(approvals.approval_get)(pk=approval.pk)
        await sinks.emit(conversation, ApprovalAnswered(resolved), also=also)
    return True


async def reply_stop(*, conversation: Conversation, retry: bool = False) -> Run | None:
    """Stop the running reply (then send its message again, with ``retry``); None if nothing
    runs. The stop is recorded with the run, so whichever relay follows it stops it, in whichever
    process (one that takes the run over later included); that relay tells Letta, retrying until
    Letta confirms. Pressing Stop again asks nothing more of anyone."""
    run = await db(selectors.run_active)(conversation=conversation)
    if run is None:
        return None
    if await db(services.run_request_stop)(run=run) and run.relay_channel:
        await request_stop(run.relay_channel, retry=retry)
    return run


async def reply_adopt(*, run: Run, heard_before: datetime) -> bool:
    """Follow a run whose relay has been silent since ``heard_before`` (its process died), in this
    process. False if another process took it first."""
    conversation, user_message = run.conversation, run.user_message  # read with the run
    if relays.running_here(conversation.pk) is not None:
        return False
    if not await db(services.run_claim)(run=run, heard_before=heard_before):
        return False
    approval = await db(_approval_answered_by)(run)
    await _relay_start(
        conversation=conversation,
        run=run,
        user_message=user_message,
        resume=True,
        approval=approval,
    )
    return True


TakeOver = Literal["taken", "alive", "gone"]


async def reply_take_over(*, conversation: Conversation, run: Run, stale_channel: str) -> TakeOver:
    """Follow a run whose relay did not answer, in this process, if that relay is gone.

    "taken": followed here now; "alive": its relay still says it is alive (it is slow to
    answer, say while Letta hangs): it is left to answer; "gone": the run ended, or another
    relay follows it now.
    """
    here = relays.running_here(conversation.pk)
    if here is not None:
        return "alive" if here.channel == stale_channel else "gone"
    heard_before = timezone.now() - timedelta(seconds=relay_presumed_gone_after())
    claimed = await db(services.run_claim)(
        run=run, stale_channel=stale_channel, heard_before=heard_before
    )
    if not claimed:
        alive = await db(services.run_relay_alive)(run=run, channel=stale_channel)
        return "alive" if alive else "gone"
    user_message = await db(lambda: run.user_message)()
    approval = await db(_approval_answered_by)(run)
    await _relay_start(
        conversation=conversation,
        run=run,
        user_message=user_message,
        resume=True,
        approval=approval,
    )
    return "taken"


def relay_presumed_gone_after() -> float:
    """Seconds without a heartbeat after which a page takes a relay for dead: three missed
    beats, so that a busy process's late beat is not mistaken for a death."""
    return 3 * float(settings.LETTACHAT_RELAY_HEARTBEAT_SECONDS)


def _approval_answered_by(run: Run) -> Approval | None:
    """The approval whose answer ``run`` carries to Letta, if it carries one."""
    return Approval.objects.select_related("message").filter(answer_run=run).first()


async def _relay_start(
    *,
    conversation: Conversation,
    run: Run,
    user_message: Message | None,
    sender: str = "",
    resume: bool = False,
    channel: str = "",
    also: tuple[sinks.Sink, ...] = (),
    approval: Approval | None = None,
    announce: tuple[Event, ...] = (),
    cursor: str | Unread | None = UNREAD,
) -> ReplyRelay:
    async def after(finished: Finished) -> None:
        # An answer that never reached Letta: the request waits for one again.
        answer = finished.approval
        if answer is not None and finished.outcome == "failed" and not finished.run_started:
            reopened = await db(approvals.approval_reopen)(approval=answer)
            if reopened is not None:
                await sinks.emit(conversation, ApprovalAnswered(reopened), also=also)
        # Retry (after a stop): the same message again, as a new turn.
        if finished.retry_requested and finished.user_message is not None:
            try:
                await message_retry(
                    conversation=conversation,
                    message=finished.user_message,
                    sender=finished.sender,
                    also=also,
                )
            except quotas.QuotaExceeded:  # the person's other replies took the places meanwhile
                text = TextGivenBack(finished.user_message.content, finished.sender)
                await sinks.emit(conversation, text, also=also)

    relay = ReplyRelay(
        conversation=conversation,
        run=run,
        user_message=user_message,
        sender=sender,
        resume=resume,
        sinks=also,
        on_finished=after,
        approval=approval,
        announce=announce,
        cursor=cursor,
    )
    await relay.open(channel)
    relay.start()
    return relay


async def relays_hand_over() -> None:
    """This process is going away: its relays stop, and their runs are left for another
    process to take over at once (the runs go on in Letta)."""
    running = relays.all_running()
    await db(services.runs_hand_over)(run_pks=[r.run.pk for r in running])
    for relay in running:
        if relay.task is not None:
            relay.task.cancel()
