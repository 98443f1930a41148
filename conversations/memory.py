"""The agent's memory, made visible: what a memory tool call changed, and the refreshed panel.

Letta keeps core memory blocks per agent: every conversation with the agent shares them, while
each conversation's messages stay its own. When a tool call of a reply edits a block, the relay
calls ``memory_after_tool_return`` once the tool has returned successfully:

- what changed is read from the call's arguments (the label, the text removed and added). That is
  exact, and needs no read of the blocks before the call, which would race the tool: Letta runs
  it before the relay even sees the call's first event;
- it is kept on the tool return (``Message.memory_change``), so the turn shows it after a reload,
  and in the snapshot a reconnecting page gets;
- the blocks are read again from Letta (one request) for the panel and the block's new size.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from conversations import selectors, services
from conversations.events import MemoryChanged
from conversations.models import Conversation, Message
from letta_gateway import LettaError, MemoryBlockInfo, get_gateway
from lettachat.aio import db

logger = logging.getLogger(__name__)

# Letta's tools that edit core memory blocks, and where their arguments say what changed:
# (the block's label, the text taken out, the text put in).
_EDITS: dict[str, tuple[str, str, str]] = {
    "memory_insert": ("label", "", "new_string"),
    "memory_replace": ("label", "old_string", "new_string"),
    "memory_rethink": ("label", "", "new_memory"),
    "rethink_memory": ("target_block_label", "", "new_memory"),
    "core_memory_append": ("label", "", "content"),
    "core_memory_replace": ("label", "old_content", "new_content"),
    "memory_apply_patch": ("label", "", ""),
}
# The omni ``memory`` tool: (its path, the text taken out, the text put in) per command.
_MEMORY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "str_replace": ("path", "old_string", "new_string"),
    "insert": ("path", "", "insert_text"),
    "create": ("path", "", "file_text"),
    "delete": ("path", "", ""),
    "rename": ("new_path", "", ""),
}
MEMORY_TOOLS = frozenset({*_EDITS, "memory"})


@dataclass(frozen=True, slots=True)
class MemoryChange:
    label: str
    removed: str = ""
    added: str = ""


def memory_change_of(tool: str, arguments: str) -> MemoryChange | None:
    """What a memory tool call asked to change, from its JSON arguments; None for other tools."""
    if tool not in MEMORY_TOOLS:
        return None
    try:
        args = json.loads(arguments or "{}")
    except ValueError:
        args = {}
    if not isinstance(args, dict):
        args = {}

    def text(key: str) -> str:
        value = args.get(key) if key else None
        return value if isinstance(value, str) else ""

    if tool == "memory":
        path, removed, added = _MEMORY_COMMANDS.get(text("command"), ("path", "", ""))
        label = text(path).rstrip("/").rsplit("/", 1)[-1]
        return MemoryChange(label, text(removed), text(added))
    label, removed, added = _EDITS[tool]
    return MemoryChange(text(label), text(removed), text(added))


async def memory_after_tool_return(
    *, conversation: Conversation, message: Message
) -> MemoryChanged | None:
    """After a tool return: when its call changed memory, what changed (kept on the tool return)
    and the agent's blocks now; otherwise None."""
    if message.message_type != Message.Type.TOOL_RETURN or message.name != "success":
        return None  # a failed edit changed nothing
    call = await db(selectors.message_tool_call_before)(message=message)
    change = memory_change_of(call.name, call.content) if call is not None else None
    if change is None:
        return None
    blocks: list[MemoryBlockInfo] | None = None
    error = ""
    try:
        blocks = await get_gateway().alist_blocks(agent_id=conversation.agent.letta_id)
    except LettaError as exc:
        logger.warning("could not re-read the memory of %s: %s", conversation.agent.letta_id, exc)
        error = str(exc)
    block = next((b for b in blocks or [] if b.label == change.label), None)
    await db(services.message_set_memory_change)(
        message=message,
        change={
            "label": change.label,
            "removed": change.removed,
            "added": change.added,
            "size": len(block.value) if block is not None else None,
            "limit": block.limit if block is not None else None,
        },
    )
    return MemoryChanged(message, blocks, error)
