"""The terminal chat: what the person types, as commands and messages, on the page's own code.

Reads go through the selectors (scoped to the person, exactly as the page: another person's
conversation, a hidden agent or someone else's personal copy is "not yours"), writes through the
services and actions the views and the consumer call, and a reply is the same relay and the same
typed events as on the page, printed by a terminal sink (``terminal.sink``).

Threads: the prompt and every database read or write of a command run in the main thread; the
relay of a reply runs on an asyncio loop in a thread of its own (``Loop``), so it goes on (its
heartbeat, a stop being settled) whatever the prompt does. Ctrl-C reaches the main thread: while
a reply streams it stops the reply (Stop, as the page's button); at the prompt it says how to
leave, and a second one leaves.

Tool approvals: a reply that ends asking for the person's approval, or a conversation opened
while a request waits, shows the request and asks ``approve? [y/N/reason]`` inline (``y``
approves, ``n`` or Enter denies, any other text denies with it as the reason, Ctrl-C leaves it
waiting for ``/approve`` or ``/deny``); the answer goes through the action the page uses, and the
reply it continues streams like any other.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import readline
import signal
import sys
import termios
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from conversations import actions, approvals, context, quotas, selectors, services, usage
from conversations.models import Agent, Approval, Conversation
from conversations.relay import ReplyRelay
from conversations.relay import registry as relays
from letta_gateway import LettaError, get_gateway
from lettachat.aio import db_close_connections
from terminal import render
from terminal.interrupt import NUDGE, ctrl_c, interruptible
from terminal.sink import TerminalSink, sender_of

logger = logging.getLogger(__name__)

T = TypeVar("T")
PROMPT = "you> "
HISTORY_DEFAULT = 20
LIST_LIMIT = 50


class Loop:
    """An asyncio loop in a thread of its own, for the relays of this terminal's replies."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="chat-loop", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # Ctrl-C is the main thread's alone (``terminal.interrupt``; the database threads
        # started from here inherit this).
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, NUDGE})
        self.loop.run_forever()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def close(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.submit(cancel_all()).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def wait(future: concurrent.futures.Future[T], on_interrupt: Callable[[], bool]) -> T | None:
    """The future's result; each Ctrl-C meanwhile calls ``on_interrupt``, which says whether to
    stop waiting (then None)."""
    with interruptible():
        while True:
            try:
                return future.result()
            except KeyboardInterrupt:
                if on_interrupt():
                    future.cancel()
                    return None


@contextlib.contextmanager
def no_echo() -> Iterator[None]:
    """While a reply is drawn, the terminal echoes nothing typed (a ``^C`` or typed-ahead keys
    would land inside the reply being redrawn, and leave a second copy of its lines)."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    if fd < 0 or not os.isatty(fd):
        yield
        return
    before = termios.tcgetattr(fd)
    quiet = list(before)
    quiet[3] &= ~(termios.ECHO | termios.ECHOCTL)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, before)


def ask(question: str) -> str:
    """A line typed in answer ("" for Ctrl-C or Ctrl-D)."""
    try:
        with interruptible():
            return input(question)
    except (KeyboardInterrupt, EOFError):
        print()
        return ""


def log_to_file(path: Path) -> None:
    """Logs go to a file: nothing but the chat is printed in the terminal (never a traceback)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    for name in ("", "django"):
        target = logging.getLogger(name)
        for old in list(target.handlers):
            target.removeHandler(old)
        target.addHandler(handler)


@dataclass(frozen=True)
class Command:
    run: Callable[[ChatSession, str], None]
    usage: str
    help: str


class Quit(Exception):
    """The person leaves."""


class ChatSession:
    def __init__(
        self,
        *,
        user: AbstractBaseUser,
        console: Console,
        agent: Agent | None = None,
    ) -> None:
        self.user = user
        self.console = console
        self.agent = agent if agent is not None else selectors.agent_list_visible().first()
        self.conversation: Conversation | None = None
        self.listed: list[Conversation] = []  # numbered by the last /list or /search
        self.agents_listed: list[Agent] = []
        self.pending_text = ""  # typed text that must come back at the prompt
        self.sender = sender_of(os.getpid())
        self.loop = Loop()

    # -- The prompt ------------------------------------------------------------------------------

    def run(self) -> None:
        ctrl_c.install()  # see ``terminal.interrupt``
        self._welcome()
        interrupted = False  # the last thing at the prompt was a Ctrl-C
        try:
            while True:
                try:
                    line = self._read()
                except KeyboardInterrupt:
                    typed = readline.get_line_buffer()
                    self.console.print()
                    if typed.strip():
                        interrupted = False  # a Ctrl-C on a typed line clears the line
                        continue
                    if interrupted:
                        return
                    interrupted = True
                    self._hint("Press Ctrl-C again to quit (or type /quit).")
                    continue
                except EOFError:
                    self.console.print()
                    return
                interrupted = False
                try:
                    self.handle(line)
                except KeyboardInterrupt:
                    self.console.print()
                    self._hint("Interrupted.")
                except Quit:
                    return
        finally:
            self.loop.close()
            db_close_connections()

    def _read(self) -> str:
        text, self.pending_text = self.pending_text, ""
        if text:
            readline.set_startup_hook(ctrl_c.quiet(lambda: readline.insert_text(text)))
        try:
            with interruptible():
                return input(PROMPT)
        finally:
            readline.set_startup_hook(None)

    def handle(self, line: str) -> None:
        """One line typed at the prompt: a command, or a message to the agent."""
        if not line.strip():
            return
        try:
            if line.startswith("/"):
                name, _, argument = line[1:].partition(" ")
                command = COMMANDS.get(name.lower())
                if command is None:
                    self._say(f"No command /{name}. /help lists them.")
                    return
                command.run(self, argument.strip())
            else:
                self.send(line)
        except Quit:
            raise
        except LettaError as exc:
            self._say(f"Letta could not do that: {exc}")
        except Exception as exc:  # never a traceback in the person's terminal: it is in the log
            logger.exception("chat command failed: %r", line[:200])
            self._say(f"Something went wrong: {exc.__class__.__name__}: {exc}")

    # -- Messages --------------------------------------------------------------------------------

    def send(self, text: str) -> None:
        limit = settings.LETTACHAT_MAX_MESSAGE_CHARS
        if len(text) > limit:
            self.pending_text = text
            self._say(
                f"That message is {len(text):,} characters long; the limit is {limit:,}. "
                "Please shorten it."
            )
            return
        if (refusal := usage.quota_refusal(user=self.user)) is not None:
            self.pending_text = text
            self._say(refusal)
            return
        if self.conversation is None:
            self.new("")
            if self.conversation is None:
                self.pending_text = text
                self._say("Your text is back at the prompt.")
                return
        conversation = self.conversation
        agent_name = conversation.agent.origin.name
        sink = TerminalSink(self.console, sender=self.sender, agent_name=agent_name)
        early: list[bool] = []  # a Ctrl-C while the message is being sent: stop at once after

        def hold() -> bool:
            early.append(True)
            return False

        try:
            relay = wait(self.loop.submit(self._start(conversation, text, sink)), hold)
        except actions.ConversationBusy:
            self.pending_text = text
            self._say(
                f"{agent_name} is still answering in this conversation (elsewhere, perhaps in a "
                "browser). Your text is back at the prompt: send it when the reply is done."
            )
            return
        except actions.ApprovalPendingError as exc:
            self.pending_text = text
            self._say(
                f"{agent_name} is waiting for your answer to its request to use "
                f"{exc.approval.tool_names}: answer it first (/approve, or /deny [reason]). "
                "Your text is back at the prompt."
            )
            return
        except (actions.ConversationReadOnly, quotas.QuotaExceeded) as exc:
            self.pending_text = text
            self._say(str(exc))
            return
        if relay is None:  # nothing started here (cannot happen with a new otid): nothing to follow
            return
        self._follow(conversation, sink, relay, stop_now=bool(early))
        if sink.asking is not None:
            self._settle_approval(conversation, sink.asking)
        if sink.given_back is not None:
            self.pending_text = sink.given_back
            self._say("Your text is back at the prompt.")

    async def _start(
        self, conversation: Conversation, text: str, sink: TerminalSink
    ) -> ReplyRelay | None:
        await actions.message_send(
            conversation=conversation,
            text=text,
            otid=str(uuid.uuid4()),
            sender=self.sender,
            also=(sink,),
        )
        # The relay was started just now and has not run yet: it is still registered here.
        return relays.running_here(conversation.pk)

    # -- Approvals -------------------------------------------------------------------------------

    def _settle_approval(self, conversation: Conversation, approval: Approval | None) -> None:
        """Ask ``approve? [y/N/reason]`` for the (shown) pending ``approval``, and again for each
        request the continued reply makes, until none waits or the person leaves it waiting."""
        while approval is not None:
            self._hint(render.APPROVE_HELP)
            answer = self._approval_question()
            if answer is None:
                self._hint("The request waits: /approve or /deny [reason] answers it.")
                return
            word = answer.strip()
            if word.lower() in ("y", "yes"):
                approval = self._answer(conversation, approval, approve=True, reason="")
            elif word.lower() in ("", "n", "no"):
                approval = self._answer(conversation, approval, approve=False, reason="")
            else:
                approval = self._answer(conversation, approval, approve=False, reason=word)

    def _approval_question(self) -> str | None:
        """The line typed at ``approve? [y/N/reason]``; None for Ctrl-C or Ctrl-D (no answer)."""
        try:
            with interruptible():
                return input(render.APPROVE_QUESTION)
        except (KeyboardInterrupt, EOFError):
            self.console.print()
            return None

    def _answer(
        self, conversation: Conversation, approval: Approval, *, approve: bool, reason: str
    ) -> Approval | None:
        """Send the answer and follow the reply it continues (Ctrl-C stops it, as any reply);
        the request that reply makes in turn, if it makes one."""
        sink = TerminalSink(
            self.console, sender=self.sender, agent_name=conversation.agent.origin.name
        )
        early: list[bool] = []

        def hold() -> bool:
            early.append(True)
            return False

        answering = self._start_answer(conversation, approval, sink, approve=approve, reason=reason)
        try:
            relay = wait(self.loop.submit(answering), hold)
        except actions.ApprovalRefused as exc:
            self._say(f"{exc}{self._answered_as(approval)}")
            return None
        except actions.ConversationBusy:
            self._say(f"{conversation.agent.origin.name} is still answering in this conversation.")
            return None
        except (actions.ConversationReadOnly, quotas.QuotaExceeded) as exc:
            self._say(str(exc))
            return None
        if relay is None:
            return None
        self._follow(conversation, sink, relay, stop_now=bool(early))
        return sink.asking

    async def _start_answer(
        self,
        conversation: Conversation,
        approval: Approval,
        sink: TerminalSink,
        *,
        approve: bool,
        reason: str,
    ) -> ReplyRelay | None:
        await actions.approval_answer(
            conversation=conversation,
            user=self.user,
            approval_pk=approval.pk,
            approve=approve,
            reason=reason,
            sender=self.sender,
            also=(sink,),
        )
        return relays.running_here(conversation.pk)

    @staticmethod
    def _answered_as(approval: Approval) -> str:
        """How a request this terminal could not answer was answered (elsewhere)."""
        now = Approval.objects.filter(pk=approval.pk).first()
        if now is None or now.pending:
            return ""
        return f" {render.approval_elsewhere(now)}"

    def approve(self, reason: str) -> None:
        self._answer_command(approve=True, reason=reason)

    def deny(self, reason: str) -> None:
        self._answer_command(approve=False, reason=reason)

    def _answer_command(self, *, approve: bool, reason: str) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        approval = approvals.approval_pending(conversation=conversation)
        if approval is None:
            self._say("Nothing in this conversation is waiting for your approval.")
            return
        then = self._answer(conversation, approval, approve=approve, reason=reason)
        self._settle_approval(conversation, then)

    def _ask_if_waiting(self, conversation: Conversation) -> None:
        """A conversation just opened: a request of it that waits is shown and asked."""
        approval = approvals.approval_pending(conversation=conversation)
        if approval is None:
            return
        self.console.print(
            render.approval_request(approval, agent_name=conversation.agent.origin.name)
        )
        self._settle_approval(conversation, approval)

    def _follow(
        self, conversation: Conversation, sink: TerminalSink, relay: ReplyRelay, *, stop_now: bool
    ) -> None:
        """Until the reply is over: Ctrl-C stops it (the partial reply is kept). Then until its
        relay is done (after a stop: Letta confirmed and what it kept is told)."""
        stopping = False

        def stop() -> bool:
            nonlocal stopping
            if not stopping:
                stopping = True
                self.loop.submit(actions.reply_stop(conversation=conversation))
            return False

        task = relay.task
        assert task is not None, "a relay is started before it is registered"

        async def over() -> None:
            # Told by the relay (its last event); or its task ended without telling (it failed).
            told = asyncio.ensure_future(sink.wait_finished())
            await asyncio.wait({told, task}, return_when=asyncio.FIRST_COMPLETED)
            told.cancel()

        async def done() -> None:
            await asyncio.wait({task})

        if stop_now:
            stop()
        with no_echo():
            wait(self.loop.submit(over()), stop)
            if stopping:
                self.console.print("Telling Letta to stop… (Ctrl-C: stop waiting)", style="dim")
            wait(self.loop.submit(done()), lambda: True)
        sink.quiet = True  # back at the prompt

    # -- Commands --------------------------------------------------------------------------------

    def help(self, _: str) -> None:
        table = Table(box=None, show_header=False, pad_edge=False)
        for command in COMMANDS.values():
            table.add_row(Text(command.usage, style="bold"), command.help)
        self.console.print(table)
        self.console.print(
            "Anything else is a message to the agent. Ctrl-C stops a reply; at the prompt, "
            "Ctrl-C twice quits. When the agent asks to use a tool, answer approve? [y/N/reason]: "
            "y approves, n or Enter denies, any other text denies with it as the reason.",
            style="dim",
            highlight=False,
            markup=False,
        )

    def quit(self, _: str) -> None:
        raise Quit

    def agents(self, _: str) -> None:
        self.agents_listed = list(selectors.agent_list_visible().order_by("name", "pk"))
        if not self.agents_listed:
            self._say("No agent is open to you yet: staff make agents visible in the admin.")
            return
        table = Table(box=None, pad_edge=False, header_style="bold")
        for column in ("#", "agent", "sharing", "id"):
            table.add_column(column)
        for number, agent in enumerate(self.agents_listed, start=1):
            mark = "*" if self.agent is not None and agent.pk == self.agent.pk else ""
            table.add_row(f"{mark}{number}", Text(agent.name), agent.sharing, agent.letta_id)
        self.console.print(table)

    def use_agent(self, argument: str) -> None:
        if not argument:
            self._say("Which agent? /agent ID (or its number in /agents).")
            return
        agent = self._numbered(argument, self.agents_listed)
        if agent is None:
            agent = selectors.agent_get_visible(letta_id=argument)
        if agent is None:
            self._say(f"No agent {argument} that you may talk to. /agents lists them.")
            return
        self.agent, self.conversation, self.listed = agent, None, []
        self._say(
            f"Now with {agent.name}. /list shows your conversations with it, /new starts one."
        )
        self.console.print(render.sharing_line(agent))

    def new(self, title: str) -> None:
        agent = self._require_agent()
        if agent is None:
            return
        try:
            conversation = services.conversation_create(
                gateway=get_gateway(), user=self.user, agent=agent
            )
        except (LettaError, quotas.QuotaExceeded) as exc:
            self._say(f"Could not start a conversation: {exc}")
            return
        self._open(conversation)
        self._say(f"New conversation {conversation.letta_id} with {agent.name}.")
        if title:
            self.rename(title)

    def listing(self, argument: str) -> None:
        agent = self._require_agent()
        if agent is None:
            return
        archived = argument.lower() == "archived"
        page = selectors.conversation_page(
            user=self.user, agent=agent, archived=archived, limit=LIST_LIMIT
        )
        self._show_numbered(
            page.conversations,
            empty="No archived conversations." if archived else "No conversations yet: /new.",
        )
        if page.next_cursor:
            self._say(f"(the {LIST_LIMIT} most recent; /search finds older ones)")

    def search(self, query: str) -> None:
        agent = self._require_agent()
        if agent is None:
            return
        query = " ".join(query.split())[: services.SUMMARY_CHARS]
        if not query:
            self._say("Search for what? /search TEXT")
            return
        letta_ids: list[str] = []
        try:
            letta_ids = [
                info.letta_id
                for info in get_gateway().list_conversations(
                    agent_id=agent.letta_id, summary_search=query, limit=selectors.SEARCH_LIMIT
                )
            ]
        except LettaError as exc:  # the mirror's own titles and messages are still searched
            self._say(f"Letta's summaries could not be searched ({exc}); searching here only.")
        found = selectors.conversation_search(
            user=self.user, agent=agent, query=query, letta_ids=letta_ids
        )
        self._show_numbered(found, empty=f"Nothing matches “{query}”.")

    def switch(self, argument: str) -> None:
        if not argument:
            self._say("Switch to which? /switch N (from /list or /search), or a conversation id.")
            return
        listed = self._numbered(argument, self.listed)
        conversation = (
            selectors.conversation_get(user=self.user, letta_id=listed.letta_id)
            if listed is not None
            else selectors.conversation_get(user=self.user, letta_id=argument)
        )
        if conversation is None:
            if argument.isdigit():
                self._say(f"No conversation number {argument}: /list numbers them.")
            else:
                self._say(f"No conversation {argument} of yours.")
            return
        self._open(conversation)
        count = selectors.conversation_message_counts(conversations=[conversation])
        self._say(
            f"Now in “{conversation.title}” ({count.get(conversation.pk, 0)} messages; "
            "/history shows them)."
        )
        if conversation.read_only:
            self.console.print(render.note(str(services.ConversationReadOnly())))
        self._ask_if_waiting(conversation)

    def history(self, argument: str) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        if argument and not argument.isdigit():
            self._say("/history [n]: how many messages, a number.")
            return
        limit = max(1, int(argument)) if argument else HISTORY_DEFAULT
        page = selectors.message_page_recent(conversation=conversation, limit=limit)
        selectors.message_list_attach_usage(conversation=conversation, messages=page.messages)
        if not page.messages:
            self._say("No messages yet.")
            return
        if page.older_cursor is not None:
            self._say(f"(the last {limit}; /history N shows more)")
        agent_name = conversation.agent.origin.name
        for message in page.messages:
            self.console.print(
                render.message(message, agent_name=agent_name),
                no_wrap=render.is_one_line(message),
                overflow="ellipsis",
            )
            if (turn := getattr(message, "turn_usage", None)) is not None:
                self.console.print(render.usage(turn))

    def info(self, _: str) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        try:
            about = context.conversation_context(gateway=get_gateway(), conversation=conversation)
        except LettaError as exc:
            self._say(f"Letta could not say more about this conversation: {exc}")
            return
        details = about.details
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_row("id", details.letta_id)
        agent = conversation.agent
        whose = f" (your own copy: {agent.letta_id})" if agent.is_copy else f" ({agent.letta_id})"
        table.add_row("agent", Text(agent.origin.name + whose))
        table.add_row("created", render.when(details.created_at or conversation.created_at))
        table.add_row("summary", Text(details.summary or "-"))
        table.add_row("in context", f"{about.in_context} messages in the agent's context window")
        if about.left_context:
            table.add_row("left context", f"{len(about.left_context)} shown messages")
        if about.compactions:
            table.add_row("compacted", f"{about.compactions} time(s)")
        if about.context_tokens is not None and about.context_window:
            table.add_row(
                "context",
                f"{about.context_tokens:,} / {about.context_window:,} tokens "
                f"({about.context_percent}%) after the last turn",
            )
        elif about.context_window:
            table.add_row("context window", f"{about.context_window:,} tokens")
        self.console.print(table)

    def rename(self, title: str) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        try:
            services.conversation_rename(
                gateway=get_gateway(), conversation=conversation, summary=title
            )
        except ValidationError as exc:
            self._say(exc.messages[0])
            return
        except LettaError as exc:
            self._say(f"Could not rename the conversation: {exc}")
            return
        self._say(f"Renamed to “{conversation.title}”.")

    def archive(self, _: str) -> None:
        self._set_archived(archived=True)

    def unarchive(self, _: str) -> None:
        self._set_archived(archived=False)

    def _set_archived(self, *, archived: bool) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        services.conversation_set_archived(conversation=conversation, archived=archived)
        if archived:
            self._say(f"Archived “{conversation.title}” (/list archived shows it; /unarchive).")
        else:
            self._say(f"“{conversation.title}” is back in /list.")

    def delete(self, _: str) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        answer = ask(f"Delete “{conversation.title}”, in Letta too? It cannot be undone. [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            self._say("Kept.")
            return
        try:
            services.conversation_delete(gateway=get_gateway(), conversation=conversation)
        except LettaError as exc:
            self._say(f"Could not delete the conversation: {exc}")
            return
        self.conversation = None
        self.listed = [c for c in self.listed if c.letta_id != conversation.letta_id]
        self._say(f"Deleted {conversation.letta_id}.")

    def fork(self, _: str) -> None:
        conversation = self._require_conversation()
        if conversation is None:
            return
        try:
            fork = services.conversation_fork(
                gateway=get_gateway(), user=self.user, conversation=conversation
            )
        except (services.ConversationReadOnly, quotas.QuotaExceeded) as exc:
            self._say(f"Could not fork the conversation: {exc}")
            return
        except LettaError as exc:
            self._say(f"Could not fork the conversation: {exc}")
            return
        self._open(fork)
        count = selectors.conversation_message_counts(conversations=[fork])
        self._say(
            f"Forked into {fork.letta_id} “{fork.title}” ({count.get(fork.pk, 0)} messages); "
            "you are in the copy now."
        )

    # -- Helpers ---------------------------------------------------------------------------------

    def _welcome(self) -> None:
        name = self.user.get_username()
        if self.agent is None:
            self._say(f"Hello {name}. No agent is open to you yet: staff make agents visible.")
        else:
            self._say(f"Hello {name}. You are talking to {self.agent.name}.")
            self.console.print(render.sharing_line(self.agent))
        self.console.print(
            "Type a message to start a conversation, or /help. Ctrl-C stops a reply.",
            style="dim",
            highlight=False,
        )

    def _open(self, conversation: Conversation) -> None:
        self.conversation = conversation
        self.agent = conversation.agent.origin

    def _require_agent(self) -> Agent | None:
        if self.agent is None:
            self._say("Pick an agent first: /agents, then /agent ID.")
        return self.agent

    def _require_conversation(self) -> Conversation | None:
        if self.conversation is None:
            self._say("No conversation open: /list and /switch N, or /new.")
        return self.conversation

    def _show_numbered(self, conversations: list[Conversation], *, empty: str) -> None:
        self.listed = conversations
        if not conversations:
            self._say(empty)
            return
        counts = selectors.conversation_message_counts(conversations=conversations)
        self.console.print(
            render.conversation_list(conversations, counts, current=self.conversation),
            overflow="ellipsis",
        )

    @staticmethod
    def _numbered(argument: str, items: list[T]) -> T | None:
        if argument.isdigit() and 1 <= int(argument) <= len(items):
            return items[int(argument) - 1]
        return None

    def _hint(self, text: str) -> None:
        self.console.print(text, style="dim", highlight=False, markup=False)

    def _say(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False)


COMMANDS: dict[str, Command] = {
    "new": Command(ChatSession.new, "/new [name]", "start a conversation (and name it)"),
    "list": Command(ChatSession.listing, "/list [archived]", "your conversations with this agent"),
    "switch": Command(ChatSession.switch, "/switch N", "open conversation N of /list (or an id)"),
    "history": Command(ChatSession.history, "/history [n]", "the last n messages (20)"),
    "info": Command(ChatSession.info, "/info", "what Letta says about this conversation"),
    "agents": Command(ChatSession.agents, "/agents", "the agents you may talk to"),
    "agent": Command(ChatSession.use_agent, "/agent ID", "talk to another agent"),
    "rename": Command(ChatSession.rename, "/rename TITLE", "retitle this conversation"),
    "archive": Command(ChatSession.archive, "/archive", "archive this conversation"),
    "unarchive": Command(ChatSession.unarchive, "/unarchive", "bring it back to /list"),
    "delete": Command(ChatSession.delete, "/delete", "delete it, in Letta too (asks first)"),
    "fork": Command(ChatSession.fork, "/fork", "copy this conversation and continue the copy"),
    "approve": Command(
        ChatSession.approve, "/approve [reason]", "approve the tool request waiting here"
    ),
    "deny": Command(ChatSession.deny, "/deny [reason]", "deny it (the reason goes to the agent)"),
    "search": Command(ChatSession.search, "/search TEXT", "find conversations by title or text"),
    "help": Command(ChatSession.help, "/help", "this list"),
    "quit": Command(ChatSession.quit, "/quit", "leave (Ctrl-C twice, Ctrl-D too)"),
}
