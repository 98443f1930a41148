"""A conversation's first title is its first message as plain text (conversations/titles.py)."""

from __future__ import annotations

import pytest

from conversations.titles import TITLE_CHARS, title_from


@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Plan a trip to Lisbon", "Plan a trip to Lisbon"),
        ("Hello there, **bold** please", "Hello there, bold please"),
        ("# Packing list\n\nfor *three* days", "Packing list for three days"),
        ("`git rebase` or [merge](https://example.com)?", "git rebase or merge?"),
        ("- eggs\n- milk", "eggs milk"),
        ("```\nprint(1)\n```", "print(1)"),
        ("> a _quoted_ line", "a quoted line"),
        ("2 * 3 * 4 = 24", "2 * 3 * 4 = 24"),  # not markup: kept as typed
        ("<b>raw</b> html", "<b>raw</b> html"),  # shown as text, as in the thread
        ("  spread\n\n  over   lines ", "spread over lines"),
    ],
)
def test_a_title_is_the_first_messages_words_without_their_markup(text, title):
    assert title_from(text) == title


def test_a_long_first_message_is_cut_to_a_title():
    title = title_from("**" + " ".join(["word"] * 40) + "**")
    assert len(title) == TITLE_CHARS and title.endswith("…") and "*" not in title
