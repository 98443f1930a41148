"""Model text to safe HTML: markdown rendered by markdown-it, then sanitised by nh3."""

from __future__ import annotations

from functools import cache

import nh3
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe
from markdown_it import MarkdownIt
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


@cache
def _markdown() -> MarkdownIt:
    # Raw HTML in model output is shown as text, never passed through.
    md = MarkdownIt("commonmark", {"html": False, "highlight": _highlight})
    return md.enable(["table", "strikethrough"])


def render_markdown(text: str) -> SafeString:
    """Markdown to HTML safe to put in a page: no script, no handlers, only http(s) links."""
    html = _markdown().render(text)
    clean = nh3.clean(
        html,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )
    return mark_safe(clean)  # noqa: S308 - sanitised by nh3 just above
