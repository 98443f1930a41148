"""The terminal sink (``manage.py chat``) given a reply's events as data: what it prints."""

from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console

from conversations import approvals, events
from conversations.models import Approval, Conversation, Message
from conversations.selectors import TurnUsage
from terminal.sink import TerminalSink, sender_of

ME = sender_of(4242)
NO_CONVERSATION = Conversation()  # the sink prints; it never looks the conversation up


def terminal(*, width: int = 80, color: bool = False) -> tuple[TerminalSink, io.StringIO]:
    out = io.StringIO()
    console = Console(
        file=out,
        width=width,
        force_terminal=color,
        color_system="standard" if color else None,
        highlight=False,
    )
    return TerminalSink(console, sender=ME, agent_name="Helper"), out


def message(kind: str, content: str, **extra: object) -> Message:
    return Message(message_type=kind, content=content, **extra)


def lines(out: io.StringIO) -> list[str]:
    """What was printed, line by line, without the padding markdown adds to the width."""
    return [line.rstrip() for line in out.getvalue().splitlines()]


def feed(sink: TerminalSink, *items: events.Event) -> None:
    for item in items:
        sink.handle(item)


def streamed(stream_id: str, kind: events.DraftKind, pieces: list[str], stored: Message, name=""):
    return [
        events.DraftStarted(events.Draft(stream_id, kind, pieces[0], name)),
        *(events.TextAppended(stream_id, piece) for piece in pieces[1:]),
        events.DraftStored(stream_id, stored),
    ]


def test_a_streamed_reply_is_headed_by_the_agent_and_ends_as_rendered_markdown():
    sink, out = terminal()
    text = "Echo: hello **world**"
    feed(
        sink,
        events.ReplyStatus("answering", "Helper"),
        *streamed(
            "assistant-1",
            "assistant",
            ["Echo:", " hello", " **world**"],
            message("assistant", text),
        ),
        events.UsageReported(TurnUsage(1, 420, 400, 20, 420, "")),
        events.ReplyFinished("done"),
    )
    printed = out.getvalue()
    assert printed.startswith("Helper is answering… (Ctrl-C stops it)\n")
    assert "Echo: hello world" in printed  # markdown rendered: no asterisks
    assert "**" not in printed
    assert printed.rstrip().endswith("420 tokens · context 420")
    assert sink.finished and sink.outcome == "done"


def test_the_header_is_said_once_per_reply():
    sink, out = terminal()
    feed(sink, events.ReplyStatus("answering", "Helper"), events.ReplyStatus("answering", "Helper"))
    assert out.getvalue().count("is answering") == 1


def test_reasoning_streams_dimmed():
    sink, out = terminal(color=True)
    feed(
        sink,
        *streamed(
            "reasoning-1",
            "reasoning",
            ["hmm", ", let me see"],
            message("reasoning", "hmm, let me see"),
        ),
    )
    printed = out.getvalue()
    assert "\x1b[2;3mthinking: \x1b[0m\x1b[2;3mhmm\x1b[0m\x1b[2;3m, let me see\x1b[0m" in printed
    assert printed.endswith("\n")


def test_a_tool_call_and_its_return_take_one_line_each_cut_to_the_width():
    sink, out = terminal(width=60)
    arguments = '{\n  "label": "human",\n  "new_string": "' + "x" * 200 + '"\n}'
    feed(
        sink,
        *streamed(
            "tool_call-1",
            "tool_call",
            [arguments[:10], arguments[10:]],
            message("tool_call", arguments, name="memory_insert"),
            name="memory_insert",
        ),
        events.MessageAdded(message("tool_return", "Done.\nAll of it.", name="success")),
        events.MessageAdded(message("tool_return", "Traceback: boom", name="error")),
    )
    lines = out.getvalue().splitlines()
    assert lines[0].startswith('⚙ memory_insert { "label": "human", "new_string": "xx')
    assert lines[0].endswith("…") and len(lines[0]) == 60
    assert lines[1] == "  ↳ success: Done. All of it."
    assert lines[2] == "  ↳ Tool error (error): Traceback: boom"
    assert len(lines) == 3


def test_a_tool_error_is_red_and_a_success_dim():
    sink, out = terminal(color=True)
    feed(
        sink,
        events.MessageAdded(message("tool_return", "fine", name="success")),
        events.MessageAdded(message("tool_return", "bad", name="error")),
    )
    success, error = out.getvalue().splitlines()
    assert success.startswith("\x1b[2m")
    assert error.startswith("\x1b[31m")


def test_a_stopped_reply_keeps_its_partial_text_and_says_so():
    sink, out = terminal()
    feed(
        sink,
        events.ReplyStatus("answering", "Helper"),
        *streamed(
            "assistant-1",
            "assistant",
            ["Echo:", " half"],
            message("assistant", "Echo: half", error="Stopped."),
        ),
        events.ReplyFinished("stopped"),
        events.MessageChanged(
            message(
                "user",
                "hi",
                error="Stopped: the agent did not keep this turn, and will not remember it.",
            )
        ),
    )
    printed = "\n".join(lines(out))
    assert "\nEcho: half\n" in printed
    assert "Stopped. The partial reply is kept." in printed
    assert "! Your message: Stopped: the agent did not keep this turn" in printed
    assert sink.outcome == "stopped"


def test_a_reply_cut_before_its_draft_was_stored_ends_its_lines():
    sink, out = terminal()
    feed(
        sink,
        events.DraftStarted(events.Draft("assistant-1", "assistant", "Echo: cut", "")),
        events.ReplyFinished("failed"),
    )
    assert out.getvalue().endswith("\n")
    assert lines(out) == ["Echo: cut"]


def test_text_given_back_is_kept_for_this_terminal_only():
    sink, out = terminal()
    feed(sink, events.TextGivenBack("someone else's words", "ws:specific..inmemory!abc"))
    assert sink.given_back is None
    feed(sink, events.TextGivenBack("my words", ME))
    assert sink.given_back == "my words"
    assert out.getvalue() == ""


def test_what_is_for_pages_prints_nothing():
    sink, out = terminal()
    status = events.ReplyStatus("answering", "Helper")
    feed(
        sink,
        events.Resync(),
        events.Snapshot("ws:x", [message("assistant", "old")], None, status),
        events.ConversationActive(NO_CONVERSATION, retitled=True),
        events.MessageAdded(message("user", "what I typed")),  # already at the prompt
        events.MessageChanged(message("assistant", "a final form")),
    )
    assert out.getvalue() == ""


def test_notes_and_failed_messages_are_told():
    sink, out = terminal()
    feed(
        sink,
        events.MessageAdded(message("error", "The Letta server cannot be reached.")),
        events.MessageChanged(message("user", "hi", error="Letta did not get this message.")),
    )
    assert out.getvalue().splitlines() == [
        "! The Letta server cannot be reached.",
        "! Your message: Letta did not get this message.",
    ]


def test_a_memory_change_says_which_block_and_what():
    sink, out = terminal()
    change = {"label": "human", "removed": "", "added": "Likes tea", "size": 9, "limit": 100}
    tool_return = message("tool_return", "ok", name="success", memory_change=change)
    feed(sink, events.MemoryChanged(tool_return, blocks=[]))
    assert out.getvalue() == "  ✎ memory human: + Likes tea\n"


def test_a_stall_is_told_once():
    sink, out = terminal()
    stalled = events.ReplyStatus("stalled", "Helper", stalled_for=30)
    feed(sink, stalled, stalled)
    assert out.getvalue() == "! Helper has not answered for 30 s. Ctrl-C stops the reply.\n"


def test_back_at_the_prompt_a_relay_that_still_speaks_is_not_printed():
    sink, out = terminal()
    sink.quiet = True
    feed(
        sink,
        events.MessageChanged(message("user", "hi", error="Stopped: not kept.")),
        events.TextGivenBack("words", ME),
        events.ReplyFinished("stopped"),
    )
    assert out.getvalue() == ""
    assert sink.given_back == "words" and sink.finished


async def test_whoever_waits_for_the_reply_is_told_its_outcome():
    sink, _ = terminal()
    await sink.emit(NO_CONVERSATION, events.ReplyFinished("failed"), events.NO_STAMP)
    assert await sink.wait_finished() == "failed"


@pytest.mark.parametrize("kind", ["assistant", "reasoning", "tool_call"])
def test_a_stored_message_whose_draft_was_not_seen_is_printed_whole(kind):
    sink, out = terminal()
    feed(sink, events.DraftStored(f"{kind}-9", message(kind, "whole text", name="t")))
    assert "whole text" in out.getvalue()


# --- Tool approvals ----------------------------------------------------------------------------


def approval(status: str = "pending", arguments: str = '{"query": "tea"}', **extra) -> Approval:
    """An approval request as the relay hands it over (its message read with it), unsaved."""
    calls = extra.pop("tool_calls", None) or [
        {"id": "c1", "name": "web_search", "arguments": arguments}
    ]
    request = message("approval", calls[0]["arguments"], name=calls[0]["name"])
    return Approval(message=request, tool_calls=calls, status=status, pk=7, **extra)


def test_a_pending_request_is_shown_with_its_arguments_and_how_to_answer_it():
    sink, out = terminal(width=100)
    asked = approval(arguments='{"query": "[bold]tea[/bold] & <b>biscuits</b>", "limit": 3}')
    feed(
        sink,
        events.ReplyStatus("answering", "Helper"),
        events.ApprovalRequested(asked),
        events.UsageReported(TurnUsage(1, 420, 400, 20, 420, "requires_approval")),
        events.ReplyFinished("done"),
    )
    printed = lines(out)
    assert printed[1] == "? Helper asks to use web_search (your approval first):"
    # The arguments as JSON indented, as text: markup-like brackets are printed as they are.
    assert printed[2:6] == [
        "  {",
        '    "query": "[bold]tea[/bold] & <b>biscuits</b>",',
        '    "limit": 3',
        "  }",
    ]
    assert printed[6] == "  420 tokens · context 420 · stop reason: requires_approval"
    assert len(printed) == 7  # how to answer is said with the question, by the session
    assert sink.asking is asked and sink.finished


def test_a_requests_markup_is_never_interpreted_in_colour_either():
    sink, out = terminal(color=True)
    feed(sink, events.ApprovalRequested(approval(arguments='{"q": "[red]x[/red]"}')))
    assert '"q": "[red]x[/red]"' in out.getvalue()


def test_long_arguments_are_folded_with_a_note():
    sink, out = terminal(width=160)
    long = json.dumps({f"key{i}": "v" * 10 for i in range(40)})
    feed(sink, events.ApprovalRequested(approval(arguments=long)))
    printed = lines(out)
    assert printed[1:3] == ["  {", '    "key0": "vvvvvvvvvv",']
    assert len(printed) == 1 + 12 + 1  # the header, 12 lines of arguments, the note
    assert printed[12].endswith("…")
    assert re.fullmatch(
        r"  \(folded: 30 more lines, [\d,]+ more characters not shown\)",
        printed[13],
    )

    sink, out = terminal(width=100)
    feed(sink, events.ApprovalRequested(approval(arguments="x" * 5000)))  # one line, not JSON
    printed = lines(out)
    assert "  (folded: 3,800 more characters not shown)" in printed
    shown = [line.strip() for line in printed if set(line.strip()) <= {"x", "…"}]
    assert "".join(shown) == "x" * 1200 + "…"


def test_several_tool_calls_are_each_named():
    sink, out = terminal(width=100)
    calls = [
        {"id": "a", "name": "web_search", "arguments": '{"q": 1}'},
        {"id": "b", "name": "send_mail", "arguments": '{"to": "x"}'},
    ]
    feed(sink, events.ApprovalRequested(approval(tool_calls=calls)))
    printed = lines(out)
    assert printed[0] == "? Helper asks to use web_search, send_mail (your approval first):"
    assert "  web_search:" in printed and "  send_mail:" in printed


@pytest.mark.parametrize(
    ("status", "reason", "line"),
    [
        ("approved", "", "✓ Approved: web_search."),
        ("denied", "not\nnow [b]please[/b]", "✗ Denied web_search: not now [b]please[/b]"),
        ("denied", "", "✗ Denied web_search."),
        ("resolved", "", "The request to use web_search was answered in another client."),
    ],
)
def test_an_answer_is_one_line_and_the_request_no_longer_asked(status, reason, line):
    sink, out = terminal(width=100)
    asked = approval()
    feed(sink, events.ApprovalRequested(asked))
    assert sink.asking is asked
    out.truncate(0)
    out.seek(0)
    feed(sink, events.ApprovalAnswered(approval(status=status, reason=reason)))
    assert lines(out) == [line]
    assert sink.asking is None


def test_an_answer_that_never_reached_letta_asks_again():
    sink, out = terminal(width=100)
    again = approval(status="pending")
    feed(sink, events.ApprovalAnswered(again))
    assert lines(out) == [
        "! The answer did not reach Letta: the request to use web_search waits again."
    ]
    assert sink.asking is again


def test_an_answered_request_re_read_from_letta_is_one_line_and_asks_nothing():
    sink, out = terminal(width=100)
    feed(sink, events.ApprovalRequested(approval(status="resolved")))
    assert lines(out) == ["The request to use web_search was answered in another client."]
    assert sink.asking is None


def test_back_at_the_prompt_a_request_is_still_kept_but_not_printed():
    sink, out = terminal()
    sink.quiet = True
    asked = approval()
    feed(sink, events.ApprovalRequested(asked))
    assert out.getvalue() == "" and sink.asking is asked


def test_a_message_letta_refused_for_a_waiting_request_says_so_in_the_terminals_words():
    sink, out = terminal(width=120)
    refused = message("user", "hello?", error=approvals.ANSWER_FIRST)
    feed(sink, events.MessageChanged(refused))
    assert lines(out) == [
        "! Your message: the agent is waiting for your answer to its request to use a tool first."
    ]
