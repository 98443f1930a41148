"""Walk through Letta's Conversations API on the configured Letta server: a demo agent, a streamed
exchange, isolation between conversations, list and retrieve, cursor pagination, and memory shared
between conversations. Then delete what it made, after asking (--yes deletes, --keep keeps).

Every call goes through lettachat's gateway (``letta_gateway``), as the app's own do. Nothing is
written to lettachat's database: the demo agent is not synced, and nobody can chat with it."""

from __future__ import annotations

import json
import secrets
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, TextIO

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm
from rich.table import Table
from rich.text import Text

from letta_gateway import (
    AgentInfo,
    ContentDelta,
    Gateway,
    LettaError,
    LettaNotFound,
    LettaUnavailable,
    MessageInfo,
    RunStarted,
    Stopped,
    StreamError,
    ToolCallDelta,
    ToolReturn,
    Usage,
    get_gateway,
)

# The local server's offline model (devtools/local_letta) answers directives instead of words:
# with it the demo steers the agent exactly; with a real model it asks in plain words.
SCRIPTED_MODEL_ID = "lettachat-demo"
PAGE_SIZE = 2
SHOWN_IDS = 3


class StepFailed(Exception):
    """A step of the demo did not do what it shows; ``str()`` says what, for a person."""


@dataclass
class Turn:
    """One exchange as it streamed: the reply's text, its run, and what Letta said about it."""

    reply: str = ""
    run_id: str = ""
    stop_reason: str = ""
    context_tokens: int | None = None
    total_tokens: int | None = None


@dataclass
class Made:
    """What the demo made on Letta, so it can delete exactly that."""

    agent: AgentInfo | None = None
    block_ids: list[str] = field(default_factory=list)
    conversations: dict[str, str] = field(default_factory=dict)  # letta id → its role here

    def __bool__(self) -> bool:
        return self.agent is not None or bool(self.conversations)


class Demo:
    """The demo's steps, in order; each prints as it goes and raises StepFailed or LettaError."""

    def __init__(self, *, gateway: Gateway, console: Console, model: str, tag: str) -> None:
        self.gateway = gateway
        self.console = console
        self.model = model
        self.tag = tag
        self.made = Made()
        self.scripted = False
        self.context_window: int | None = None
        self.ticket_a = f"A-{tag}"
        self.ticket_b = f"B-{tag}"
        self.fact = f"Favourite tea: rooibos (demo {tag})"

    # --- output --------------------------------------------------------------------------------

    def progress(self, text: str) -> None:
        self.console.print(f"[dim]…[/dim] {text}")

    def done(self, text: str) -> None:
        self.console.print(f"[green]✓[/green] {text}")

    def note(self, text: str) -> None:
        self.console.print(f"  [dim]{text}[/dim]")

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]![/yellow] {text}")

    # --- the steps -----------------------------------------------------------------------------

    def server(self) -> None:
        version = self.gateway.health()
        self.done(f"Letta {escape(version)} answers at {escape(settings.LETTA_BASE_URL)}")
        if not self.model:
            self.model = self._model_of_an_agent()
            self.note(
                f"model {escape(self.model)}, taken from an agent already on the server (--model)"
            )
        self.scripted = self.model.rsplit("/", 1)[-1] == SCRIPTED_MODEL_ID
        if self.scripted:
            self.note(
                escape(
                    "the local offline model: messages carry [[directives]] that make it call "
                    "tools and quote memory; a real model is asked in plain words"
                )
            )

    def _model_of_an_agent(self) -> str:
        for agent in self.gateway.list_agents():
            if agent.model:
                return agent.model
        raise StepFailed(
            "no agent on this Letta server to take a model from: pass --model HANDLE "
            "(for example openai/gpt-4o-mini)"
        )

    def agent(self) -> None:
        name = f"conversations-demo-{self.tag}"
        self.progress(f"creating agent [bold]{name}[/bold] with memory blocks human and persona")
        agent = self.gateway.create_agent(
            name=name,
            model=self.model,
            description="Made by lettachat's `manage.py conversations_demo`; safe to delete.",
            blocks={
                "human": "Name: Ada. Trying out Letta's Conversations API.",
                "persona": "I am the conversations demo agent: brief and friendly. I keep what "
                "I learn about the person in my human block.",
            },
        )
        self.made.agent = agent
        blocks = self.gateway.list_blocks(agent_id=agent.letta_id)
        self.made.block_ids = [b.block_id for b in blocks if b.block_id]
        details = self.gateway.retrieve_agent(agent_id=agent.letta_id)
        self.context_window = details.context_window
        self.done(f"agent {agent.letta_id} (model {escape(agent.model or self.model)})")
        for block in blocks:
            self.note(f"{block.label} ({block.block_id}): {_line(block.value)}")
        if self.context_window:
            self.note(f"context window: {self.context_window:,} tokens")

    def exchange(self) -> None:
        first = self._conversation("A", "Demo A: a streamed exchange")
        self._say(first, f"Hello! I'm Ada, and my ticket is {self.ticket_a}. What can you do?")
        self._say(first, "Thanks. Can you say that again, in fewer words?")
        count = len(self.gateway.list_messages(conversation_id=first))
        self.done(f"two turns in conversation A; Letta stored {count} messages")

    def isolation(self) -> None:
        second = self._conversation("B", "Demo B: isolation")
        self._say(second, f"In this conversation only: my ticket is {self.ticket_b}.")
        first = self._conversation_id("A")
        for here, there, ticket in (
            ("A", first, self.ticket_b),
            ("B", second, self.ticket_a),
        ):
            messages = self.gateway.list_messages(conversation_id=there, limit=100)
            leaked = [m for m in messages if ticket in m.content]
            if leaked:
                raise StepFailed(
                    f"conversation {here} holds {ticket}, said only in the other conversation "
                    f"({leaked[0].letta_id})"
                )
            self.done(
                f"conversation {here}: {len(messages)} messages, none mentions {ticket} "
                "from the other one"
            )
        self.note("both conversations share the agent's memory blocks; each has its own messages")

    def list_and_retrieve(self) -> None:
        agent = self._agent()
        conversations = self.gateway.list_conversations(agent_id=agent.letta_id, limit=50)
        table = Table(title=f"conversations.list(agent_id={agent.letta_id})", title_justify="left")
        table.add_column("conversation", no_wrap=True)
        table.add_column("summary")
        table.add_column("in context", justify="right")
        for conv in conversations:
            details = self.gateway.retrieve_conversation(conversation_id=conv.letta_id)
            table.add_row(
                conv.letta_id,
                escape(details.summary),
                str(len(details.in_context_message_ids)),
            )
        self.console.print(table)
        ours = set(self.made.conversations)
        listed = {c.letta_id for c in conversations}
        if not ours <= listed:
            raise StepFailed(f"the list misses {', '.join(sorted(ours - listed))}")
        self.done(f"{len(conversations)} conversations listed, newest first")
        first = self._conversation_id("A")
        details = self.gateway.retrieve_conversation(conversation_id=first)
        self.console.print(f"conversations.retrieve({first}):")
        self.note(f"summary: {escape(details.summary)}")
        self.note(f"created: {_when(details.created_at)}")
        stored = len(self.gateway.list_messages(conversation_id=first, limit=100))
        self.note(
            f"in-context messages: {len(details.in_context_message_ids)} (of {stored} in its "
            "history: all of them until Letta compacts it)"
        )
        for message_id in details.in_context_message_ids[:SHOWN_IDS]:
            self.note(f"  {message_id}")
        if len(details.in_context_message_ids) > SHOWN_IDS:
            self.note(f"  … and {len(details.in_context_message_ids) - SHOWN_IDS} more")
        self.done("retrieved conversation A")

    def pagination(self) -> None:
        first = self._conversation_id("A")
        pages: list[list[MessageInfo]] = []
        after: str | None = None
        while True:
            page = self.gateway.list_messages(conversation_id=first, after=after, limit=PAGE_SIZE)
            pages.append(page)
            cursor = f"after={after}" if after else "from the start"
            self.console.print(
                f"page {len(pages)} (limit={PAGE_SIZE}, {cursor}): {len(page)} message(s)"
            )
            for message in page:
                self.note(f"{message.letta_id}  {message.message_type:<9} {_preview(message)}")
            if len(page) < PAGE_SIZE:
                break
            after = page[-1].letta_id
        paged = [m.letta_id for page in pages for m in page]
        whole = [m.letta_id for m in self.gateway.list_messages(conversation_id=first, limit=100)]
        if paged != whole:
            raise StepFailed(
                f"the pages hold {len(paged)} messages, one read of 100 holds {len(whole)}"
            )
        self.done(
            f"{len(pages)} pages of at most {PAGE_SIZE}: the same {len(whole)} messages, in "
            "the same order, as one read"
        )

    def shared_memory(self) -> None:
        agent = self._agent()
        storing = self._conversation("C", "Demo C: stores a fact")
        if self.scripted:
            directive = json.dumps({"label": "human", "new_string": self.fact})
            text = f"[[tool:memory_insert {directive}]] Please remember my favourite tea."
        else:
            text = f'Please remember this about me in your memory: "{self.fact}".'
        self._say(storing, text)
        human = next(
            (b for b in self.gateway.list_blocks(agent_id=agent.letta_id) if b.label == "human"),
            None,
        )
        if human is not None and self.fact in human.value:
            self.done("the agent stored it in its human block (shared by all its conversations)")
            self.note(f"human: {_line(human.value)}")
        elif self.scripted:
            raise StepFailed("the memory_insert call did not change the human block")
        else:
            self.warn("the model did not store it in its human block (a real model decides)")
        recalling = self._conversation("D", "Demo D: recalls it")
        if self.scripted:
            text = "[[block:human]] What do you know about me?"
        else:
            text = "What is my favourite tea?"
        turn = self._say(recalling, text)
        if "rooibos" in turn.reply.lower():
            self.done("a new conversation recalled it: memory is the agent's, not one thread's")
        elif self.scripted:
            raise StepFailed("the new conversation did not see the stored fact")
        else:
            self.warn("the reply does not mention it (a real model decides what to say)")
        self.note(
            "on Letta 0.16.8 a conversation sees memory as it was when it started: "
            "new conversations see changes at once"
        )

    # --- helpers -------------------------------------------------------------------------------

    def _agent(self) -> AgentInfo:
        assert self.made.agent is not None, "the agent step comes first"
        return self.made.agent

    def _conversation(self, role: str, summary: str) -> str:
        info = self.gateway.create_conversation(agent_id=self._agent().letta_id)
        self.made.conversations[info.letta_id] = role
        self.gateway.update_conversation(conversation_id=info.letta_id, summary=summary)
        self.done(f"conversation {role}: {info.letta_id} “{escape(summary)}”")
        return info.letta_id

    def _conversation_id(self, role: str) -> str:
        return next(cid for cid, r in self.made.conversations.items() if r == role)

    def _say(self, conversation_id: str, text: str) -> Turn:
        """Send ``text`` and print the reply as it streams."""
        role = self.made.conversations.get(conversation_id, "?")
        self.console.print(Text.assemble((f"[{role}] you > ", "bold cyan"), text))
        turn = Turn()
        writer = _StreamWriter(self.console, role)
        for event in self.gateway.stream_reply(
            conversation_id=conversation_id, text=text, otid=str(uuid.uuid4())
        ):
            if isinstance(event, RunStarted):
                turn.run_id = event.run_id
            elif isinstance(event, ContentDelta):
                writer.write(event.message_id, event.kind, event.text)
                if event.kind == "assistant":
                    turn.reply += event.text
            elif isinstance(event, ToolCallDelta):
                writer.tool_call(event.message_id, event.name, event.arguments)
            elif isinstance(event, ToolReturn):
                writer.tool_return(event.status, event.content)
            elif isinstance(event, StreamError):
                writer.end()
                raise StepFailed(f"the agent's run failed: {event.message}")
            elif isinstance(event, Stopped):
                turn.stop_reason = event.reason
            elif isinstance(event, Usage):
                turn.context_tokens = event.context_tokens
                turn.total_tokens = event.total_tokens
        writer.end()
        if turn.stop_reason and turn.stop_reason != "end_turn":
            raise StepFailed(f"the reply ended with stop reason {turn.stop_reason}")
        self.note(_turn_line(turn, self.context_window))
        return turn

    # --- cleaning up ---------------------------------------------------------------------------

    def made_lines(self) -> Iterator[str]:
        if self.made.agent is not None:
            agent = self.made.agent
            yield f"agent {agent.letta_id} ({agent.name})"
            if self.made.block_ids:
                yield f"memory blocks {', '.join(self.made.block_ids)}"
        for conversation_id, role in self.made.conversations.items():
            yield f"conversation {role} {conversation_id}"

    def delete(self) -> None:
        """Delete what the demo made; the agent last (Letta leaves its blocks: the gateway
        deletes those too), then check with Letta that it is gone."""
        for conversation_id, role in list(self.made.conversations.items()):
            with suppress(LettaNotFound):  # already gone
                self.gateway.delete_conversation(conversation_id=conversation_id)
            del self.made.conversations[conversation_id]
            self.done(f"deleted conversation {role} {conversation_id}")
        if self.made.agent is not None:
            agent_id = self.made.agent.letta_id
            with suppress(LettaNotFound):
                self.gateway.delete_agent(agent_id=agent_id)
            self.done(f"deleted agent {agent_id} and its memory blocks")
            self._check_gone(agent_id)
            self.made.agent = None
            self.made.block_ids = []

    def _check_gone(self, agent_id: str) -> None:
        checks: list[tuple[str, Callable[[], object]]] = [
            (agent_id, partial(self.gateway.retrieve_agent, agent_id=agent_id))
        ]
        checks += [
            (block_id, partial(self.gateway.retrieve_block, block_id=block_id))
            for block_id in self.made.block_ids
        ]
        left = []
        for item, read in checks:
            try:
                read()
            except LettaNotFound:
                continue
            left.append(item)
        if left:
            raise StepFailed(f"Letta still has {', '.join(left)}")
        self.done("Letta no longer knows the agent or its blocks")


class _StreamWriter:
    """Prints a reply's pieces as they arrive: a label when a new message starts, then its text."""

    def __init__(self, console: Console, role: str) -> None:
        self.console = console
        self.role = role
        self.current = ""  # the message being written, if any

    def _start(self, message_id: str, label: str, style: str) -> None:
        if message_id == self.current:
            return
        self.end()
        self.current = message_id
        self.console.print(Text(f"[{self.role}] {label} > ", style=style), end="")

    def write(self, message_id: str, kind: str, text: str) -> None:
        if kind == "reasoning":
            self._start(f"{message_id}/reasoning", "thinking", "dim italic")
            self.console.print(Text(text, style="dim italic"), end="")
        else:
            self._start(f"{message_id}/assistant", "agent", "bold green")
            self.console.print(Text(text), end="")

    def tool_call(self, message_id: str, name: str, arguments: str) -> None:
        if f"{message_id}/tool" != self.current:
            self._start(f"{message_id}/tool", "tool call", "bold magenta")
            self.console.print(Text(f"{name} ", style="magenta"), end="")
        self.console.print(Text(arguments, style="dim"), end="")

    def tool_return(self, status: str, content: str) -> None:
        self.end()
        style = "red" if status == "error" else "dim"
        self.console.print(Text(f"  ↳ {status}: {_line(content, escaped=False)}", style=style))

    def end(self) -> None:
        if self.current:
            self.console.print()
            self.current = ""


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "?"


def _line(text: str, width: int = 100, *, escaped: bool = True) -> str:
    """``text`` on one line, cut at ``width``; markup-escaped unless printed as a ``Text``."""
    line = " ".join(text.split())
    line = line if len(line) <= width else line[: width - 1] + "…"
    return escape(line) if escaped else line


def _preview(message: MessageInfo) -> str:
    return _line(message.content, 48)


def _turn_line(turn: Turn, window: int | None) -> str:
    parts = [turn.run_id or "run ?"]
    if turn.total_tokens is not None:
        parts.append(f"{turn.total_tokens:,} tokens")
    if turn.context_tokens is not None:
        parts.append(
            f"context {turn.context_tokens:,}"
            + (f" / {window:,} ({turn.context_tokens / window:.0%})" if window else "")
        )
    return " · ".join(parts)


STEPS: list[tuple[str, Callable[[Demo], None]]] = [
    ("The Letta server", Demo.server),
    ("A demo agent", Demo.agent),
    ("A streamed exchange", Demo.exchange),
    ("Isolation between conversations", Demo.isolation),
    ("List and retrieve", Demo.list_and_retrieve),
    ("Cursor pagination", Demo.pagination),
    ("Shared memory", Demo.shared_memory),
]


class Command(BaseCommand):
    help = __doc__

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--model",
            default="",
            help="The demo agent's model handle (default: the model of an agent already on the "
            "server, which on the local one is its offline model).",
        )
        what = parser.add_mutually_exclusive_group()
        what.add_argument(
            "--yes", action="store_true", help="Delete what the demo made without asking."
        )
        what.add_argument("--keep", action="store_true", help="Keep what the demo made.")

    def handle(self, *args: Any, **options: Any) -> None:
        out: TextIO = options.get("stdout") or sys.stdout
        console = Console(
            file=out,
            highlight=False,
            emoji=False,
            soft_wrap=True,
            no_color=bool(options.get("no_color")),
            force_terminal=True if options.get("force_color") else None,
        )
        demo = Demo(
            gateway=get_gateway(),
            console=console,
            model=options["model"],
            tag=secrets.token_hex(3),
        )
        failure = ""
        for number, (title, step) in enumerate(STEPS, start=1):
            console.print()
            console.rule(f"[bold]{number}. {title}", align="left")
            try:
                with _interruptible():
                    step(demo)
            except LettaUnavailable as exc:
                failure = (
                    f"step {number} ({title}) failed: Letta does not answer at "
                    f"{settings.LETTA_BASE_URL} ({_reason(exc)[:-1]}). Start it (bin/run starts "
                    "the local one) or set LETTA_BASE_URL."
                )
            except (LettaError, StepFailed) as exc:
                failure = f"step {number} ({title}) failed: {_reason(exc)}"
            if failure:
                console.print(f"[bold red]✗[/bold red] {escape(failure)}")
                break
        console.print()
        console.rule(f"[bold]{len(STEPS) + 1}. Clean up", align="left")
        self._clean_up(demo, console, yes=options["yes"], keep=options["keep"])
        if failure:
            raise CommandError(f"The demo stopped at {failure}")
        console.print()
        console.print("[bold green]The demo ran to the end.[/bold green]")

    def _clean_up(self, demo: Demo, console: Console, *, yes: bool, keep: bool) -> None:
        if not demo.made:
            console.print("Nothing was made on Letta.")
            return
        console.print("Made on Letta:")
        for line in demo.made_lines():
            demo.note(line)
        if keep or not (yes or self._confirm(console)):
            console.print("Kept: they stay on Letta until you delete them there.")
            return
        try:
            with _interruptible():
                demo.delete()
        except (LettaError, StepFailed) as exc:
            console.print(f"[bold red]✗[/bold red] could not delete everything: {_reason(exc)}")
            console.print("Left on Letta:")
            for line in demo.made_lines():
                demo.note(line)
            raise CommandError(f"Cleaning up failed: {_reason(exc)}") from exc

    @staticmethod
    def _confirm(console: Console) -> bool:
        try:
            return bool(Confirm.ask("Delete them?", console=console, default=True))
        except (EOFError, KeyboardInterrupt):  # no one to answer: keep
            console.print()
            return False


class Interrupted(StepFailed):
    """Ctrl-C during a step."""


@contextmanager
def _interruptible() -> Iterator[None]:
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted("interrupted (Ctrl-C)") from None


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text if text.endswith(".") else f"{text}."
