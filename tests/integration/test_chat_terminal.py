"""`manage.py chat` driven through a pseudo-terminal (pexpect) against the real Letta server.

Each test starts the command as a process of its own on the test database (as the live servers
do: ``tests/live.py``), types into it as a person would, Ctrl-C included, and reads the terminal.
What the terminal says is checked against the database and against Letta itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from conversations.models import Agent, Conversation, Message, Run
from letta_gateway import LettaNotFound
from letta_gateway.client import LettaGateway
from tests.conftest import require
from tests.integration.test_processes import Page, cookie_of
from tests.live import ROOT, LiveServer, server_env
from tests.page_model import streams_a_piece
from tests.websocket import is_idle

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Escape sequences (colours, cursor moves of the live markdown region, readline's modes).
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>])")
PROMPT = "you> "
CONV_ID = r"conv-[0-9a-f-]{36}"
WHEN = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}"


class Terminal:
    """The chat in a pseudo-terminal: what it printed, as text, read up to each expectation."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self.child = pexpect.spawn(
            sys.executable,
            ["manage.py", "chat", *args],
            cwd=str(ROOT),
            env=env,
            encoding="utf-8",
            dimensions=(50, 160),
        )
        self.raw = ""
        self.at = 0  # in ``text``: what the expectations so far have read

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw).replace("\r", "")

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """The next match of ``pattern`` in what the terminal prints (waiting for it)."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.text
            if match := regex.search(text, self.at):
                self.at = match.end()
                return match
            left = deadline - time.monotonic()
            if left <= 0 or not self.child.isalive():
                pytest.fail(
                    f"{pattern!r} never showed; the terminal read:\n{text[self.at :]}\n"
                    f"-- chat.log --\n{self.log.read_text() if self.log.exists() else ''}"
                )
            try:
                self.raw += self.child.read_nonblocking(65536, timeout=min(left, 1.0))
            except (pexpect.TIMEOUT, pexpect.EOF):
                continue

    def until_prompt(self, timeout: float = 60) -> str:
        """What the terminal printed up to its next prompt."""
        start = self.at
        match = self.expect(re.escape(PROMPT), timeout)
        return self.text[start : match.start()]

    def run(self, line: str, timeout: float = 60) -> str:
        """Type a line; what it printed before the next prompt (the typed line first)."""
        self.child.sendline(line)
        return self.until_prompt(timeout)

    def interrupt(self) -> None:
        self.child.sendintr()

    def exit_status(self, timeout: float = 30) -> int:
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.raw += self.child.before or ""
        self.child.close()
        assert self.child.exitstatus is not None, self.child.signalstatus
        return self.child.exitstatus


@pytest.fixture
def chat(tmp_path, letta_url, letta_api_key) -> Iterator[Callable[..., Terminal]]:
    """Start ``manage.py chat`` as a person, against the real Letta server (or another URL)."""
    started: list[Terminal] = []

    def start(*args: str, letta: str = letta_url, ready: bool = True) -> Terminal:
        env = server_env(
            tmp_path,
            LETTA_BASE_URL=letta,
            LETTA_API_KEY=letta_api_key,
            LETTA_GATEWAY="letta_gateway.client.LettaGateway",
            TERM="xterm-256color",
        )
        env.pop("NO_COLOR", None)
        terminal = Terminal(list(args), env, tmp_path / "var" / "chat.log")
        started.append(terminal)
        if ready:
            terminal.until_prompt()
        return terminal

    yield start
    for terminal in started:
        if terminal.child.isalive():
            terminal.child.terminate(force=True)


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


def new_conversation(terminal: Terminal, title: str = "") -> Conversation:
    said = terminal.run(f"/new {title}".rstrip())
    [letta_id] = re.findall(rf"New conversation ({CONV_ID})", said)
    return Conversation.objects.get(letta_id=letta_id)


def test_a_reply_streams_and_every_command_does_what_it_says(
    chat, alice, bob, letta_agent: Agent, letta_gateway: LettaGateway
):
    terminal = chat("--user", "alice", "--agent", letta_agent.letta_id)
    assert f"You are talking to {letta_agent.name}" in terminal.text
    assert f"{letta_agent.name} is shared" in terminal.text  # the page's privacy notice

    said = terminal.run("/help")
    for usage in ("/new [name]", "/list", "/switch N", "/history [n]", "/info", "/agents",
                  "/agent ID", "/help", "/quit", "/rename", "/archive", "/delete", "/fork",
                  "/search TEXT"):  # fmt: skip
        assert usage in said

    # A message with no conversation open starts one; the reply streams in, then its usage.
    said = terminal.run("Hello from the terminal")
    [first_id] = re.findall(rf"New conversation ({CONV_ID})", said)
    assert f"{letta_agent.name} is answering" in said
    assert "Echo: Hello from the terminal" in said
    assert re.search(r"\d+ tokens · context \d+", said)
    first = Conversation.objects.get(letta_id=first_id)
    assert first.owner == alice and first.agent == letta_agent
    assert list(first.messages.values_list("message_type", "content")) == [
        ("user", "Hello from the terminal"),
        ("assistant", "Echo: Hello from the terminal"),
    ]
    assert first.messages.filter(letta_id__isnull=True).count() == 0  # Letta's own ids

    # /new with a name: retitled in Letta too.
    second = new_conversation(terminal, "Second thread")
    assert letta_gateway.retrieve_conversation(conversation_id=second.letta_id).summary == (
        "Second thread"
    )

    said = terminal.run("/list")
    rows = re.findall(
        rf"^[ *] ?(\d+)  (.+)\n +({WHEN}) · (\d+) messages? · ({CONV_ID})$", said, re.MULTILINE
    )
    assert [(n, title, count, letta_id) for n, title, _, count, letta_id in rows] == [
        ("1", "Second thread", "0", second.letta_id),
        ("2", "Hello from the terminal", "2", first_id),
    ]

    said = terminal.run("/switch 2")
    assert "Now in “Hello from the terminal” (2 messages" in said
    said = terminal.run("/history")
    assert "you > Hello from the terminal" in said
    assert "Echo: Hello from the terminal" in said
    said = terminal.run("/history 1")
    assert "you > Hello" not in said and "Echo: Hello from the terminal" in said

    said = terminal.run("/info")
    details = letta_gateway.retrieve_conversation(conversation_id=first.letta_id)
    assert first.letta_id in said and letta_agent.name in said
    assert f"{len(details.in_context_message_ids)} messages in the agent's context window" in said
    assert re.search(r"context\s+[\d,]+ / [\d,]+ tokens \(\d+%\)", said)

    said = terminal.run("/rename Renamed in the terminal")
    assert "Renamed to “Renamed in the terminal”" in said
    first.refresh_from_db()
    assert first.summary == "Renamed in the terminal"
    assert letta_gateway.retrieve_conversation(conversation_id=first.letta_id).summary == (
        "Renamed in the terminal"
    )

    said = terminal.run("/search from the terminal")  # in a message's text
    assert "Renamed in the terminal" in said and "Second thread" not in said
    said = terminal.run("/search nothing-like-this")
    assert "Nothing matches" in said

    said = terminal.run("/fork")
    [fork_id] = re.findall(rf"Forked into ({CONV_ID})", said)
    fork = Conversation.objects.get(letta_id=fork_id)
    assert fork.owner == alice and fork.forked_from == first
    assert list(fork.messages.values_list("content", flat=True)) == [
        "Hello from the terminal",
        "Echo: Hello from the terminal",
    ]
    said = terminal.run("And in the fork")  # the fork is the open conversation now
    assert "Echo: And in the fork" in said
    assert fork.messages.filter(content="And in the fork").exists()
    assert not first.messages.filter(content="And in the fork").exists()

    said = terminal.run("/archive")
    assert "Archived" in said
    fork.refresh_from_db()
    assert fork.archived
    assert fork_id not in terminal.run("/list")
    assert fork_id in terminal.run("/list archived")
    terminal.run("/unarchive")
    fork.refresh_from_db()
    assert not fork.archived

    # /delete asks first: "no" keeps it, "yes" deletes it in Letta and here.
    terminal.child.sendline("/delete")
    terminal.expect(r"in Letta too\? It cannot be undone\. \[y/N\] ")
    assert "Kept." in terminal.run("n")
    assert Conversation.objects.filter(letta_id=fork_id).exists()
    terminal.child.sendline("/delete")
    terminal.expect(r"\[y/N\] ")
    assert f"Deleted {fork_id}" in terminal.run("y")
    assert not Conversation.objects.filter(letta_id=fork_id).exists()
    with pytest.raises(LettaNotFound):
        letta_gateway.retrieve_conversation(conversation_id=fork_id)
    assert "No conversation open" in terminal.run("/history")

    said = terminal.run("/agents")
    assert re.search(
        rf"\*1\s+{re.escape(letta_agent.name)}\s+shared\s+{letta_agent.letta_id}", said
    )
    said = terminal.run(f"/agent {letta_agent.letta_id}")
    assert f"Now with {letta_agent.name}" in said

    assert "No command /nope" in terminal.run("/nope")
    terminal.child.sendline("/quit")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.text


def test_ctrl_c_stops_a_reply_keeping_its_start_and_twice_at_the_prompt_quits(
    chat, alice, letta_agent: Agent
):
    terminal = chat("--user", "alice", "--agent", letta_agent.letta_id)
    conversation = new_conversation(terminal)

    # The model sends its first word, then says nothing for a minute: Ctrl-C stops it there.
    terminal.child.sendline("[[stall:60]] a reply that hangs")
    terminal.expect(r"Echo:")
    terminal.interrupt()
    said = terminal.until_prompt(timeout=30)
    assert "Stopped. The partial reply is kept." in said
    run = Run.objects.get(conversation=conversation)
    assert run.status == Run.Status.STOPPED
    partial = conversation.messages.get(message_type=Message.Type.ASSISTANT)
    assert partial.content.startswith("Echo:") and partial.error == "Stopped."

    # Before the first word too: the message says the agent did not keep the turn.
    terminal.child.sendline("[[wait:60]] a reply that never starts")
    terminal.expect("is answering")
    terminal.interrupt()
    said = terminal.until_prompt(timeout=30)
    assert "Your message: Stopped" in said

    # Letta let go of the stopped runs: the next message is answered.
    said = terminal.run("after the stops")
    assert "Echo: after the stops" in said

    # At an empty prompt the first Ctrl-C says how to leave, the second leaves. Each is sent the
    # moment the line before the prompt shows, so that some land while readline is still
    # writing the prompt, not waiting for a key: those must not be lost either.
    terminal.interrupt()
    terminal.expect(r"Press Ctrl-C again to quit \(or type /quit\)\.")
    terminal.interrupt()
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.text


def test_a_reply_running_elsewhere_makes_the_message_wait_with_its_text_at_the_prompt(
    chat, alice, letta_agent: Agent
):
    # Two terminals of Alice's on one conversation (the second could be a browser tab).
    first = chat("--user", "alice", "--agent", letta_agent.letta_id)
    conversation = new_conversation(first)
    second = chat("--user", "alice")
    assert "Now in" in second.run(f"/switch {conversation.letta_id}")

    first.child.sendline("[[stall:60]] the first is answering")
    first.expect("Echo:")
    said = second.run("my words wait")
    assert f"{letta_agent.name} is still answering in this conversation" in said
    assert "Your text is back at the prompt" in said
    second.expect(re.escape("my words wait"))  # typed again for them, at the prompt
    assert not conversation.messages.filter(content="my words wait").exists()

    first.interrupt()
    first.until_prompt(timeout=30)  # stopped, and Letta let go of the run
    second.child.sendline("")  # Enter: the words at the prompt go
    said = second.until_prompt()
    assert "Echo: my words wait" in said
    assert conversation.messages.filter(content="my words wait").count() == 1


def test_personal_agents_and_other_peoples_conversations_are_refused(
    chat, alice, bob, letta_agent_info, letta_gateway: LettaGateway
):
    template = Agent.objects.create(
        letta_id=letta_agent_info.letta_id,
        name="Tutor",
        model=letta_agent_info.model,
        visible_to_users=True,
        sharing="personal",
    )
    hidden = Agent.objects.create(letta_id="agent-not-visible", name="Internal", sharing="shared")
    copies: list[str] = []
    try:
        terminal = chat("--user", "alice")
        assert "Tutor is personal: your conversations go to your own copy" in terminal.text
        conversation = new_conversation(terminal)
        copy = Agent.objects.get(template=template, owner=alice)
        copies.append(copy.letta_id)
        assert conversation.agent == copy

        # A memory tool call on her copy: shown in one line, its return, and what changed.
        said = terminal.run(
            '[[tool:memory_insert {"label": "human", "new_string": "Likes rooibos."}]] remember'
        )
        assert re.search(r"⚙ memory_insert \{.*\"label\": \"human\"", said)
        assert "↳ success:" in said
        assert "✎ memory human: + Likes rooibos." in said
        assert "your own copy: " + copy.letta_id in terminal.run("/info")
        terminal.child.sendline("/quit")
        assert terminal.exit_status() == 0

        bob_terminal = chat("--user", "bob")
        said = bob_terminal.run(f"/switch {conversation.letta_id}")
        assert f"No conversation {conversation.letta_id} of yours." in said
        said = bob_terminal.run(f"/agent {copy.letta_id}")
        assert f"No agent {copy.letta_id} that you may talk to" in said
        said = bob_terminal.run(f"/agent {hidden.letta_id}")
        assert f"No agent {hidden.letta_id} that you may talk to" in said
        assert "No conversations yet" in bob_terminal.run("/list")
        assert "Nothing matches" in bob_terminal.run("/search remember")
        said = bob_terminal.run("Hello, Tutor")  # his own copy, made now
        assert "Echo: Hello, Tutor" in said
        bobs_copy = Agent.objects.get(template=template, owner=bob)
        copies.append(bobs_copy.letta_id)
        assert bobs_copy.letta_id != copy.letta_id
        assert Conversation.objects.get(owner=bob).agent == bobs_copy
        bob_terminal.child.sendline("/quit")
        assert bob_terminal.exit_status() == 0

        # Not even from the command line.
        refused = chat("--user", "bob", "--agent", copy.letta_id, ready=False)
        assert refused.exit_status() != 0
        assert f"No agent '{copy.letta_id}' that bob may talk to" in refused.text
    finally:
        for letta_id in copies:
            letta_gateway.delete_agent(agent_id=letta_id)


def test_a_dead_letta_server_is_one_line_and_the_text_is_kept(chat, alice, letta_agent: Agent):
    conversation = Conversation.objects.create(
        letta_id="conv-00000000-0000-0000-0000-000000000000", agent=letta_agent, owner=alice
    )
    terminal = chat("--user", "alice", letta="http://127.0.0.1:9")
    terminal.run(f"/switch {conversation.letta_id}")
    said = terminal.run("is anyone there")
    assert "Your message: The Letta server cannot be reached." in said
    assert "Your text is back at the prompt." in said
    terminal.expect(re.escape("is anyone there"))  # at the prompt again
    terminal.child.sendcontrol("u")  # clear it (readline) for the commands below
    assert "Letta could not say more" in terminal.run("/info")
    assert "Could not start a conversation" in terminal.run("/new")
    terminal.child.sendline("/quit")
    assert terminal.exit_status() == 0
    assert "Traceback" not in terminal.text


@pytest.mark.production_stack
def test_a_page_open_on_the_conversation_shows_the_terminals_reply_once(
    chat, alice, letta_agent: Agent, letta_url, letta_api_key, tmp_path
):
    """The terminal's relay tells the page through the web sink, over the Redis channel layer
    that reaches the web server's process: the message and the reply, each once."""
    redis_url = os.environ.get("REDIS_URL", "")
    require(bool(redis_url), "REDIS_URL is not set: two processes need the Redis channel layer")
    (tmp_path / "web").mkdir()
    env = server_env(
        tmp_path / "web", REDIS_URL=redis_url, LETTA_BASE_URL=letta_url, LETTA_API_KEY=letta_api_key
    )
    server = LiveServer(env, tmp_path / "daphne.log")
    server.start()
    loop = asyncio.new_event_loop()
    page: Page | None = None
    try:
        terminal = chat("--user", "alice", "--agent", letta_agent.letta_id)
        conversation = new_conversation(terminal)
        page = Page(server, conversation.letta_id, cookie_of(alice))
        loop.run_until_complete(page.open())
        loop.run_until_complete(page.until(is_idle))  # its catch-up: nothing yet
        assert page.transcript() == []

        # Long enough to come in several of Letta's batches: the page sees pieces appended.
        terminal.run("Hello to the terminal and the page [[long:40]]")
        loop.run_until_complete(page.until(is_idle))
        stored = [
            " ".join(m.content.split())
            for m in conversation.messages.exclude(message_type="system").order_by("created_at")
        ]
        assert stored[0] == "Hello to the terminal and the page [[long:40]]"
        assert len(stored) == 2 and len(stored[1].split()) == 40
        assert page.transcript() == stored  # each once
        assert any(streams_a_piece(frame) for frame in page.frames), "it streamed"
    finally:
        if page is not None and page.socket is not None:
            loop.run_until_complete(page.socket.close())
        loop.close()
        server.stop()


def test_a_page_opened_mid_reply_shows_the_terminals_reply_once_whatever_the_layer(
    chat, alice, letta_agent: Agent, letta_url, letta_api_key, tmp_path
):
    """A page opened (or reconnecting) on the web server while the terminal's reply streams: it
    catches up from the terminal's relay where the channel layer reaches it (Redis), and takes
    the run over where it does not (the in-memory layer of ``bin/run``, one per process); the
    page, the terminal and the database have the reply once either way."""
    (tmp_path / "web").mkdir()
    env = server_env(tmp_path / "web", LETTA_BASE_URL=letta_url, LETTA_API_KEY=letta_api_key)
    server = LiveServer(env, tmp_path / "daphne.log")
    server.start()
    loop = asyncio.new_event_loop()
    page: Page | None = None
    try:
        terminal = chat("--user", "alice", "--agent", letta_agent.letta_id)
        conversation = new_conversation(terminal)
        terminal.child.sendline("[[stall:8]] one two three four five")
        terminal.expect("Echo:")  # the first word; the model pauses before the others
        page = Page(server, conversation.letta_id, cookie_of(alice))
        loop.run_until_complete(page.open())
        try:
            loop.run_until_complete(page.until(is_idle, timeout=60))
        except TimeoutError:
            pytest.fail(
                f"the page never saw the reply end; its frames: {page.frames}\n"
                f"the terminal: {terminal.text[-2000:]}\n"
                f"-- daphne --\n{server.log_path.read_text()[-3000:]}"
            )
        said = terminal.until_prompt()

        reply = "Echo: one two three four five"
        assert reply in said
        assert page.transcript() == ["[[stall:8]] one two three four five", reply]
        assert list(conversation.messages.values_list("message_type", "content", "error")) == [
            ("user", "[[stall:8]] one two three four five", ""),
            ("assistant", reply, ""),
        ]
        assert list(Run.objects.filter(conversation=conversation).values_list("status")) == [
            ("done",)
        ]
    finally:
        if page is not None and page.socket is not None:
            loop.run_until_complete(page.socket.close())
        loop.close()
        server.stop()
