"""The Letta integration: the only code that talks to Letta.

- ``letta_gateway.errors``: ``LettaError`` and its kinds, the one error family;
- ``letta_gateway.types``: what the gateway returns (frozen dataclasses), the stream's events, and
  the ``Gateway`` protocol;
- ``letta_gateway.client``: the real gateway on letta-client, the only module that imports it
  (ruff's banned-api rule enforces that);
- ``letta_gateway.fake``: a scripted gateway for tests, benchmarks and demos.

``get_gateway()`` returns the process's gateway, as ``settings.LETTA_GATEWAY`` names it.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from letta_gateway.errors import (
    LettaApprovalPending,
    LettaBusy,
    LettaError,
    LettaNotFound,
    LettaUnavailable,
)
from letta_gateway.types import (
    AgentConfig,
    AgentInfo,
    ApprovalAnswer,
    ApprovalPending,
    ApprovalRequest,
    CompactionInfo,
    ContentDelta,
    ConversationDetails,
    ConversationInfo,
    Gateway,
    MemoryBlockInfo,
    MessageInfo,
    MessageKind,
    Ping,
    RunStarted,
    RunState,
    Stopped,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    ToolCallRequest,
    ToolInfo,
    ToolReturn,
    Usage,
)

__all__ = [
    "AgentConfig",
    "AgentInfo",
    "ApprovalAnswer",
    "ApprovalPending",
    "ApprovalRequest",
    "CompactionInfo",
    "ContentDelta",
    "ConversationDetails",
    "ConversationInfo",
    "Gateway",
    "LettaApprovalPending",
    "LettaBusy",
    "LettaError",
    "LettaNotFound",
    "LettaUnavailable",
    "MemoryBlockInfo",
    "MessageInfo",
    "MessageKind",
    "Ping",
    "RunStarted",
    "RunState",
    "Stopped",
    "StreamError",
    "StreamEvent",
    "ToolCallDelta",
    "ToolCallRequest",
    "ToolInfo",
    "ToolReturn",
    "Usage",
    "get_gateway",
]


@cache
def get_gateway() -> Gateway:
    """The process's gateway, built from ``settings.LETTA_GATEWAY``."""
    gateway: Gateway = import_string(settings.LETTA_GATEWAY)()
    return gateway


@receiver(setting_changed)
def _forget_gateway(*, setting: str, **kwargs: Any) -> None:
    if setting.startswith("LETTA_"):
        get_gateway.cache_clear()
