"""Properties, over generated input (hypothesis): message validation, the markdown renderer, the
websocket fragments, and the send limit.

- ``validate_message``: any frame either gives back exactly the text (non-blank, within the
  limit) or is refused with a reason to show; nothing else ever comes out of it.
- ``render_markdown``: whatever a model writes, the HTML runs nothing.
- the fragments: whatever text they carry, they run nothing, and plain text reads back exactly.
- the send limit: never more than N frames in any M seconds, and never a refusal under that.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html.parser import HTMLParser
from unittest import mock

from django.test import override_settings
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from chat import fragments, limits
from chat.consumers import MessageRejected, validate_message
from chat.rendering import render_markdown
from conversations.models import Agent, Conversation, Message
from tests.html_safety import assert_inert, inert_problems

LIMIT = 40  # a small limit, so generated text crosses it often
HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '"><svg onload=alert(1)>',
    "'><iframe src=javascript:alert(1)>",
    "javascript:alert(1)",
    "jav&#x09;ascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "[x](javascript:alert(1))",
    "[x](  javascript:alert(1)  )",
    "![x](javascript:alert(1))",
    "[x]: javascript:alert(1)\n\n[x]",
    "<a href='javascript:alert(1)'>x</a>",
    "<details open ontoggle=alert(1)>",
    "<style>*{}</style>",
    "<math><mi xlink:href=javascript:alert(1)>x</mi></math>",
    "```html\n<script>alert(1)</script>\n```",
    "`<b>`",
    "<!--",
    "-->",
    "<![CDATA[",
    "&lt;script&gt;",
    "&#60;script&#62;",
    "\x00",
    "\r\n",
    "[",
    "](",
    ")",
    "<",
    ">",
    '"',
    "'",
    "`",
    "*",
    "_",
    "\n\n",
    "    ",
    "|a|b|\n|-|-|\n",
    "<http://x.example/?a=<script>>",
    "{{ secret }}",
    "{% csrf_token %}",
    "%(x)s",
    "{}",
]
hostile_text = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(HOSTILE), st.text(max_size=5)), max_size=12).map("".join),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
whitespace = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003\u3000\x1c", max_size=6)


# --- validate_message --------------------------------------------------------------------------


def outcome(raw: str) -> str | MessageRejected:
    with override_settings(LETTACHAT_MAX_MESSAGE_CHARS=LIMIT):
        try:
            return validate_message(raw)
        except MessageRejected as exc:
            return exc


def accepted(text: object) -> bool:
    return isinstance(text, str) and len(text.strip()) > 0 and len(text) <= LIMIT


@given(
    message=st.one_of(hostile_text, whitespace, json_values),
    extra=st.dictionaries(st.text(), json_values, max_size=3),
)
@example(message="x" * LIMIT, extra={})
@example(message="x" * (LIMIT + 1), extra={})
@example(message=" \u3000", extra={})
@example(message=" a ", extra={"type": "stop", "HEADERS": None})
def test_a_message_frame_gives_back_exactly_its_text_or_a_reason(message, extra):
    frame = json.dumps({**extra, "message": message})
    result = outcome(frame)
    if accepted(message):
        assert result == message
    else:
        assert isinstance(result, MessageRejected)
        assert str(result).strip()


@given(raw=st.one_of(st.text(), st.builds(json.dumps, json_values)))
@example(raw="[" * 100_000)
@example(raw='{"message": ' + "1" * 5000 + "}")
@example(raw="NaN")
@example(raw='{"message": "\\ud800"}')
def test_any_frame_at_all_is_either_a_message_or_a_reason(raw):
    result = outcome(raw)
    if isinstance(result, MessageRejected):
        assert str(result).strip()
    else:
        data = json.loads(raw)
        assert isinstance(data, dict) and data["message"] == result and accepted(result)


# --- render_markdown -----------------------------------------------------------------------------


@hsettings(deadline=None)
@given(text=hostile_text)
def test_whatever_a_model_writes_the_rendered_markdown_runs_nothing(text):
    assert_inert(render_markdown(text))


# --- fragments -----------------------------------------------------------------------------------


def neutral(value: str) -> str:
    """A harmless stand-in with the same truthiness (templates branch on whether text is there)."""
    return "x" if value else ""


def assert_text_adds_nothing_active(html: str, baseline: str) -> None:
    """Our own markup may hold forms (ws-send); the text carried must add nothing to it."""
    assert sorted(inert_problems(html)) == sorted(inert_problems(baseline)), html


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def text_of(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


T0 = datetime(2026, 1, 1, tzinfo=UTC)
AGENT = Agent(pk=1, letta_id="agent-1", name="Helper", visible_to_users=True, sharing="shared")


def conversation_titled(summary: str) -> Conversation:
    return Conversation(pk=1, letta_id="conv-1", agent=AGENT, owner_id=1, summary=summary)


def message_of(kind: str, content: str, *, name: str = "", error: str = "") -> Message:
    return Message(
        pk=7,
        conversation=conversation_titled("t"),
        message_type=kind,
        content=content,
        name=name,
        error=error,
        created_at=T0,
    )


safe_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
PLAIN_KINDS = ["user", "reasoning", "tool_call", "tool_return", "error"]
FRAGMENT_SETTINGS = hsettings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FRAGMENT_SETTINGS
@given(stream_id=st.one_of(safe_ids, hostile_text), text=hostile_text)
def test_a_streamed_token_runs_nothing_and_reads_back_exactly(stream_id, text):
    html = fragments.stream_token(stream_id, text)
    assert_inert(html)
    assert text_of(html) == text


@FRAGMENT_SETTINGS
@given(
    stream_id=safe_ids,
    kind=st.sampled_from(["assistant", "reasoning", "tool_call"]),
    text=hostile_text,
    name=hostile_text,
)
def test_the_start_of_a_streamed_message_runs_nothing_and_reads_back(stream_id, kind, text, name):
    html = fragments.stream_started(stream_id, kind, text, name)
    assert_inert(html)
    if kind != "assistant":  # a reply's text shows formatted, as markdown
        assert text in text_of(html)


@FRAGMENT_SETTINGS
@given(stream_id=safe_ids, text=hostile_text, split=st.integers(min_value=0))
def test_a_reply_formatted_as_it_streams_runs_nothing(stream_id, text, split):
    html = fragments.reply_written(stream_id, text, before=split % (len(text) + 1))
    assert_inert(html)


@FRAGMENT_SETTINGS
@given(
    kind=st.sampled_from(PLAIN_KINDS), content=hostile_text, name=hostile_text, error=hostile_text
)
def test_a_plain_message_runs_nothing_and_reads_back_exactly(kind, content, name, error):
    message = message_of(kind, content, name=name, error=error)
    plain = message_of(kind, neutral(content), name=neutral(name), error=neutral(error))
    for render in (fragments.message_appended, fragments.message_replaced):
        html = render(message)
        assert_text_adds_nothing_active(html, render(plain))
        assert content in text_of(html)


@FRAGMENT_SETTINGS
@given(content=hostile_text, error=hostile_text)
def test_an_assistant_message_runs_nothing(content, error):
    message = message_of("assistant", content, error=error)
    assert_inert(fragments.message_appended(message))
    assert_inert(fragments.message_replaced(message))


@FRAGMENT_SETTINGS
@given(text=hostile_text, busy=st.booleans(), stalled=st.booleans())
def test_status_and_error_lines_run_nothing_and_read_back(text, busy, stalled):
    assert_inert(fragments.composer_error(text))
    assert text in text_of(fragments.composer_error(text))
    html = fragments.reply_status(text, busy=busy, stalled=stalled)
    baseline = fragments.reply_status(neutral(text), busy=busy, stalled=stalled)
    assert_text_adds_nothing_active(html, baseline)
    assert text in text_of(html)


@FRAGMENT_SETTINGS
@given(title=hostile_text, text=hostile_text)
def test_a_title_and_the_composer_run_nothing_and_read_back(title, text):
    conversation = conversation_titled(title)
    html = fragments.thread_title(conversation)
    assert_inert(html)
    assert conversation.title in text_of(html)
    html = fragments.composer(conversation, text=text, error=title)
    baseline = fragments.composer(
        conversation_titled(neutral(title)), text=neutral(text), error=neutral(title)
    )
    assert_text_adds_nothing_active(html, baseline)
    assert text in text_of(html)


# --- The send limit ------------------------------------------------------------------------------


@given(
    count=st.integers(1, 5),
    seconds=st.integers(1, 30),
    gaps=st.lists(st.floats(0, 20, allow_nan=False), max_size=40),
)
def test_a_socket_never_gets_more_than_n_frames_in_m_seconds_nor_fewer(count, seconds, gaps):
    class Socket:
        pass

    socket, now, taken = Socket(), 0.0, []
    with override_settings(LETTACHAT_SEND_RATE=f"{count}/{seconds}"):
        for gap in gaps:
            now += gap
            with mock.patch.object(limits, "_now", return_value=now):
                wait = limits.send_wait(socket)
            recent = [t for t in taken if now - t < seconds]
            if wait:
                assert len(recent) == count, "refused only when the window is full"
                assert 0 < wait <= seconds
            else:
                assert len(recent) < count
                taken.append(now)
    limits.socket_closed(socket)
