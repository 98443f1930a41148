"""Model text to safe HTML: markdown rendered by markdown-it, then sanitised by nh3."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache, lru_cache

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.util import ClassNotFound

_FORMATTER = HtmlFormatter(nowrap=True, classprefix="hl-")

ALLOWED_TAGS = {
    "a", "blockquote", "br", "code", "del", "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "li",
    "ol", "p", "pre", "s", "span", "strong", "table", "tbody", "td", "th", "thead", "tr", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "code": {"class"},
    "span": {"class"},
    "td": {"align"},
    "th": {"align"},
    "ol": {"start"},
}


def _highlight(code: str, lang: str, _attrs: str) -> str:
    try:
        lexer = get_lexer_by_name(lang) if lang else None
    except ClassNotFound:
        lexer = None
    if lexer is None:
        return escape(code)
    return highlight(code, lexer, _FORMATTER)


# A reply's headings sit under the page's own: the conversation's title is the page's <h1> and its
# panels' titles are <h2>, so a reply's "# Title" becomes <h3> (and "####" and below, <h6>).
HEADING_SHIFT = 2


def _demoted_heading(
    renderer: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    token = tokens[idx]
    level = int(token.tag[1:])
    token.tag = f"h{min(6, level + HEADING_SHIFT)}"
    return str(renderer.renderToken(tokens, idx, options, env))


@cache
def _markdown() -> MarkdownIt:
    # Raw HTML in model output is shown as text, never passed through.
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight})
    md.add_render_rule("heading_open", _demoted_heading)
    md.add_render_rule("heading_close", _demoted_heading)
    return md.enable(["table", "strikethrough"])


# A stored message's text is rendered again for every page that shows it; the same text gives the
# same HTML, so each process keeps the last 2048 (by their text). Long ones are not kept, so the
# memory this takes stays small: a few MB for replies of usual length, at worst about 50 MB.
RENDERED_KEPT = 2048
KEPT_UP_TO_CHARS = 8_000


def render_markdown(text: str) -> SafeString:
    """Markdown to HTML safe to put in a page: no script, no handlers, only http(s) links."""
    if len(text) <= KEPT_UP_TO_CHARS:
        return _render_kept(text)
    return _render(text)


@lru_cache(maxsize=RENDERED_KEPT)
def _render_kept(text: str) -> SafeString:
    return _render(text)


def _render(text: str) -> SafeString:
    html = _markdown().render(text)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above


# -- A reply being written ----------------------------------------------------------------------
# While a reply streams, its markdown is shown formatted, through the same renderer. Its text is
# cut in two: the blocks already finished (rendered once each, appended to the page) and the block
# still being written (rendered again with every piece, closed for the moment where it is open: a
# code fence, "**" or "`" without their end). The whole reply, rendered as one, replaces both when
# it is stored.

_FENCES = ("```", "~~~")


def _lines(text: str) -> tuple[list[tuple[int, str, str, str]], str]:
    """Each line of ``text`` as (its start, the line, the line stripped, the code fence open
    before it or ""); and the fence still open after the last line."""
    lines = []
    fence = ""
    position = 0
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        lines.append((position, line, stripped, fence))
        if fence:
            if stripped.startswith(fence):
                fence = ""
        elif stripped.startswith(_FENCES):
            fence = stripped[:3]
        position += len(line)
    return lines, fence


def streaming_cut(text: str) -> int:
    """Where the finished blocks of ``text`` end: the start of the last line that follows a blank
    line outside a code fence and is not indented (so a list item's continuation stays with its
    item), or 0."""
    cut = 0
    blank_before = False
    for position, line, stripped, fence in _lines(text)[0]:
        if not fence and stripped and blank_before and not line[:1].isspace():
            cut = position
        blank_before = not stripped and not fence  # a blank line neither opens nor closes one
    return cut


def _closed_for_now(text: str) -> str:
    """The block being written, with what it has opened and not yet closed closed for now."""
    if fence := _lines(text)[1]:
        return f"{text.rstrip(chr(10))}\n{fence}"
    closed = text.rstrip()
    if closed.count("`") % 2:
        closed += "`"
    if closed.replace("`", "").count("**") % 2 and not closed.endswith("**"):
        closed += "**"
    return closed


# A block of plain words: it starts with a letter, has no line break and no character markdown
# gives a meaning to (nor one the HTML escapes). It renders as itself in a paragraph, so it is
# shown so without the renderer, which the block being written otherwise goes through again with
# every piece: a quarter of daphne's work relaying 160-token replies (bench/RESULTS.md).
_NOT_PLAIN = re.compile(r"[^\w ,.;:?!'()/%=+-]")  # and "_", a word character


def _render_open(block: str) -> SafeString:
    closed = _closed_for_now(block)
    if closed[:1].isalpha() and "_" not in closed and not _NOT_PLAIN.search(closed):
        return mark_safe(f"<p>{closed}</p>\n")  # noqa: S308 - letters, digits, plain punctuation
    return _render(closed)


def render_streaming(text: str, start: int = 0) -> tuple[SafeString, SafeString]:
    """``text`` being written, from its finished block at ``start``: (the finished blocks after
    ``start``, rendered; the block being written, rendered). ``start`` is a cut of the text
    before (``streaming_cut`` of a prefix), so the blocks before it are not read again."""
    cut = start + streaming_cut(text[start:])
    # Not kept (``render_markdown``): each is seen once.
    done = _render(text[start:cut]) if cut > start else SafeString()
    return done, _render_open(text[cut:])
