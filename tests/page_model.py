"""What a page shows, rebuilt from the websocket's HTML frames the way htmx applies them.

Only the out-of-band swaps lettachat sends are modelled: appending to ``#messages``, appending
text to a streamed draft, replacing a streamed reply's block being written, replacing an element
by id, and deleting the drafts. Enough to say what
a person would read, so tests and the soak can count lost and repeated characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"input", "br", "hr", "img", "meta", "link"}
_PIECE = re.compile(r'hx-swap-oob="(?:beforeend|innerHTML):#stream-')


def streams_a_piece(frame: str) -> bool:
    """The frame adds to a draft being streamed (a reply's formatted block included)."""
    return _PIECE.search(frame) is not None


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node | str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return self.attrs.get("id", "")

    def text(self, *, skip: str = "") -> str:
        """The text inside, leaving out elements with the class ``skip``."""
        return "".join(
            c if isinstance(c, str) else c.text(skip=skip)
            for c in self.children
            if isinstance(c, str) or not skip or skip not in c.attrs.get("class", "").split()
        )

    def find(self, dom_id: str) -> Node | None:
        for child in self.children:
            if isinstance(child, Node):
                if child.id == dom_id:
                    return child
                found = child.find(dom_id)
                if found is not None:
                    return found
        return None


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self.stack) - 1, 0, -1):
            if self.stack[index].tag == tag:
                del self.stack[index:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> list[Node | str]:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root.children


class PageModel:
    """The ``#messages`` list of one page: top-level articles in order."""

    def __init__(self) -> None:
        self.messages = Node("div", {"id": "messages"})

    def apply(self, frame: str) -> None:
        for node in parse(frame):
            if isinstance(node, Node) and "hx-swap-oob" in node.attrs:
                self._swap(node)

    def _swap(self, node: Node) -> None:
        how = node.attrs["hx-swap-oob"]
        if how == "beforeend:#messages":
            self.messages.children.extend(c for c in node.children if isinstance(c, Node))
        elif how.startswith("beforeend:#"):
            target = self.messages.find(how.removeprefix("beforeend:#"))
            if target is not None:
                target.children.extend(node.children)
        elif how.startswith("innerHTML:#"):
            target = self.messages.find(how.removeprefix("innerHTML:#"))
            if target is not None:
                target.children = list(node.children)
        elif how == "delete:#messages .msg-streaming":
            self.messages.children = [
                c for c in self.messages.children
                if not (isinstance(c, Node) and "msg-streaming" in c.attrs.get("class", ""))
            ]  # fmt: skip
        elif how in ("outerHTML", "true") or how.startswith("outerHTML:#"):
            target = how.removeprefix("outerHTML:#") if ":" in how else node.id
            for index, child in enumerate(self.messages.children):
                if isinstance(child, Node) and child.id == target:
                    self.messages.children[index] = node
                    return

    def articles(self) -> list[tuple[str, str]]:
        """(dom id, visible text) of each message, in order (without the time it was written)."""
        return [
            (c.id, " ".join(c.text(skip="msg-meta").split()))
            for c in self.messages.children
            if isinstance(c, Node) and c.tag == "article"
        ]

    def draft(self, stream_id: str) -> str | None:
        """The visible text of a draft (spaces as the page shows them, as in ``articles``)."""
        node = self.messages.find(f"stream-{stream_id}-text")
        return " ".join(node.text().split()) if node is not None else None
