"""`manage.py conversations_demo` when a step fails: it says which step and why, exits non-zero,
never shows a traceback, and deletes what it made only when told to (or asked and answered yes).

Against the scripted gateway, and against a Letta server that is not there; the whole demo runs
against the real Letta server in ``tests/integration/test_conversations_demo.py``.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from letta_gateway import (
    ContentDelta,
    LettaUnavailable,
    MessageInfo,
    RunStarted,
    StreamError,
)
from letta_gateway.fake import ScriptedGateway

MODEL = "openai-proxy/lettachat-demo"
ROOT = Path(__file__).resolve().parents[1]


def run_demo(*args: str) -> tuple[str, CommandError | None]:
    """The command's output, and the error it stopped with (None: it ran to the end)."""
    out = io.StringIO()
    try:
        call_command("conversations_demo", "--model", MODEL, *args, stdout=out)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


def failing_first_reply(fake: ScriptedGateway) -> None:
    fake.enqueue(
        [
            RunStarted("run-1"),
            ContentDelta("m-1", "assistant", "Echo: Hel", "run-1"),
            StreamError("llm_error", "An error occurred with the LLM request."),
        ]
    )


def test_letta_down_stops_at_the_first_step_and_says_where_it_looked(fake_gateway, settings):
    fake_gateway.down = LettaUnavailable("The Letta server cannot be reached.")
    out, error = run_demo("--yes")
    assert error is not None
    assert str(error) == (
        "The demo stopped at step 1 (The Letta server) failed: Letta does not answer at "
        f"{settings.LETTA_BASE_URL} (The Letta server cannot be reached). Start it (bin/run "
        "starts the local one) or set LETTA_BASE_URL."
    )
    assert "✗ step 1 (The Letta server) failed" in out
    assert "2. A demo agent" not in out
    assert "Nothing was made on Letta." in out
    assert fake_gateway.agents == []


def test_a_failing_reply_names_the_step_keeps_the_partial_text_and_yes_deletes_what_was_made(
    fake_gateway,
):
    failing_first_reply(fake_gateway)
    out, error = run_demo("--yes")
    assert error is not None
    assert str(error) == (
        "The demo stopped at step 3 (A streamed exchange) failed: the agent's run failed: "
        "An error occurred with the LLM request."
    )
    assert "[A] agent > Echo: Hel\n" in out  # what streamed before the failure is shown
    assert "4. Isolation between conversations" not in out
    [agent_id] = fake_gateway.deleted_agents
    assert agent_id.startswith("agent-")
    assert len(fake_gateway.deleted) == 1  # conversation A
    assert fake_gateway.conversations == {}
    assert "Letta no longer knows the agent or its blocks" in out


def test_keep_keeps_what_was_made_after_a_failure(fake_gateway):
    failing_first_reply(fake_gateway)
    out, error = run_demo("--keep")
    assert error is not None and "step 3" in str(error)
    assert fake_gateway.deleted_agents == [] and fake_gateway.deleted == []
    assert "Kept:" in out
    [agent] = fake_gateway.agents
    assert f"agent {agent.letta_id} (conversations-demo-" in out


@pytest.mark.parametrize(("answer", "deleted"), [("n", False), ("y", True)])
def test_without_yes_or_keep_it_asks_before_deleting(fake_gateway, monkeypatch, answer, deleted):
    failing_first_reply(fake_gateway)
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt="": asked.append(prompt) or answer)
    out, error = run_demo()
    assert error is not None
    assert "Delete them?" in out + "".join(asked)
    assert bool(fake_gateway.deleted_agents) is deleted


def test_no_one_to_answer_keeps(fake_gateway, monkeypatch):
    failing_first_reply(fake_gateway)

    def no_input(prompt: str = "") -> str:
        raise EOFError

    monkeypatch.setattr("builtins.input", no_input)
    out, _ = run_demo()
    assert fake_gateway.deleted_agents == []
    assert "Kept:" in out


def test_a_conversation_that_shows_another_ones_messages_fails_the_isolation_step(
    fake_gateway, monkeypatch
):
    for _ in range(3):  # A: hello and follow-up; B: its ticket
        fake_gateway.enqueue_text("Echo.")
    real_list = fake_gateway.list_messages

    def leaky(**kwargs) -> list[MessageInfo]:
        """Once B has spoken, every conversation lists every conversation's messages."""
        if len(fake_gateway.sent) < 3:
            return real_list(**kwargs)
        return [m for messages in fake_gateway.stored.values() for m in messages]

    monkeypatch.setattr(fake_gateway, "list_messages", leaky)
    _, error = run_demo("--yes")
    assert error is not None
    assert "step 4 (Isolation between conversations) failed: conversation A holds B-" in str(error)
    assert fake_gateway.deleted_agents


def test_cleaning_up_that_fails_says_what_is_left(fake_gateway, monkeypatch):
    failing_first_reply(fake_gateway)

    def down(**kwargs) -> None:
        raise LettaUnavailable("The Letta server cannot be reached.")

    monkeypatch.setattr(fake_gateway, "delete_agent", down)
    out, error = run_demo("--yes")
    assert error is not None
    assert str(error) == "Cleaning up failed: The Letta server cannot be reached."
    left = out.split("Left on Letta:")[1]
    [agent] = fake_gateway.agents
    assert agent.letta_id in left
    assert "conversation A" not in left  # that one was deleted


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


def test_as_a_program_with_letta_down_it_exits_1_with_one_clear_line_and_no_traceback(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}"
    env = {
        **os.environ,
        "LETTA_BASE_URL": url,
        "LETTA_GATEWAY": "letta_gateway.client.LettaGateway",
        "LETTACHAT_VAR_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "conversations_demo", "--yes"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip() == (
        "CommandError: The demo stopped at step 1 (The Letta server) failed: Letta does not "
        f"answer at {url} (The Letta server cannot be reached). Start it (bin/run starts the "
        "local one) or set LETTA_BASE_URL."
    )
