"""Replies across server processes, against the real Letta server, PostgreSQL and Redis:
a process killed mid-reply (SIGKILL), and one told to stop (SIGTERM).

Two daphne processes on one database and one Redis channel layer; pages are websocket clients
that apply frames as htmx does (tests/page_model.py) and do what the page's script does: catch up
("resume") when told to, and reconnect when the server says it is restarting.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator

import pytest
import websockets
from django.conf import settings
from django.test import Client

from conversations import services
from lettachat.shutdown import CLOSE_RESTARTING
from tests.conftest import require
from tests.live import LiveServer, server_env
from tests.page_model import PageModel, streams_a_piece
from tests.websocket import is_idle

pytestmark = [
    pytest.mark.integration,
    pytest.mark.production_stack,
    pytest.mark.django_db(transaction=True),
]

REAP_AFTER = 3


@pytest.fixture
def servers(
    transactional_db, letta_url, letta_api_key, tmp_path
) -> Iterator[tuple[LiveServer, LiveServer]]:
    redis_url = os.environ.get("REDIS_URL", "")
    require(bool(redis_url), "REDIS_URL is not set: two processes need the Redis channel layer")
    made = []
    try:
        for name in ("a", "b"):
            env = server_env(
                tmp_path / name,
                REDIS_URL=redis_url,
                LETTA_BASE_URL=letta_url,
                LETTA_API_KEY=letta_api_key,
                LETTACHAT_REAP_AFTER_SECONDS=str(REAP_AFTER),
                LETTACHAT_RELAY_HEARTBEAT_SECONDS="1",
                LETTACHAT_SHUTDOWN_SECONDS="6",
            )
            (tmp_path / name).mkdir()
            server = LiveServer(env, tmp_path / f"daphne-{name}.log")
            server.start()
            made.append(server)
        yield made[0], made[1]
    finally:
        for server in made:
            server.stop()


class Page:
    """One tab on one conversation, connected to one server process."""

    def __init__(self, server: LiveServer, conversation_id: str, cookie: str) -> None:
        self.server, self.conversation_id, self.cookie = server, conversation_id, cookie
        self.model = PageModel()
        self.frames: list[str] = []
        self.socket: websockets.ClientConnection | None = None

    async def open(self, server: LiveServer | None = None) -> None:
        self.server = server or self.server
        url = self.server.url.replace("http", "ws") + f"/ws/c/{self.conversation_id}/"
        self.socket = await websockets.connect(
            url, additional_headers={"Cookie": self.cookie, "Origin": self.server.url}
        )
        await self.resume()

    async def resume(self) -> None:
        articles = self.model.articles()
        shown = max((int(i[4:]) for i, _ in articles if i.startswith("msg-")), default=0)
        drafts = sum(1 for i, _ in articles if i.startswith("stream-"))
        await self.send({"type": "resume", "after": shown, "drafts": drafts})

    async def send(self, frame: dict[str, object]) -> None:
        assert self.socket is not None
        await self.socket.send(json.dumps(frame))

    async def next_frame(self, timeout: float) -> str:
        assert self.socket is not None
        frame = str(await asyncio.wait_for(self.socket.recv(), timeout))
        self.frames.append(frame)
        self.model.apply(frame)
        if 'id="reply-resync"' in frame:  # another relay follows the reply: catch up from it
            await self.resume()
        return frame

    async def until(self, predicate, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            frame = await self.next_frame(max(0.1, deadline - time.monotonic()))
            if predicate(frame):
                return frame

    def transcript(self) -> list[str]:
        return [text for _, text in self.model.articles()]


def cookie_of(user) -> str:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def token(frame: str) -> bool:
    return streams_a_piece(frame)


async def lettas_reply(gateway, conversation) -> str:
    stored = await gateway.alist_messages(conversation_id=conversation.letta_id)
    [reply] = [m.content for m in stored if m.message_type == "assistant"]
    return " ".join(reply.split())


def a_conversation(gateway, agent, user):
    return services.conversation_create(gateway=gateway, user=user, agent=agent)


async def test_a_process_killed_mid_reply_is_taken_over_and_every_tab_sees_the_reply_once(
    servers, letta_gateway, letta_agent, user
):
    a, b = servers
    conversation = await asyncio.to_thread(a_conversation, letta_gateway, letta_agent, user)
    cookie = await asyncio.to_thread(cookie_of, user)
    on_a, on_b = Page(a, conversation.letta_id, cookie), Page(b, conversation.letta_id, cookie)
    await on_a.open()
    await on_b.open()
    await on_a.send({"message": "count [[long:200]]"})
    await on_b.until(token)  # the reply streams, relayed by process a, to the tab on b

    a.kill()
    killed = time.monotonic()
    await on_b.until(is_idle, timeout=90)
    taken_over_in = time.monotonic() - killed

    assert on_b.transcript() == [
        "count [[long:200]]",
        await lettas_reply(letta_gateway, conversation),
    ]
    assert taken_over_in < 60, taken_over_in


async def test_sigterm_closes_sockets_as_restarting_hands_the_reply_over_and_ends_the_process(
    servers, letta_gateway, letta_agent, user
):
    a, b = servers
    conversation = await asyncio.to_thread(a_conversation, letta_gateway, letta_agent, user)
    cookie = await asyncio.to_thread(cookie_of, user)
    tab = Page(a, conversation.letta_id, cookie)
    watcher = Page(b, conversation.letta_id, cookie)
    await tab.open()
    await watcher.open()
    await tab.send({"message": "count [[long:300]]"})
    await tab.until(token)
    await watcher.until(token)  # the tab on the other process sees it stream too

    a.signal(signal.SIGTERM)
    stopped = time.monotonic()
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await tab.next_frame(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_RESTARTING
    assert time.monotonic() - stopped < 5
    assert a.wait(timeout=15) is not None, "the process ended"
    assert time.monotonic() - stopped < 15

    await tab.open(b)  # the page reconnects; the load balancer sends it to the other process
    await tab.until(is_idle, timeout=90)
    await watcher.until(is_idle, timeout=30)
    whole = await lettas_reply(letta_gateway, conversation)
    assert tab.transcript() == ["count [[long:300]]", whole]
    assert watcher.transcript() == ["count [[long:300]]", whole]
