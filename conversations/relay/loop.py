"""One reply: follow a Letta background run, mirror it, and tell it as a stream of typed events.

A ``ReplyRelay`` is an asyncio task of its own, started by an action (``conversations.actions``),
so the socket that asked stays responsive (Stop works mid-stream) and the reply is finished and
stored even if every client goes away. Each event goes to the process's sinks (the web sink
renders page fragments for every tab, in every process) and to the relay's own sinks (the
terminal that started it), always after the write it reports.

No reply is lost, and none is shown twice:

- The relay numbers its events (``Stamp.tick``). A client that (re)connects asks the relay for a
  snapshot over the relay's own channel (``Run.relay_channel``, so it works across processes):
  every stored message after the last one it has, plus the draft being streamed, as of one tick.
  The client then drops events up to that tick.
- The relay handles Letta's events and these requests one at a time, in order, so a snapshot is
  exact.
- If Letta's stream breaks, the relay resumes it after the last ``seq_id`` it read. If the relay
  itself is gone (its process died), another takes the run over and resumes after the last
  stored message (``Run.last_seq_id``).

Never stuck: content is progress; Letta's pings are kept as proof of life only while Letta says
the run is running, and not at all once the relay has seen Letta go away (its runs die with it,
but it goes on listing them as running and pinging their streams). Silence is told as "stalled";
a run Letta says is over, or does not know, ends the relay; a run that cannot be alive (Letta
restarted) or has said nothing for ``LETTACHAT_GIVE_UP_SECONDS`` is cancelled and ended.

Stop ends the reply at once from the person's point of view; the relay then goes on quietly
until Letta confirms (cancelling again until it does) and settles the mirror on what Letta kept.

The relay reports how the reply ended (``on_finished``); what follows (a retry) is the action's.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from channels.exceptions import ChannelFull
from django.conf import settings
from django.db import transaction

from conversations import approvals, memory, otids, selectors, services, sinks
from conversations.events import (
    ApprovalRequested,
    Draft,
    DraftKind,
    DraftStarted,
    DraftStored,
    Event,
    MessageAdded,
    MessageChanged,
    Outcome,
    ReplyFinished,
    ReplyStatus,
    Resync,
    Snapshot,
    Stamp,
    TextAppended,
    TextGivenBack,
    UsageReported,
)
from conversations.models import Agent, Approval, Conversation, Message, Run
from conversations.relay import control, heartbeat, registry
from letta_gateway import (
    ApprovalPending,
    ApprovalRequest,
    ContentDelta,
    LettaBusy,
    LettaError,
    LettaNotFound,
    LettaUnavailable,
    MessageInfo,
    Ping,
    RunStarted,
    Stopped,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    ToolCallRequest,
    ToolReturn,
    Usage,
    get_gateway,
)
from lettachat.aio import db

logger = logging.getLogger(__name__)

_KIND_TO_TYPE = {
    "assistant": Message.Type.ASSISTANT,
    "reasoning": Message.Type.REASONING,
    "tool_call": Message.Type.TOOL_CALL,
}

STOP_REASONS = {
    "end_turn": "",
    "no_tool_call": "",
    "tool_rule": "",
    "max_steps": "The agent stopped after the most steps it may take in one reply.",
    "max_tokens_exceeded": "The reply was cut off: it reached the model's token limit.",
    "cancelled": "Stopped.",
    "requires_approval": "The agent is waiting for a tool call to be approved.",
    "llm_api_error": "The AI model's service failed during this reply. Please send it again.",
    "invalid_llm_response": "The AI model gave an answer that could not be read. Please try again.",
    "error": "Something went wrong on the Letta server during this reply. Please try again.",
}
STOPPED_NOTE = "Stopped."
NOT_KEPT = "Stopped: the agent did not keep this turn, and will not remember it."
FINISHED_ANYWAY = "Letta had finished this reply before the stop reached it."
LETTA_RESTARTED = (
    "The Letta server restarted during this reply and did not finish it. Nothing after the "
    "restart was kept."
)
NOT_RECEIVED = "Letta did not get this message."
UNCONFIRMED = (
    "Letta could not be reached to confirm it got this message. Retry sends it only if Letta "
    "does not have it."
)


class Unread(enum.Enum):
    """A relay's cursor its starter did not read (``ReplyRelay(cursor=...)``): it reads it."""

    CURSOR = "unread"


UNREAD = Unread.CURSOR


def gave_up_note() -> str:
    minutes = settings.LETTACHAT_GIVE_UP_SECONDS / 60
    return (
        f"The agent said nothing for {minutes:g} minute{'s' if minutes != 1 else ''}: "
        "this reply was stopped."
    )


@dataclass
class _Draft:
    """A message of the reply while it streams."""

    letta_id: str
    kind: DraftKind
    stream_id: str
    name: str = ""
    run_id: str = ""
    parts: list[str] = field(default_factory=list)
    seq_id: int | None = None

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def as_event_draft(self) -> Draft:
        return Draft(self.stream_id, self.kind, self.text, self.name)


@dataclass
class _Asked:
    """An approval request while it streams: its tool calls' names and argument pieces."""

    run_id: str
    calls: dict[str, tuple[str, list[str]]] = field(default_factory=dict)

    def add(self, event: ApprovalRequest) -> None:
        name, parts = self.calls.setdefault(event.tool_call_id, (event.name, []))
        if event.name and not name:
            self.calls[event.tool_call_id] = (event.name, parts)
        parts.append(event.arguments)

    def tool_calls(self) -> list[ToolCallRequest]:
        return [ToolCallRequest(i, n, "".join(p)) for i, (n, p) in self.calls.items()]


@dataclass(frozen=True)
class Finished:
    """How a reply ended, for whoever started it: what follows (a retry) is theirs to decide.

    ``run_started``: Letta got what was sent (false: a send that never reached it)."""

    outcome: Outcome
    retry_requested: bool
    user_message: Message | None
    sender: str
    run_started: bool = True
    approval: Approval | None = None


@dataclass(frozen=True)
class _Busy:
    run_id: str


QueueItem = tuple[
    Literal["event", "control", "end", "failure", "quiet", "state", "superseded"], Any
]
_UNKNOWN = object()  # Letta could not say where the run is (an error): asked again later


class ReplyRelay:
    def __init__(
        self,
        *,
        conversation: Conversation,
        run: Run,
        user_message: Message | None,
        sender: str = "",
        resume: bool = False,
        sinks: tuple[sinks.Sink, ...] = (),
        on_finished: Callable[[Finished], Awaitable[None]] | None = None,
        approval: Approval | None = None,
        announce: tuple[Event, ...] = (),
        cursor: str | Unread | None = UNREAD,
    ) -> None:
        self.conversation = conversation
        self.pk = conversation.pk
        self.run = run
        self.user_message = user_message
        # What this reply sends: the person's message, or their answer to an approval request.
        self.approval = approval
        self.sent_otid = user_message.otid if user_message is not None else ""
        if approval is not None:
            self.sent_otid = approval.otid
        self.asked: dict[str, _Asked] = {}  # approval requests streamed, by Letta message id
        self.requests_made: list[ApprovalRequested] = []  # shown when the run is over
        self.sender = sender  # the client that sent the message: its text goes back there
        self.resume = resume
        self.sinks = sinks
        self.on_finished = on_finished
        # What the starter has to show (the person's message): told once the request to Letta
        # is on its way, so that showing it does not delay the reply, and before any of the reply.
        self.announce = announce
        self.gateway = get_gateway()
        self.channel = ""
        self.tick = 0
        self.draft: _Draft | None = None
        self.read_seq: int | None = run.last_seq_id if resume else None
        self.run_started = bool(run.letta_run_id)
        self.own_runs = {run.letta_run_id} if run.letta_run_id else set()
        self.failure = ""
        self.stop_note = ""
        self.retry_requested = False
        self.stalled = False
        self.done = False
        # Progress: the last event of any kind, the last with content (loop times), and the last
        # time Letta was asked where the run is.
        self.heard_at = 0.0
        self.content_at = 0.0
        self.checked_at = 0.0
        self.checking: asyncio.Task[None] | None = None  # Letta being asked where the run is
        # Another relay follows the run now (this one was taken for dead): this one ends quietly.
        self.superseded = False
        self.superseded_told = False  # by the heartbeat, once
        self.stop_told = False  # a recorded Stop, by the heartbeat, once
        self.letta_went_away = False  # seen while following: Letta's runs do not survive it
        self.lost = ""  # why the run is over although Letta's stream does not say so
        self.stored_any = False  # a message of the reply is stored
        self.by_otid = False  # following the run our message started, found by its otid
        if resume and approval is not None and not run.letta_run_id:
            # An answer whose run was never named: ask Letta for it by its otid rather than
            # send it again (a second answer would be a second turn in Letta).
            self.by_otid = True
        # Stop was pressed before this relay started (a relay taking a stopped run over).
        self.stop_requested = run.stop_requested_at is not None
        self.task: asyncio.Task[None] | None = None
        # Where Letta's copy is read from once the reply is over: the newest message it had
        # confirmed before this reply. Read with the send where there is one (no trip of its own).
        self.cursor_read = not isinstance(cursor, Unread)
        self.cursor: str | None = None if isinstance(cursor, Unread) else cursor
        self.agent_name = ""
        self.agent_letta_id = ""
        self._queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        self._held: QueueItem | None = None  # taken from the queue, not merged: next

    async def open(self, channel: str = "") -> None:
        """Register the relay's channel, so clients can reach it as soon as it runs."""
        names = _agent_names_at_hand(self.conversation)
        self.agent_name, self.agent_letta_id = names or await db(_agent_names)(self.conversation)
        if channel:
            assert self.run.relay_channel == channel, "the run records another relay channel"
            self.channel = channel
            return
        self.channel = await control.relay_channel_new()
        await db(services.run_set_relay)(run=self.run, channel=self.channel)

    def start(self) -> None:
        self.task = asyncio.create_task(self._main(), name=f"reply-{self.pk}")
        registry.add(self)

    # The loop ------------------------------------------------------------------------------------

    async def _main(self) -> None:
        # The request goes to Letta first; the cursor is read meanwhile. Nothing of this reply is
        # stored before the loop runs, so the cursor is still the last message before it.
        reader = asyncio.create_task(self._read_letta())
        reader_control = asyncio.create_task(self._read_control())
        heartbeat.join(self)
        loop = asyncio.get_running_loop()
        self.heard_at = self.content_at = self.checked_at = loop.time()
        try:
            for event in self.announce:
                await sinks.emit(self.conversation, event, also=self.sinks)
            if not self.cursor_read:
                self.cursor = await db(selectors.message_last_letta_id)(
                    conversation=self.conversation
                )
            if self.resume:
                await self._emit(Resync())  # a relay that takes over: pages catch up from it
            if not self.stop_requested:
                await self._emit(self._status())
                await self._loop()
        except asyncio.CancelledError:
            # The process is going away: leave the run "running" for another relay to take over.
            # No _finish, so no closing message for the control reader: cancel it with the rest.
            reader_control.cancel()
            raise
        except Exception:
            logger.exception("relay for conversation %s failed", self.pk)
            self.failure = self.failure or "lettachat failed while relaying this reply."
        finally:
            heartbeat.leave(self)
            if self.checking is not None:
                self.checking.cancel()
            reader_control.add_done_callback(_retrieve)
            registry.remove(self)
        if self.superseded:
            # Nothing more of it is told or stored: the relay that follows the run does that.
            logger.warning("run %s is followed by another relay now; this one ends", self.run.pk)
            await self._stop_control(reader_control)
            reader.cancel()
            reader.add_done_callback(_retrieve)
            return
        try:
            finished = await self._finish()
        finally:
            await self._stop_control(reader_control)
        try:
            if self.on_finished is not None:
                await self.on_finished(finished)
            if self.stop_requested:
                await self._settle()  # quietly: the person has seen the reply end
        finally:
            reader.cancel()
            reader.add_done_callback(_retrieve)

    def heard(self, beat: services.Heartbeat) -> None:
        """What this relay's heartbeat learnt (``relay.heartbeat``): whether the run is still its
        own, and whether a Stop was recorded on it while no relay answered."""
        if not beat.ours:
            if not self.superseded_told:
                self.superseded_told = True
                self._queue.put_nowait(("superseded", None))
        elif beat.stop_recorded and not self.stop_requested and not self.stop_told:
            self.stop_told = True
            self._queue.put_nowait(("control", {"type": control.STOP_REQUEST}))

    async def _stop_control(self, reader_control: asyncio.Task[None]) -> None:
        """End the control reader with a message rather than a cancel.

        A channels_redis receive cancelled during its blocking pop can stay "cancelling" for ever
        (the event loop then never closes: seen in the test suite). A message ends it cleanly.
        """
        try:
            await control.layer().send(self.channel, {"type": control.CLOSE_REQUEST})
        except ChannelFull:
            reader_control.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                kind, payload = await self._next(self._wait())
            except TimeoutError:
                kind, payload = "quiet", None
            now = loop.time()
            if kind == "end":
                return
            if kind == "event":
                if not await self._run_is_ours(payload):
                    return  # another conversation's run: nothing of it is shown or stored
                self.heard_at = now
                if not isinstance(payload, Ping):
                    self.content_at = now
                if self.stalled and not isinstance(payload, Ping):
                    self.stalled = False
                    await self._emit(self._status())
                if isinstance(payload, ContentDelta | ToolCallDelta):
                    payload = self._merge_queued(payload)
                await self._handle(payload)
            elif kind == "control":
                await self._control(payload)
                if self.stop_requested:
                    return  # over for the person at once; Letta is told and settled after
            elif kind == "failure":
                self.failure = payload
                return
            elif kind == "state":
                if await self._run_state(payload):
                    return
            elif kind == "superseded":
                self.superseded = True
                return
            if await self._silence(now):
                return

    def _wait(self) -> float:
        """How long to wait for the next event before looking at the silence again."""
        return float(min(settings.LETTACHAT_STALL_SECONDS, settings.LETTACHAT_RUN_CHECK_SECONDS))

    async def _silence(self, now: float) -> bool:
        """Look at how long Letta has said nothing; True when the reply is over for that.

        Nothing at all (not even a ping) for the stall time: shown as stalled. No content for
        the stall time: Letta is asked where the run is, every ``LETTACHAT_RUN_CHECK_SECONDS``;
        over (or unknown) ends the reply, and so does "running" once Letta has been seen to go
        away (its runs die with it); no content for ``LETTACHAT_GIVE_UP_SECONDS`` gives up.
        """
        stall = settings.LETTACHAT_STALL_SECONDS
        if now - self.heard_at >= stall and not self.stalled:
            self.stalled = True
            await self._emit(self._status())
        no_content_for = now - self.content_at
        if no_content_for < stall or not self.run.letta_run_id:
            return False
        if no_content_for >= settings.LETTACHAT_GIVE_UP_SECONDS:
            self.lost = gave_up_note()
        elif (
            now - self.checked_at >= settings.LETTACHAT_RUN_CHECK_SECONDS and self.checking is None
        ):
            self.checked_at = now
            self.checking = asyncio.create_task(self._ask_run_state())
        if self.lost:
            await self._cancel()  # so Letta lists it as over and takes new messages
            return True
        return False

    async def _ask_run_state(self) -> None:
        """Ask Letta where the run is, beside the loop: while Letta is slow to say (it hangs),
        the loop goes on answering pages' snapshot requests and Stop. The answer joins the
        queue, to be read in turn (``_run_state``)."""
        answer: object
        try:
            answer = await self.gateway.arun_state(run_id=self.run.letta_run_id)
        except LettaError as exc:
            logger.info("could not ask Letta about %s: %s", self.run.letta_run_id, exc)
            answer = _UNKNOWN
        await self._queue.put(("state", answer))

    async def _run_state(self, state: Any) -> bool:
        """Letta's answer to where the run is; True when the reply is over for that."""
        self.checking = None
        if state is _UNKNOWN or self.content_at > self.checked_at:
            return False  # no answer; or content came since it was asked: the run goes on
        if state is None or state.over:
            logger.info("Letta says run %s is over: %s", self.run.letta_run_id, state)
            return True  # whatever Letta kept, the reconcile brings in
        if self.letta_went_away:
            self.lost = LETTA_RESTARTED  # it lists the run as running: it is not
            await self._cancel()  # so Letta lists it as over and takes new messages
            return True
        return False

    async def _next(self, timeout: float) -> QueueItem:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        if not self._queue.empty():
            return self._queue.get_nowait()  # no timer, no task: most events, under load
        async with asyncio.timeout(timeout):  # unlike wait_for, no task wrapping the get
            return await self._queue.get()

    def _merge_queued(self, delta: ContentDelta | ToolCallDelta) -> ContentDelta | ToolCallDelta:
        """The delta, with the pieces of the same message already queued behind it appended.

        While the relay keeps up, each piece is relayed alone, as it came. When pieces queue up
        (a burst from Letta, a busy process) they go out as one event: the same text, sooner,
        for a fraction of the work per piece, so a loaded relay catches up instead of falling
        further behind.
        """
        texts = [_piece_text(delta)]
        seq_id, name = delta.seq_id, getattr(delta, "name", "")
        while self._held is None and not self._queue.empty():
            item = self._queue.get_nowait()
            kind, nxt = item
            if kind == "event" and _same_message(delta, nxt):
                texts.append(_piece_text(nxt))
                seq_id = nxt.seq_id if nxt.seq_id is not None else seq_id
                name = name or getattr(nxt, "name", "")
            else:
                self._held = item
        if len(texts) == 1:
            return delta
        if isinstance(delta, ContentDelta):
            return replace(delta, text="".join(texts), seq_id=seq_id)
        return replace(delta, arguments="".join(texts), seq_id=seq_id, name=name)

    # Letta's side --------------------------------------------------------------------------------

    async def _read_letta(self) -> None:
        """Feed Letta's events into the queue; resume the stream where it broke.

        A send whose fate is unknown (Letta may have got it: a time-out, a connection broken
        after sending) is settled by asking Letta for the run of the message's otid: followed if
        there is one, "not sent" only if Letta says there is none.
        """
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                async for event in self._letta_stream():
                    deadline = None
                    if not isinstance(event, Ping):
                        self.run_started = True  # Letta has the message: resume, never resend
                    seq = getattr(event, "seq_id", None)
                    if seq is not None:
                        self.read_seq = seq
                    await self._queue.put(("event", event))
                await self._queue.put(("end", None))
                return
            except LettaBusy as exc:
                if not self.run_started and await db(_ours_and_stopped)(self.run, exc.run_id):
                    # Our own stopped reply, not yet cancelled on Letta: the send was refused,
                    # so sending again is safe once it is.
                    deadline = deadline or loop.time() + settings.LETTACHAT_SETTLE_SECONDS
                    if loop.time() > deadline:
                        await self._queue.put(("failure", str(exc)))
                        return
                    await asyncio.sleep(settings.LETTACHAT_RESUME_BACKOFF)
                    continue
                # Letta is answering something else in this conversation: follow that instead.
                await self._queue.put(("event", _Busy(exc.run_id)))
                self.run_started = True
                self.resume = True
                self.read_seq = None
                self.run.letta_run_id = exc.run_id
            except LettaNotFound as exc:
                if self.by_otid and not self.run_started:
                    await self._queue.put(("failure", NOT_RECEIVED))  # asked: Letta never got it
                else:
                    await self._queue.put(("failure", str(exc)))
                return
            except LettaError as exc:
                went_away = isinstance(exc, LettaUnavailable)
                maybe_sent = isinstance(exc, LettaUnavailable) and exc.reached
                if not self.run_started and not maybe_sent and not self.by_otid:
                    await self._queue.put(("failure", str(exc)))  # never reached Letta
                    return
                if not went_away and exc.status is not None and 400 <= exc.status < 500:
                    await self._queue.put(("failure", str(exc)))
                    return
                # The run may go on in Letta (or may have started): follow it again.
                self.letta_went_away = self.letta_went_away or (went_away and self.run_started)
                deadline = deadline or loop.time() + settings.LETTACHAT_RESUME_SECONDS
                if loop.time() > deadline:
                    note = UNCONFIRMED if not self.run_started else str(exc)
                    await self._queue.put(("failure", note))
                    return
                logger.info("stream of %s broke (%s); resuming", self.run.letta_run_id, exc)
                if not self.run_started:
                    self.by_otid = True  # find out from Letta whether it has the message
                self.resume = True
                await asyncio.sleep(settings.LETTACHAT_RESUME_BACKOFF)

    async def _run_is_ours(self, event: StreamEvent | _Busy) -> bool:
        """The first event naming a run: is that run this conversation's? (conversations/otids)"""
        run_id = getattr(event, "run_id", "") or ""
        if not run_id or run_id in self.own_runs:
            return True
        if await otids.run_is_of(
            conversation=self.conversation, run_id=run_id, gateway=self.gateway
        ):
            self.own_runs.add(run_id)
            return True
        logger.warning("conversation %s was sent run %s of another one", self.pk, run_id)
        self.failure = otids.FOREIGN_RUN
        return False

    def _letta_stream(self) -> AsyncIterator[StreamEvent]:
        conversation_id = self.conversation.letta_id
        if self.resume and self.run.letta_run_id:
            return self.gateway.astream_resume(
                conversation_id=conversation_id,
                run_id=self.run.letta_run_id,
                after_seq=self.read_seq,
            )
        if self.by_otid:
            return self.gateway.astream_resume(
                conversation_id=conversation_id,
                otid=self.sent_otid,
                after_seq=self.read_seq,
            )
        if self.approval is not None:
            return self.gateway.astream_approval(
                conversation_id=conversation_id,
                answers=approvals.approval_answers(self.approval),
                otid=self.approval.otid,
            )
        assert self.user_message is not None
        return self.gateway.astream_reply(
            conversation_id=conversation_id,
            text=self.user_message.content,
            otid=self.user_message.otid,
        )

    async def _handle(self, event: StreamEvent | _Busy) -> None:
        if isinstance(event, _Busy):
            await self._busy(event.run_id)
        elif isinstance(event, RunStarted):
            self.run_started = True
            if event.run_id and event.run_id != self.run.letta_run_id:
                self.run.letta_run_id = event.run_id
                await db(services.run_started)(run=self.run, letta_run_id=event.run_id)
            if self.stop_requested:
                await self._cancel()
        elif isinstance(event, Ping):
            pass
        elif isinstance(event, ContentDelta):
            self.run_started = True
            await self._piece(event.message_id, event.kind, event.text, event.run_id, event.seq_id)
        elif isinstance(event, ToolCallDelta):
            await self._piece(
                event.message_id, "tool_call", event.arguments, event.run_id, event.seq_id,
                name=event.name,
            )  # fmt: skip
        elif isinstance(event, ToolReturn):
            await self._finish_draft()
            message = await db(services.message_record)(
                conversation=self.conversation,
                letta_id=event.message_id,
                message_type=Message.Type.TOOL_RETURN,
                content=event.content,
                name=event.status,
                run_id=event.run_id,
                run=self.run,
                seq_id=event.seq_id,
            )
            self.stored_any = True
            await self._emit(MessageAdded(message))
            if changed := await memory.memory_after_tool_return(
                conversation=self.conversation, message=message
            ):
                await self._emit(changed)  # a memory edit: what changed, the blocks now
        elif isinstance(event, ApprovalRequest):
            await self._finish_draft()
            self.asked.setdefault(event.message_id, _Asked(event.run_id)).add(event)
        elif isinstance(event, ApprovalPending):
            # Letta waits for an answer to a request (made in another client): the message was
            # refused and not kept. The request is read from Letta's copy (_reconcile).
            self.failure = approvals.ANSWER_FIRST
        elif isinstance(event, StreamError):
            self.failure = event.message or event.error_type
        elif isinstance(event, Stopped):
            if event.reason == "cancelled":
                self.stop_note = STOPPED_NOTE
            else:
                note = STOP_REASONS.get(event.reason, "The reply ended early.")
                self.stop_note = self.stop_note or note
            self.run.stop_reason = event.reason
        elif isinstance(event, Usage):
            self.run.prompt_tokens = event.prompt_tokens
            self.run.completion_tokens = event.completion_tokens
            self.run.total_tokens = event.total_tokens
            self.run.context_tokens = event.context_tokens

    async def _busy(self, run_id: str) -> None:
        """The send met a run already going: show that one, and hand the person's text back."""
        if self.user_message is not None:
            message = self.user_message
            self.user_message = None
            await db(services.message_mark_failed)(
                message=message,
                error="the agent was still answering. Send it again when the reply is done.",
            )
            await self._emit(MessageChanged(message))
            if self.sender:
                await self._emit(TextGivenBack(message.content, self.sender, retry_offered=True))
        await db(services.run_started)(run=self.run, letta_run_id=run_id)

    async def _piece(
        self,
        letta_id: str,
        kind: DraftKind,
        text: str,
        run_id: str,
        seq_id: int | None,
        *,
        name: str = "",
    ) -> None:
        draft = self.draft
        if draft is not None and (draft.letta_id, draft.kind) == (letta_id, kind):
            draft.parts.append(text)
            draft.seq_id = seq_id if seq_id is not None else draft.seq_id
            if name and not draft.name:
                draft.name = name
            if text:
                so_far = draft.text if kind == "assistant" else ""
                await self._emit(TextAppended(draft.stream_id, text, kind, so_far))
            return
        await self._finish_draft()
        # Letta gives a step's reasoning and its answer one id: the kind tells them apart.
        stream_id = f"{kind}-{letta_id}"
        self.draft = _Draft(letta_id, kind, stream_id, name, run_id, [text], seq_id)
        await self._emit(DraftStarted(self.draft.as_event_draft()))

    async def _finish_draft(self, *, error: str = "") -> None:
        """Store the message being streamed, and show its final form in place of the draft."""
        draft, self.draft = self.draft, None
        if draft is None:
            return
        message = await db(services.message_record)(
            conversation=self.conversation,
            letta_id=draft.letta_id,
            message_type=_KIND_TO_TYPE[draft.kind],
            content=draft.text,
            name=draft.name,
            run_id=draft.run_id,
            error=error,
            run=self.run,
            seq_id=draft.seq_id,
        )
        self.stored_any = True
        await self._emit(DraftStored(draft.stream_id, message))

    async def _cancel(self) -> bool:
        """Ask Letta to cancel this reply's run; True once Letta has no run of it going.

        By the run's id once known: Letta's conversation cancel stops every active run of the
        conversation, so, sent while settling, it would stop the person's next message (Letta
        then keeps nothing of it although its reply was shown: found by bench/soak_faults.py).
        """
        try:
            await self.gateway.acancel(
                conversation_id=self.conversation.letta_id,
                run_id=self.run.letta_run_id,
                agent_id=self.agent_letta_id,
            )
        except LettaError as exc:
            logger.warning("could not stop run %s: %s", self.run.letta_run_id, exc)
            return False
        return True  # cancelled, or nothing was running (Letta answers 409)

    # Requests from clients -----------------------------------------------------------------------

    async def _read_control(self) -> None:
        layer = control.layer()
        while True:
            message = await layer.receive(self.channel)
            if message.get("type") == control.CLOSE_REQUEST:
                return
            await self._queue.put(("control", message))

    async def _control(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == control.SNAPSHOT_REQUEST:
            stored = await db(selectors.message_list_after)(
                conversation=self.conversation, after_pk=int(message.get("after") or 0)
            )
            draft = self.draft.as_event_draft() if self.draft else None
            snapshot = Snapshot(
                reply_to=str(message["reply_to"]),
                stored=stored,
                draft=draft,
                status=self._status(),
                drafts=bool(message.get("drafts")),
                request=str(message.get("request") or ""),
            )
            # The snapshot is as of the last event sent: it does not count as one.
            await sinks.emit(
                self.conversation, snapshot, Stamp(self.channel, self.tick), also=self.sinks
            )
        elif kind in (control.STOP_REQUEST, control.RETRY_REQUEST):
            # Over for the person at once (the loop ends); Letta is told until it confirms.
            self.stop_requested = True
            self.retry_requested = kind == control.RETRY_REQUEST

    def _status(self) -> ReplyStatus:
        if self.stalled:
            return ReplyStatus(
                "stalled", self.agent_name, stalled_for=settings.LETTACHAT_STALL_SECONDS
            )
        return ReplyStatus("answering", self.agent_name)

    async def _emit(self, event: Event) -> None:
        self.tick += 1
        await sinks.emit(self.conversation, event, Stamp(self.channel, self.tick), also=self.sinks)

    # The end -------------------------------------------------------------------------------------

    async def _finish(self) -> Finished:
        """The reply is over for the person: store what streamed, say how it ended."""
        self.done = True
        if self.stop_requested:
            return await self._finish_stopped()
        failure = self.failure or self.lost
        stop_note = self.stop_note
        waiting = self.run.stop_reason == "requires_approval"
        if waiting and self.asked:
            stop_note = ""  # the request itself says so
        await self._finish_draft(error=failure or stop_note)
        asking = await self._record_asked(pending=waiting and not failure)
        if self.run_started:
            asking = await self._reconcile() or asking
        if waiting and asking:
            stop_note = ""
        user_message = self.user_message
        if failure and user_message is not None:
            kept = await db(_kept_by_letta)(user_message)
            if kept:
                await self._note(failure)
            else:
                # Letta did not keep the message: say so next to it, and give the text back.
                await db(services.message_mark_failed)(message=user_message, error=failure)
                await self._emit(MessageChanged(user_message))
                if self.sender:
                    await self._emit(
                        TextGivenBack(user_message.content, self.sender, retry_offered=True)
                    )
        elif failure:
            await self._note(failure)
        elif stop_note:
            await self._note(stop_note)
        status = Run.Status.DONE
        outcome: Outcome = "done"
        if failure:
            status, outcome = Run.Status.FAILED, "failed"
        elif self.run.stop_reason == "cancelled":
            status, outcome = Run.Status.STOPPED, "stopped"
        return await self._end(status, outcome, error=failure)

    async def _finish_stopped(self) -> Finished:
        """Stopped by the person: the part that streamed is kept, marked "Stopped." once (on the
        partial reply, or on the message if nothing came); Letta is settled afterwards."""
        partial = self.draft is not None
        await self._finish_draft(error=STOPPED_NOTE)
        user_message = self.user_message
        if not partial and not self.stored_any and user_message is not None:
            await db(services.message_mark_failed)(message=user_message, error=STOPPED_NOTE)
            await self._emit(MessageChanged(user_message))
        return await self._end(Run.Status.STOPPED, "stopped")

    async def _end(self, status: str, outcome: Outcome, *, error: str = "") -> Finished:
        if usage := selectors.turn_usage_of(self.run):  # before the run ends: before a next turn
            await self._emit(UsageReported(usage))
        await db(services.run_finish)(run=self.run, status=status, error=error)
        # Approval requests are shown once the run is over: an answer given the moment one
        # shows then starts the next run, rather than meeting this one ("still answering").
        for request in self.requests_made:
            await self._emit(request)
        await self._emit(ReplyFinished(outcome))
        return Finished(
            outcome,
            self.retry_requested,
            self.user_message,
            self.sender,
            run_started=self.run_started,
            approval=self.approval,
        )

    async def _settle(self) -> None:
        """After a stop: cancel on Letta until it confirms, wait for the run's stream to end, and
        make the mirror say what Letta kept of the turn (nothing, usually; all of it, if Letta had
        finished first). Bounded by ``LETTACHAT_SETTLE_SECONDS``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.LETTACHAT_SETTLE_SECONDS
        confirmed = await self._cancel()
        ended = False
        while not ended and loop.time() < deadline:
            try:
                kind, event = await self._next(settings.LETTACHAT_RESUME_BACKOFF)
                ended = kind in ("end", "failure")
                if (
                    isinstance(event, RunStarted)
                    and event.run_id
                    and event.run_id != self.run.letta_run_id
                ):  # the send landed after the stop: cancel that run
                    self.run.letta_run_id = event.run_id
                    await db(services.run_started)(run=self.run, letta_run_id=event.run_id)
                    confirmed = await self._cancel()
            except TimeoutError:
                if not confirmed:
                    confirmed = await self._cancel()
                elif self.run.letta_run_id:
                    try:
                        state = await self.gateway.arun_state(run_id=self.run.letta_run_id)
                    except LettaError:
                        continue
                    ended = state is None or state.over
        if not ended:
            logger.warning("run %s did not end after Stop", self.run.letta_run_id)
        try:
            infos = await self.gateway.alist_messages(
                conversation_id=self.conversation.letta_id, after=self.cursor
            )
        except LettaError as exc:
            logger.warning("could not settle %s after a stop: %s", self.run.letta_run_id, exc)
            return
        changed, added = await db(services.message_settle_stopped)(
            conversation=self.conversation,
            run=self.run,
            user_message=self.user_message,
            sent_otid=self.sent_otid,
            infos=infos,
        )
        for message in changed:
            await self._emit(MessageChanged(message))
        for message in added:
            await self._emit(MessageAdded(message))

    async def _note(self, text: str) -> None:
        note = await db(services.message_record_error)(conversation=self.conversation, text=text)
        await self._emit(MessageAdded(note))

    async def _record_asked(self, *, pending: bool) -> bool:
        """Mirror the approval requests that streamed; True if one now waits for an answer."""
        asking = False
        for letta_id, asked in self.asked.items():
            approval, new = await db(approvals.approval_record)(
                conversation=self.conversation,
                letta_id=letta_id,
                tool_calls=asked.tool_calls(),
                run=self.run,
                run_id=asked.run_id,
                pending=pending,
            )
            asking = asking or approval.pending
            if new:
                self.requests_made.append(ApprovalRequested(approval))
        return asking

    async def _reconcile(self) -> bool:
        """Let Letta's stored copy settle the mirror: our message's id, anything not streamed.
        True if an approval request new here now waits for an answer."""
        try:
            infos = await self.gateway.alist_messages(
                conversation_id=self.conversation.letta_id, after=self.cursor
            )
        except LettaError as exc:
            logger.warning(
                "could not re-read %s after a reply: %s", self.conversation.letta_id, exc
            )
            return False
        added, made = await db(_reconcile_with)(self.conversation, infos, self.run)
        for message in added:
            await self._emit(MessageAdded(message))
        self.requests_made += [ApprovalRequested(approval) for approval in made]
        return any(approval.pending for approval in made)


def _piece_text(delta: ContentDelta | ToolCallDelta) -> str:
    return delta.text if isinstance(delta, ContentDelta) else delta.arguments


def _same_message(delta: ContentDelta | ToolCallDelta, other: object) -> bool:
    if isinstance(delta, ContentDelta):
        return isinstance(other, ContentDelta) and (other.message_id, other.kind, other.run_id) == (
            delta.message_id,
            delta.kind,
            delta.run_id,
        )
    return isinstance(other, ToolCallDelta) and (
        other.message_id,
        other.tool_call_id,
        other.run_id,
    ) == (delta.message_id, delta.tool_call_id, delta.run_id)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("relay helper task failed", exc_info=task.exception())


def _agent_names(conversation: Conversation) -> tuple[str, str]:
    """The agent's name as people see it (a copy is shown by its template's name), its Letta id."""
    agent = conversation.agent
    return agent.origin.name, agent.letta_id


def _agent_names_at_hand(conversation: Conversation) -> tuple[str, str] | None:
    """The same without a query, when the conversation was read with its agent (and a copy's
    template, as a page's socket reads it); else None."""
    if not Conversation.agent.is_cached(conversation):
        return None
    agent = conversation.agent
    if agent.template_id is not None and not Agent.template.is_cached(agent):
        return None
    return _agent_names(conversation)


def _reconcile_with(
    conversation: Conversation, infos: list[MessageInfo], run: Run
) -> tuple[list[Message], list[Approval]]:
    """The messages Letta's copy adds to the mirror, and the approval requests it makes: in
    one trip to a database thread, and one transaction (one commit)."""
    with transaction.atomic():
        added = services.message_reconcile(conversation=conversation, infos=infos)
        made = approvals.approvals_from_letta(conversation=conversation, infos=infos, run=run)
    return added, made


def _ours_and_stopped(run: Run, letta_run_id: str) -> bool:
    """Whether ``letta_run_id`` is a reply of this conversation that was stopped here."""
    return Run.objects.filter(
        conversation_id=run.conversation_id,
        letta_run_id=letta_run_id,
        status=Run.Status.STOPPED,
    ).exists()


def _kept_by_letta(message: Message) -> bool:
    message.refresh_from_db(fields=["letta_id"])
    return message.letta_id is not None
