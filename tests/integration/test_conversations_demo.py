"""`manage.py conversations_demo --yes` end to end against the real Letta server: every section
runs and shows what it says it shows, and afterwards Letta no longer knows anything it made."""

from __future__ import annotations

import io
import re

import pytest
from django.core.management import call_command

from devtools.local_letta import harness
from letta_gateway import LettaNotFound
from letta_gateway.client import LettaGateway

pytestmark = pytest.mark.integration

SECTIONS = [
    "1. The Letta server",
    "2. A demo agent",
    "3. A streamed exchange",
    "4. Isolation between conversations",
    "5. List and retrieve",
    "6. Cursor pagination",
    "7. Shared memory",
    "8. Clean up",
]


def ids(kind: str, text: str) -> list[str]:
    return list(dict.fromkeys(re.findall(rf"\b{kind}-[0-9a-f]{{8}}-[0-9a-f-]{{27}}\b", text)))


def test_the_demo_runs_every_section_and_deletes_what_it_made(letta_gateway: LettaGateway):
    out = io.StringIO()
    call_command("conversations_demo", "--yes", "--model", harness.MODEL_HANDLE, stdout=out)
    text = out.getvalue()

    positions = [text.find(section) for section in SECTIONS]
    assert -1 not in positions, f"missing sections in:\n{text}"
    assert positions == sorted(positions)
    assert "✗" not in text
    assert not re.search(r"^! ", text, re.MULTILINE), "no step had to warn"
    # A streamed exchange: the local model echoes what it is told, and it is shown.
    assert re.search(r"\[A\] agent > Echo: Hello! I'm Ada, and my ticket is A-[0-9a-f]{6}", text)
    assert "✓ conversation A: 5 messages, none mentions B-" in text
    assert "✓ conversation B: 3 messages, none mentions A-" in text
    assert "in-context messages: 5 (of 5 in its history" in text
    assert re.search(r"✓ 3 pages of at most 2: the same 5 messages", text)
    assert "✓ the agent stored it in its human block" in text
    assert re.search(r"\[D\] agent > human=.*\nFavourite tea: rooibos \(demo [0-9a-f]{6}\)", text)
    assert "✓ a new conversation recalled it" in text
    assert text.rstrip().endswith("The demo ran to the end.")

    # What it made, by the ids it printed: Letta knows none of them any more.
    made = text.split("Made on Letta:")[1].split("✓ deleted")[0]
    [agent_id] = ids("agent", made)
    block_ids = ids("block", made)
    conversation_ids = ids("conv", made)
    assert len(block_ids) == 2 and len(conversation_ids) == 4
    for conversation_id in conversation_ids:
        with pytest.raises(LettaNotFound):
            letta_gateway.retrieve_conversation(conversation_id=conversation_id)
    with pytest.raises(LettaNotFound):
        letta_gateway.retrieve_agent(agent_id=agent_id)
    for block_id in block_ids:
        with pytest.raises(LettaNotFound):
            letta_gateway.retrieve_block(block_id=block_id)
    assert agent_id not in {a.letta_id for a in letta_gateway.list_agents()}
