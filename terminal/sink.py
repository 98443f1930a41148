"""The terminal sink: a reply's typed events as terminal lines, as they arrive.

The terminal twin of ``chat.websink``. It is given to the actions as a sink of the caller's own
(``also=``), so it hears the reply the terminal started, and only that: the page's tabs hear the
same reply from the web sink (over the channel layer), each event once. It prints assistant text
as markdown while it streams (a rich ``Live`` region), reasoning dimmed, each tool call and tool
return in one line. Text the agent did not take comes back (``TextGivenBack``) for this terminal
only (its ``sender``), to be put back at the prompt. ``Resync`` and snapshots are for pages that
catch up from a relay: a terminal that started the reply has seen all of it.

A reply that ends asking for the person's approval (``ApprovalRequested``, pending) prints the
request and leaves it in ``asking``, for the session to ask ``approve? [y/N/reason]`` once the
reply is over; an answer (``ApprovalAnswered``: this terminal's own, one found given elsewhere,
or one that never reached Letta) is one line, and updates ``asking``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from rich.console import Console
from rich.live import Live
from rich.markdown import Markdown
from rich.text import Text

from conversations import approvals, events
from conversations.events import Event, Outcome, Stamp
from conversations.models import Approval, Conversation, Message
from terminal import render

REFRESH_PER_SECOND = 12
SENDER_PREFIX = "terminal:"  # this terminal as a message's sender: "terminal:<pid>"


def sender_of(pid: int) -> str:
    return f"{SENDER_PREFIX}{pid}"


@dataclass
class _Streaming:
    stream_id: str
    kind: events.DraftKind
    name: str
    parts: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(self.parts)


class TerminalSink:
    """Prints one reply's events on ``console``; says when the reply is over (``finished``)."""

    def __init__(self, console: Console, *, sender: str, agent_name: str = "") -> None:
        self.console = console
        self.sender = sender
        self.agent_name = agent_name
        self.given_back: str | None = None  # the person's text, for the prompt
        self.outcome: Outcome | None = None
        self.asking: Approval | None = None  # a request of this reply waiting for an answer
        self.quiet = False  # back at the prompt: what a relay still says is not printed
        self._finished = asyncio.Event()  # set in the loop that runs the relay
        self._draft: _Streaming | None = None
        self._live: Live | None = None
        self._headed = False  # the agent's name is printed above its reply
        self._stalled = False

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    async def emit(self, conversation: Conversation, event: Event, stamp: Stamp) -> None:
        self.handle(event)

    async def wait_finished(self) -> Outcome | None:
        await self._finished.wait()
        return self.outcome

    def handle(self, event: Event) -> None:
        """Print one event (events as data in, lines out: what the tests drive)."""
        if isinstance(event, events.TextGivenBack):
            if event.sender == self.sender:
                self.given_back = event.text
            return
        if isinstance(event, events.ReplyFinished):
            self._close_draft()
            self.outcome = event.outcome
            self._finished.set()
            return
        if isinstance(event, events.ApprovalRequested | events.ApprovalAnswered):
            self._approval(event)
            return
        if self.quiet:
            return
        match event:
            case events.ReplyStatus():
                self._status(event)
            case events.DraftStarted(draft=draft):
                self._start(draft)
            case events.TextAppended(stream_id=stream_id, text=text):
                self._append(stream_id, text)
            case events.DraftStored(stream_id=stream_id, message=message):
                self._stored(stream_id, message)
            case events.MessageAdded(message=message):
                if message.message_type != Message.Type.USER:  # the person's own: at the prompt
                    self._print_message(message)
            case events.MessageChanged(message=message):
                if message.message_type == Message.Type.USER and message.error:
                    self._line(render.note(f"Your message: {self._error(message.error)}"))
            case events.MemoryChanged(message=message, error=error):
                if message.memory_change:
                    self._line(render.memory_change(message.memory_change))
                if error:
                    self._line(render.note(f"The memory could not be read again: {error}"))
            case events.UsageReported(usage=usage):
                self._line(render.usage(usage))
            case _:
                pass  # Resync, Snapshot (for pages), ConversationActive (the terminal knows)

    # -- The reply's status --------------------------------------------------------------------

    def _status(self, status: events.ReplyStatus) -> None:
        if status.agent_name:
            self.agent_name = status.agent_name
        if status.state == "answering" and not self._headed:
            self._headed = True
            self._line(
                Text.assemble(
                    render.agent_header(self.agent_name),
                    (" is answering… (Ctrl-C stops it)", "dim"),
                )
            )
        elif status.state == "stalled" and not self._stalled:
            self._stalled = True
            self._close_draft()
            self._line(
                render.note(
                    f"{self.agent_name} has not answered for {status.stalled_for:g} s. "
                    "Ctrl-C stops the reply."
                )
            )
        elif status.state == "answering":
            self._stalled = False
        elif status.state == "stopping":
            self._line(Text("Stopping…", style="dim"))

    @staticmethod
    def _error(error: str) -> str:
        if error == approvals.ANSWER_FIRST:  # the page's words speak of its box
            return "the agent is waiting for your answer to its request to use a tool first."
        return error

    # -- Approval requests ---------------------------------------------------------------------

    def _approval(self, event: events.ApprovalRequested | events.ApprovalAnswered) -> None:
        approval = event.approval
        if approval.pending:
            self.asking = approval
        elif self.asking is not None and self.asking.pk == approval.pk:
            self.asking = None
        if self.quiet:
            return
        if isinstance(event, events.ApprovalRequested) and approval.pending:
            self._close_draft()
            self.console.print(render.approval_request(approval, agent_name=self.agent_name))
        else:  # answered (or one found answered already when re-read)
            self._line(render.approval_state(approval))

    # -- Drafts ----------------------------------------------------------------------------------

    def _start(self, draft: events.Draft) -> None:
        self._close_draft()
        self._draft = _Streaming(draft.stream_id, draft.kind, draft.name)
        if draft.kind == "assistant":
            # Redrawn a few times a second, not per token (markdown is rendered whole each
            # time); taller than the screen, the region shows its top while it streams ("…"),
            # since a terminal cannot redraw what has scrolled away, and all of it once stored.
            self._live = Live(
                Markdown(""),
                console=self.console,
                refresh_per_second=REFRESH_PER_SECOND,
                redirect_stdout=False,
                redirect_stderr=False,
                vertical_overflow="ellipsis",
            )
            self._live.start()
        elif draft.kind == "reasoning":
            self.console.print(Text("thinking: ", style="dim italic"), end="")
        self._append(draft.stream_id, draft.text)

    def _append(self, stream_id: str, text: str) -> None:
        draft = self._draft
        if draft is None or draft.stream_id != stream_id or not text:
            return
        draft.parts.append(text)
        if draft.kind == "assistant" and self._live is not None:
            self._live.update(Markdown(draft.text))
        elif draft.kind == "reasoning":
            self.console.print(Text(text, style="dim italic"), end="")
        # A tool call's arguments stream too: it is printed in one line once stored.

    def _stored(self, stream_id: str, message: Message) -> None:
        draft = self._draft
        if draft is None or draft.stream_id != stream_id:
            self._print_message(message)  # a draft this sink did not see start
            return
        if draft.kind == "assistant" and self._live is not None:
            self._live.update(Markdown(message.content), refresh=True)
            self._end_live()
        elif draft.kind == "reasoning":
            self.console.print()
        elif draft.kind == "tool_call":
            self._line(render.tool_call(message.name or draft.name, message.content), one_line=True)
        self._draft = None
        if message.error == "Stopped.":
            self._line(Text("Stopped. The partial reply is kept.", style="yellow"))
        elif message.error:
            self._line(render.note(message.error))

    def _end_live(self) -> None:
        assert self._live is not None
        self._live.stop()
        self._live = None
        if not self.console.is_terminal:  # a terminal's live region ends with a new line
            self.console.line()

    def _close_draft(self) -> None:
        """A draft that ends without being stored (the reply was cut): end its lines."""
        if self._live is not None:
            self._end_live()
        elif self._draft is not None and self._draft.kind == "reasoning":
            self.console.print()
        self._draft = None

    # -- Lines -----------------------------------------------------------------------------------

    def _print_message(self, message: Message) -> None:
        self._close_draft()
        if message.message_type == Message.Type.ASSISTANT:
            self.console.print(Markdown(message.content))
            if message.error:
                self._line(render.note(message.error))
            return
        self.console.print(
            render.message(message, agent_name=self.agent_name),
            no_wrap=render.is_one_line(message),
            overflow="ellipsis",
        )

    def _line(self, text: Text, *, one_line: bool = False) -> None:
        if self._live is not None:
            self._close_draft()
        self.console.print(text, no_wrap=one_line, overflow="ellipsis" if one_line else None)
