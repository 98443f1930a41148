"""The reply as a typed stream: the relay loop that follows Letta and mirrors the reply
(``loop``), how clients reach a running relay from any process (``control``), and the relays
running in this process (``registry``). Actions start relays (``conversations.actions``)."""

from conversations.relay.control import relay_channel_new, request_snapshot, request_stop
from conversations.relay.loop import (
    FINISHED_ANYWAY,
    LETTA_RESTARTED,
    NOT_KEPT,
    NOT_RECEIVED,
    STOP_REASONS,
    STOPPED_NOTE,
    UNCONFIRMED,
    UNREAD,
    Finished,
    ReplyRelay,
    Unread,
)
from conversations.relay.registry import running_here

__all__ = [
    "FINISHED_ANYWAY",
    "LETTA_RESTARTED",
    "NOT_KEPT",
    "NOT_RECEIVED",
    "STOPPED_NOTE",
    "STOP_REASONS",
    "UNCONFIRMED",
    "UNREAD",
    "Finished",
    "ReplyRelay",
    "Unread",
    "relay_channel_new",
    "request_snapshot",
    "request_stop",
    "running_here",
]
