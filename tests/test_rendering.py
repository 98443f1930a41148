"""Model markdown becomes safe HTML."""

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from chat import fragments, rendering
from chat.rendering import render_markdown, render_streaming, streaming_cut
from tests.html_safety import assert_inert, inert_problems


def test_markdown_is_rendered():
    html = render_markdown("# Title\n\n**bold** and `code`\n\n- one\n- two")
    assert "<h3>Title</h3>" in html
    assert "<strong>bold</strong>" in html
    assert "<code>code</code>" in html
    assert "<li>one</li>" in html


def test_headings_in_a_reply_sit_below_the_pages_own():
    """The thread's title is the page's h1 and its panels' titles h2: a reply starts at h3."""
    html = render_markdown("# One\n\n## Two\n\n### Three\n\n#### Four\n\n###### Six")
    assert "<h3>One</h3>" in html
    assert "<h4>Two</h4>" in html
    assert "<h5>Three</h5>" in html
    assert "<h6>Four</h6>" in html
    assert "<h6>Six</h6>" in html
    assert "<h1>" not in html and "<h2>" not in html


def test_code_blocks_are_highlighted():
    html = render_markdown("```python\ndef f():\n    return 1\n```")
    assert '<span class="hl-k">def</span>' in html


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[click](javascript:alert(1))",
        '<a href="javascript:alert(1)">x</a>',
        "![x](javascript:alert(1))",
        '<iframe src="https://evil.example"></iframe>',
        "<svg onload=alert(1)>",
        '[x](https://ok.example "title" onclick=alert(1))',
    ],
)
def test_nothing_a_model_writes_runs_as_code(text):
    assert_inert(render_markdown(text))


def test_the_safety_check_itself_spots_active_content():
    for bad in [
        '<img src=x onerror="alert(1)">',
        '<a href="javascript:alert(1)">x</a>',
        "<script>1</script>",
    ]:
        assert inert_problems(bad)


def test_links_are_marked_external():
    html = render_markdown("[Letta](https://letta.com)")
    assert 'href="https://letta.com"' in html
    assert 'rel="noopener noreferrer nofollow"' in html


def test_a_reply_being_written_is_cut_after_its_finished_blocks():
    assert streaming_cut("Hello **wor") == 0
    text = "# Title\n\nPara one.\n\nPara tw"
    assert text[: streaming_cut(text)] == "# Title\n\nPara one.\n\n"
    # A list item's indented continuation stays with its item; a code fence is one block.
    assert streaming_cut("1. a\n\n   more of a") == 0
    text = "Look:\n\n```py\nx = 1\n\ny = 2\n"
    assert text[: streaming_cut(text)] == "Look:\n\n"


@given(st.text(st.sampled_from(list("ab \n`~-1.>*")), max_size=60), st.integers(0, 60))
def test_the_cut_found_after_the_last_one_is_the_cut_found_from_the_start(text, end):
    # render_streaming looks for the next cut after the one the text before had (start).
    start = streaming_cut(text[:end])
    assert start + streaming_cut(text[start:]) == max(start, streaming_cut(text))


def test_what_a_reply_has_opened_shows_closed_while_it_is_written():
    assert render_streaming("Hello **wor") == ("", "<p>Hello <strong>wor</strong></p>\n")
    assert render_streaming("Use `pri") == ("", "<p>Use <code>pri</code></p>\n")
    done, being_written = render_streaming("Look:\n\n```\nx = 1\n")
    assert done == "<p>Look:</p>\n"
    assert being_written == "<pre><code>x = 1\n</code></pre>\n"


def test_the_pieces_of_a_reply_build_the_reply_formatted():
    # Each piece's fragment appends the blocks it finished and replaces the one being written:
    # put together as the page does, they are the whole reply rendered.
    text = "# Plan\n\nFirst **this**.\n\n- one\n- two\n\nThen `that`."
    done, being_written = [], ""
    for end in range(1, len(text) + 1):
        html = fragments.reply_written("s", text[:end], before=end - 1)
        done += re.findall(r'beforeend:#stream-s-done">(.*?)</div>', html, re.S)
        [being_written] = re.findall(r'innerHTML:#stream-s-open">(.*?)</div>', html, re.S)
    assert "".join(done) + being_written == render_markdown(text)


# Blocks a reply may be writing: mostly plain words (letters of several scripts, digits, spaces,
# plain punctuation) with now and then a character markdown or HTML gives a meaning to.
_LETTERS = "aZé\u03bb\u4e2d"
_PLAIN = _LETTERS + "09 ,.;:?!'()/%=+-"
_MEANINGFUL = '\t\n_*`#>[]<&"~|\\\u00a0\u00b2'
_BLOCKS = st.one_of(
    st.text(st.sampled_from(_PLAIN + _MEANINGFUL), max_size=40),
    st.tuples(
        st.sampled_from(_LETTERS),
        st.text(st.sampled_from(_PLAIN), max_size=20),
        st.sampled_from(["", *_MEANINGFUL]),
        st.text(st.sampled_from(_PLAIN), max_size=20),
    ).map("".join),
)


@given(_BLOCKS)
@example("Plain words, 42 of them: (really) 100% = yes!")
@example("t=1733331234.123456 t=1733331234.173456 ")
@example("1. a list")
@example("a_b and *c*")
def test_a_block_being_written_shows_as_the_renderer_draws_it(block):
    assert_drawn_as_the_renderer_draws_it(block)


@pytest.mark.parametrize("char", list(_MEANINGFUL + "!?'()=+-%"))
def test_a_block_with_any_one_character_shows_as_the_renderer_draws_it(char):
    for block in (
        f"a{char}b", f"Word {char}", f"a {char}{char} b{char}", f"a {char}b{char} c",
        f"a {char}{char}b{char}{char} c", f"a [{char}](b) c",
    ):  # fmt: skip
        assert_drawn_as_the_renderer_draws_it(block)


def assert_drawn_as_the_renderer_draws_it(block):
    # Plain blocks skip the renderer: whatever the block, what shows is the renderer's own HTML.
    assert rendering._render_open(block) == rendering._render(rendering._closed_for_now(block))


def test_a_stored_messages_html_is_kept_but_not_a_long_ones_or_a_drafts():
    from chat import rendering

    text = "Kept **once**, shown on every page."
    assert render_markdown(text) is render_markdown(text)
    long = "word " * (rendering.KEPT_UP_TO_CHARS // 5 + 1)
    assert render_markdown(long) == render_markdown(long)
    assert render_markdown(long) is not render_markdown(long)
    before = rendering._render_kept.cache_info().currsize
    render_streaming("A draft, **half")
    assert rendering._render_kept.cache_info().currsize == before


@pytest.mark.django_db
def test_a_stored_messages_article_is_kept_and_drawn_again_when_anything_it_shows_changes(
    conversation,
):
    from datetime import UTC, datetime

    from django.template.loader import render_to_string

    from conversations.models import Message
    from conversations.selectors import TurnUsage

    message = Message.objects.create(
        conversation=conversation, message_type="assistant", content="Hello **there**",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    first = fragments.stored_message(message)
    assert fragments.stored_message(Message.objects.get(pk=message.pk)) is first, "kept"
    drawn = render_to_string("chat/chat.html#message", {"message": message})
    assert first == drawn, "the same as the partial draws it"

    message.error = "Stopped."
    stopped = fragments.stored_message(message)
    assert "msg-stopped" in stopped and "msg-stopped" not in first
    message.content = "Hello **again**"
    assert "again" in fragments.stored_message(message)
    message.turn_usage = TurnUsage(message.pk, 12, 10, 2, None, "")
    assert "12 tokens" in fragments.stored_message(message)
    message.message_type = "tool_return"
    shown = fragments.stored_message(message)
    message.memory_change = {"label": "human", "added": "likes tea", "removed": ""}
    assert "likes tea" in fragments.stored_message(message) and "likes tea" not in shown


@pytest.mark.django_db
def test_an_approval_cards_article_is_drawn_each_time(conversation):
    from datetime import UTC, datetime

    from conversations.models import Message

    message = Message.objects.create(
        conversation=conversation, message_type="approval", content="", name="send_email",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    assert fragments.stored_message(message) is not fragments.stored_message(message)


@pytest.mark.django_db
def test_a_sidebar_item_is_kept_and_drawn_again_with_a_new_title_or_mark(conversation):
    first = fragments.sidebar_item(conversation, current=False)
    assert fragments.sidebar_item(conversation, current=False) is first
    assert 'aria-current="page"' in fragments.sidebar_item(conversation, current=True)
    assert 'aria-current="page"' not in first
    conversation.summary = "A new title"
    assert "A new title" in fragments.sidebar_item(conversation, current=False)
    assert 'hx-swap-oob="true"' in fragments.sidebar_item(conversation, current=False, oob=True)
