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

from conversations import quotas, selectors, services, sinks
from conversations.events import ConversationActive, MessageAdded, MessageChanged, TextGivenBack
from conversations.models import Conversation, Message, Run
from conversations.relay import Finished, ReplyRelay, relay_channel_new, request_stop
from conversations.relay import registry as relays
from letta_gateway import LettaError, get_gateway
from lettachat.aio import db

logger = logging.getLogger(__name__)

# Raised to the caller, who tells the person: the conversation is answering, or takes no more.
ConversationBusy = services.ConversationBusy
ConversationReadOnly = services.ConversationReadOnly


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
    ``ConversationBusy`` while a reply runs, ``ConversationReadOnly`` for a closed conversation.
    """
    untitled = not conversation.summary
    otid = otid or str(uuid.uuid4())  # one made by the client makes its resends recognisable
    channel = await relay_channel_new()
    message, run = await db(services.message_send)(
        conversation=conversation, text=text, otid=otid, relay_channel=channel
    )
    if run is None:
        return Sent(message, started=False)  # sent before: already shown and answered
    await sinks.emit(conversation, MessageAdded(message), also=also)
    await sinks.emit(conversation, ConversationActive(conversation, retitled=untitled), also=also)
    await _relay_start(
        conversation=conversation,
        run=run,
        user_message=message,
        sender=sender,
        channel=channel,
        also=also,
    )
    return Sent(message, started=True)


async def message_retry(
    *,
    conversation: Conversation,
    message: Message,
    sender: str = "",
    also: tuple[sinks.Sink, ...] = (),
) -> bool:
    """Send a failed message again, as a new turn. False when a reply is still running.

    Raises ``quotas.QuotaExceeded`` when the person has the most replies running they may.
    """
    try:
        message, run = await db(services.message_resend)(conversation=conversation, message=message)
    except services.ConversationBusy:
        return False
    await sinks.emit(conversation, MessageChanged(message), also=also)
    await _relay_start(
        conversation=conversation, run=run, user_message=message, sender=sender, also=also
    )
    return True


async def reply_stop(*, conversation: Conversation, retry: bool = False) -> Run | None:
    """Ask the running reply's relay (in whichever process) to stop; None if nothing runs.

    The caller also tells Letta (``reply_cancel_on_letta``), so a stop works even when the
    relay's process is gone.
    """
    run = await db(selectors.run_active)(conversation=conversation)
    if run is None:
        return None
    if run.relay_channel:
        await request_stop(run.relay_channel, retry=retry)
    return run


async def reply_cancel_on_letta(*, conversation: Conversation) -> None:
    try:
        await get_gateway().acancel(conversation_id=conversation.letta_id)
    except LettaError as exc:
        logger.warning("could not stop the run of %s: %s", conversation.letta_id, exc)


async def reply_take_over(*, conversation: Conversation, run: Run, stale_channel: str) -> bool:
    """Follow a run whose relay is gone, in this process. False if someone else took it."""
    if relays.running_here(conversation.pk) is not None:
        return True
    claimed = await db(services.run_claim)(run=run, stale_channel=stale_channel)
    if not claimed:
        return False
    user_message = await db(lambda: run.user_message)()
    await _relay_start(conversation=conversation, run=run, user_message=user_message, resume=True)
    return True


async def _relay_start(
    *,
    conversation: Conversation,
    run: Run,
    user_message: Message | None,
    sender: str = "",
    resume: bool = False,
    channel: str = "",
    also: tuple[sinks.Sink, ...] = (),
) -> ReplyRelay:
    async def after(finished: Finished) -> None:
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
    )
    await relay.open(channel)
    relay.start()
    return relay
