"""A conversation's first title: its first message, read as plain text, on one short line.

People write markdown; a title shows as text (the sidebar, the page's heading, Letta's summary),
so ``**bold**`` becomes ``bold`` rather than showing its asterisks.
"""

from __future__ import annotations

from functools import cache

from markdown_it import MarkdownIt

TITLE_CHARS = 60


@cache
def _markdown() -> MarkdownIt:
    # As the page reads messages (chat/rendering.py): CommonMark, tables and strikethrough.
    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def plain_text(text: str) -> str:
    """The words of markdown ``text`` without its markup, on one line."""
    words: list[str] = []
    for block in _markdown().parse(text):
        if block.type in ("fence", "code_block"):
            words.append(block.content)
        for token in block.children or ():
            if token.type in ("text", "code_inline", "image"):  # an image's content: its alt text
                words.append(token.content)
            elif token.type in ("softbreak", "hardbreak"):
                words.append(" ")
        words.append(" ")
    return " ".join("".join(words).split())


def title_from(text: str) -> str:
    """A title for a conversation that starts with ``text``: at most ``TITLE_CHARS``."""
    line = plain_text(text) or " ".join(text.split())
    return line if len(line) <= TITLE_CHARS else line[: TITLE_CHARS - 1].rstrip() + "…"
