"""What happens in a conversation, as typed events: the one stream every client is fed from.

A reply is a sequence of these (its status, a draft message started, text appended, the draft
stored, messages added or changed, usage, a memory change, the end with its outcome); so are the
writes around it (a message sent, a thread retitled). Sinks (``conversations.sinks``) turn them
into what a client needs: page fragments (``chat.websink``), terminal lines (``manage.py chat``),
or data a test can assert on. Events carry the stored rows they are about, read in this process;
nothing here goes over the channel layer as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from conversations.models import Approval, Conversation, Message
    from conversations.selectors import TurnUsage
    from letta_gateway import MemoryBlockInfo

DraftKind = Literal["assistant", "reasoning", "tool_call"]
ReplyState = Literal["answering", "stalled", "stopping", "idle"]
Outcome = Literal["done", "stopped", "failed"]


# --- A reply ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyStatus:
    """Who is answering, and how: answering, stalled (silent for ``stalled_for`` s), stopping, or
    idle. ``finished``: a reply has just ended (screen readers are told once, never per token)."""

    state: ReplyState
    agent_name: str = ""
    stalled_for: float = 0.0
    finished: bool = False


@dataclass(frozen=True, slots=True)
class Draft:
    """A message of the reply while it streams (the text so far)."""

    stream_id: str
    kind: DraftKind
    text: str
    name: str = ""  # a tool call's tool


@dataclass(frozen=True, slots=True)
class DraftStarted:
    draft: Draft


@dataclass(frozen=True, slots=True)
class TextAppended:
    """More of a draft's text (or a tool call's arguments); for a reply (``kind`` "assistant"),
    ``so_far`` is its whole text with this piece (the page shows it formatted as it streams)."""

    stream_id: str
    text: str
    kind: str = ""
    so_far: str = ""


@dataclass(frozen=True, slots=True)
class DraftStored:
    """The draft is over: this stored message takes its place."""

    stream_id: str
    message: Message


@dataclass(frozen=True, slots=True)
class MessageAdded:
    """A message to show after the others: a tool return, a note, one only Letta's copy had."""

    message: Message


@dataclass(frozen=True, slots=True)
class MessageChanged:
    """A message shown already has a new form (a send that failed, say)."""

    message: Message


@dataclass(frozen=True, slots=True)
class TextGivenBack:
    """A message the agent did not take: its text goes back to whoever sent it (``sender``: how
    the sending client named itself; each sink recognises its own, e.g. "ws:<channel>").

    ``retry_offered``: the message is marked not sent, with a Retry button on the page. That
    button is the page's one route to send it again (its box is left as the person left it);
    the terminal, which has no button, puts the text back at its prompt in every case."""

    text: str
    sender: str
    retry_offered: bool = False


@dataclass(frozen=True, slots=True)
class MemoryChanged:
    """A memory tool call changed a block: the tool return (with what changed) and the blocks
    now, or why they could not be read."""

    message: Message
    blocks: list[MemoryBlockInfo] | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class ApprovalRequested:
    """The agent asks the person to approve tool calls before they run: a new request in the
    thread (``approval.message``), pending, or one that was answered already (from history)."""

    approval: Approval

    @property
    def message(self) -> Message:
        return self.approval.message


@dataclass(frozen=True, slots=True)
class ApprovalAnswered:
    """A request shown already has a new state: approved or denied (with its reason), answered
    in another client, or pending again (its answer never reached Letta)."""

    approval: Approval

    @property
    def message(self) -> Message:
        return self.approval.message


@dataclass(frozen=True, slots=True)
class UsageReported:
    """The finished turn's tokens and an abnormal stop reason, for the line under it."""

    usage: TurnUsage


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """The reply is over, with its outcome (the notes saying why came before, as messages)."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Resync:
    """Another relay follows the reply now (the one before died with its process): clients
    catch up from it (ask it for a snapshot), so nothing shows twice or goes missing."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything a (re)connecting client is missing, as of one moment of the reply: the stored
    messages after the last one it has, the draft so far, the status. For one client only
    (``reply_to``); ``drafts``: it shows stale drafts, to drop first; ``request``: the client's id
    for the request, given back so that it takes the answer to its latest request only."""

    reply_to: str
    stored: list[Message]
    draft: Draft | None
    status: ReplyStatus
    drafts: bool = False
    request: str = ""


# --- Around a reply ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConversationActive:
    """The conversation has new activity: it goes to the top of its list, with its title (which
    a first message may just have set: ``retitled``)."""

    conversation: Conversation
    retitled: bool = False


ReplyEvent = (
    ReplyStatus
    | DraftStarted
    | TextAppended
    | DraftStored
    | MessageAdded
    | MessageChanged
    | TextGivenBack
    | MemoryChanged
    | ApprovalRequested
    | ApprovalAnswered
    | UsageReported
    | ReplyFinished
    | Resync
    | Snapshot
)
Event = ReplyEvent | ConversationActive


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where an event comes from: the relay that emitted it (its channel) and its number in that
    relay's stream, so a client that got a snapshot drops what it already has. Events from
    outside a relay have neither."""

    relay: str = ""
    tick: int = 0


NO_STAMP = Stamp()
