"""The attacks of issue 13, over real sockets and HTTP against a lettachat server process.

Each test starts daphne on the test database (``start_server`` in conftest) and talks to it as a
browser or an attacker on the same host would: real websocket handshakes with chosen ``Origin``
headers, logins through the forms, frames of every size.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from channels.db import database_sync_to_async
from django.core.management import call_command
from django.utils import timezone
from websockets.exceptions import InvalidStatus

from conversations.models import Conversation, Message
from letta_gateway.client import LettaGateway
from tests.live import (
    PASSWORD,
    close_code,
    cookie_header,
    http_client,
    log_in,
    open_socket,
    post_form,
    served,
    try_login,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def alices_thread(make_user, make_conversation):
    alice = await database_sync_to_async(make_user)("alice", PASSWORD)
    return await database_sync_to_async(make_conversation)(alice)


# --- Same origin means scheme, host and port -----------------------------------------------------


async def test_only_the_pages_exact_origin_opens_a_socket_with_the_persons_cookie(
    start_server, alices_thread
):
    server = start_server()
    alice = await log_in(server.url, "alice")
    path = f"/ws/c/{alices_thread.letta_id}/"
    cookie = cookie_header(alice)  # cookies are not bound to a port: any local page sends them

    own = await open_socket(server, path, cookie=cookie)
    assert "data-busy" in await served(own)
    await own.close()

    for origin in [
        "http://127.0.0.1:9999",  # a page on another port of the same host
        f"https://127.0.0.1:{server.port}",
        "http://localhost:3000",
        f"http://localhost:{server.port}",  # allowed host, but not the one this page is on
        "http://127.0.0.1",
        "null",
    ]:
        with pytest.raises(InvalidStatus) as refused:
            await open_socket(server, path, cookie=cookie, origin=origin)
        assert refused.value.response.status_code == 403, origin
    await alice.aclose()


# --- Logins are throttled by username and address ---------------------------------------------


async def assert_locked_out(client, username, path):
    """The right password is refused too, with a message that says why and for how long."""
    answer = await try_login(client, username, PASSWORD, path=path)
    assert answer.status_code == 429
    assert "Too many failed logins" in answer.text and "15 minutes" in answer.text
    assert "sessionid" not in answer.cookies


@pytest.mark.parametrize("path", ["/login/", "/admin/login/"], ids=["site", "admin"])
async def test_wrong_passwords_pause_that_username_from_that_address_only(
    start_server, make_user, path
):
    server = start_server()
    await database_sync_to_async(make_user)("alice", PASSWORD, is_staff=True)
    await database_sync_to_async(make_user)("bob", PASSWORD, is_staff=True)
    attacker = http_client(server.url)
    for attempt in range(4):
        answer = await try_login(attacker, "alice", f"guess-{attempt}", path=path)
        assert answer.status_code == 200, attempt  # the form again, with its error
    fifth = await try_login(attacker, "alice", "guess-5", path=path)
    assert fifth.status_code == 429 and "Too many failed logins" in fifth.text
    await assert_locked_out(attacker, "alice", path)
    await assert_locked_out(attacker, "alice", path)  # and it stays so

    # Alice, from her own address, is not locked out by what someone else did.
    alice = http_client(server.url, address="127.0.0.2")
    assert (await try_login(alice, "alice", PASSWORD, path=path)).status_code == 302
    # Bob, from the attacker's address too.
    bob = http_client(server.url)
    assert (await try_login(bob, "bob", PASSWORD, path=path)).status_code == 302
    for client in (attacker, alice, bob):
        await client.aclose()


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_one_paused(
    start_server, make_user
):
    server = start_server(LETTACHAT_TRUSTED_PROXIES="1")
    await database_sync_to_async(make_user)("alice", PASSWORD)
    attacker = http_client(server.url)
    attacker.headers["X-Forwarded-For"] = "127.0.0.5"  # as the proxy would append it
    for attempt in range(5):
        await try_login(attacker, "alice", f"guess-{attempt}")
    await assert_locked_out(attacker, "alice", "/login/")
    alice = http_client(server.url)  # through the same proxy, from another address
    alice.headers["X-Forwarded-For"] = "127.0.0.6"
    assert (await try_login(alice, "alice", PASSWORD)).status_code == 302
    for client in (attacker, alice):
        await client.aclose()


async def test_a_paused_login_ends_after_the_cool_off_or_by_the_reset_command(
    start_server, make_user
):
    server = start_server()
    await database_sync_to_async(make_user)("alice", PASSWORD)
    client = http_client(server.url)

    async def lock_out():
        for attempt in range(5):
            await try_login(client, "alice", f"guess-{attempt}")  # the fifth locks
        await assert_locked_out(client, "alice", "/login/")

    await lock_out()
    # Fifteen minutes pass (the attempts are dated back rather than waited for).
    await database_sync_to_async(
        lambda: AccessAttempt.objects.update(
            attempt_time=timezone.now() - timedelta(minutes=15, seconds=1)
        )
    )()
    assert (await try_login(client, "alice", PASSWORD)).status_code == 302

    client.cookies.clear()
    await lock_out()
    await database_sync_to_async(call_command)("axes_reset_username", "alice")
    assert (await try_login(client, "alice", PASSWORD)).status_code == 302
    await client.aclose()


# --- Oversized frames are answered; past the server's own cap, the server drops them ---------


async def test_a_frame_over_the_apps_limit_gets_an_error_and_the_socket_serves_on(
    start_server, alices_thread
):
    server = start_server()  # the defaults: 256 KiB for lettachat, 1 MiB for daphne
    alice = await log_in(server.url, "alice")
    socket = await open_socket(
        server, f"/ws/c/{alices_thread.letta_id}/", cookie=cookie_header(alice)
    )
    await served(socket)

    for size in [256 * 1024 + 1, 1024 * 1024 - 1]:
        await socket.send(json.dumps({"message": "x" * (size - 30), "HEADERS": {}}))
        error = str(await socket.recv())
        assert 'id="composer-error"' in error and "too large to send" in error, size
        assert "the limit is 256 KB" in error
        assert "x" * 100 not in error
        assert "data-busy" in await served(socket)
    assert not await database_sync_to_async(Message.objects.exists)()

    # Past daphne's own cap nothing of lettachat runs: the server drops the connection (the
    # page never sends such a frame: it checks the app's limit first, tests/browser).
    await socket.send("x" * (1024 * 1024 + 1))
    assert await close_code(socket) in (1006, 1009)
    await alice.aclose()


# --- Per-person limits and private pages, against the real Letta ------------------------------


async def frame_with(socket, text: str, timeout: float = 30) -> str:
    async with asyncio.timeout(timeout):
        while True:
            frame = str(await socket.recv())
            if text in frame:
                return frame


@pytest.mark.integration
async def test_a_person_is_limited_in_new_conversations_and_replies_at_once_and_pages_are_private(
    start_server, letta_url, letta_api_key, letta_agent, make_user
):
    server = start_server(
        LETTA_GATEWAY="letta_gateway.client.LettaGateway",
        LETTA_BASE_URL=letta_url,
        LETTA_API_KEY=letta_api_key,
        LETTACHAT_NEW_CONVERSATION_RATE="2/60",
        LETTACHAT_MAX_RUNNING_REPLIES="1",
    )
    await database_sync_to_async(make_user)("alice", PASSWORD)
    alice = await log_in(server.url, "alice")

    page = await alice.get(f"/a/{letta_agent.letta_id}/")
    assert page.status_code == 200
    assert {"private", "no-store"} <= {d.strip() for d in page.headers["cache-control"].split(",")}

    new = f"/a/{letta_agent.letta_id}/new/"
    for _ in range(2):
        assert (await post_form(alice, new)).status_code == 302
    refused = await post_form(alice, new)
    assert refused.status_code == 429
    assert "you started 2 conversations in the last minute" in refused.text
    first, second = await database_sync_to_async(
        lambda: list(Conversation.objects.order_by("pk"))
    )()
    assert (await alice.get(f"/c/{first.letta_id}/")).headers["cache-control"].count("no-store")

    cookie = cookie_header(alice)
    busy = await open_socket(server, f"/ws/c/{first.letta_id}/", cookie=cookie)
    other = await open_socket(server, f"/ws/c/{second.letta_id}/", cookie=cookie)
    await served(busy)
    await served(other)
    await busy.send(json.dumps({"message": "[[stall:8]] take your time", "HEADERS": {}}))
    await frame_with(busy, 'data-busy="true"')
    await other.send(json.dumps({"message": "meanwhile, hello", "HEADERS": {}}))
    refusal = await frame_with(other, 'id="composer-error"')
    assert "at most 1 may run at once" in refusal

    await busy.send(json.dumps({"type": "stop", "HEADERS": {}}))
    await frame_with(busy, 'data-busy="false"', timeout=60)
    await other.send(json.dumps({"message": "now hello", "HEADERS": {}}))
    await frame_with(other, "Echo: now hello", timeout=60)
    for socket in (busy, other):
        await socket.close()
    await alice.aclose()


# --- An otid belongs to the conversation it was first sent in ---------------------------------


async def frames_until(socket, text: str, timeout: float = 60) -> list[str]:
    frames: list[str] = []
    async with asyncio.timeout(timeout):
        while not frames or text not in frames[-1]:
            frames.append(str(await socket.recv()))
    return frames


@pytest.mark.integration
async def test_another_persons_otid_never_brings_their_reply_into_ones_thread(
    start_server, letta_url, letta_api_key, letta_agent, make_user
):
    server = start_server(
        LETTA_GATEWAY="letta_gateway.client.LettaGateway",
        LETTA_BASE_URL=letta_url,
        LETTA_API_KEY=letta_api_key,
    )
    sockets = {}
    for name in ("bob", "mallory"):
        await database_sync_to_async(make_user)(name, PASSWORD)
        client = await log_in(server.url, name)
        assert (await post_form(client, f"/a/{letta_agent.letta_id}/new/")).status_code == 302
        conversation = await database_sync_to_async(
            lambda name=name: Conversation.objects.get(owner__username=name)
        )()
        sockets[name] = await open_socket(
            server, f"/ws/c/{conversation.letta_id}/", cookie=cookie_header(client)
        )
        await served(sockets[name])
        await client.aclose()
    bobs = await database_sync_to_async(lambda: Conversation.objects.get(owner__username="bob"))()

    # Bob's message, through lettachat: Mallory's frame with its otid is a turn of her own.
    otid = str(uuid.uuid4())
    await sockets["bob"].send(json.dumps({"message": "bobs secret plan", "otid": otid}))
    await frame_with(sockets["bob"], "Echo: bobs secret plan")
    await sockets["mallory"].send(json.dumps({"message": "hello there", "otid": otid}))
    frames = await frames_until(sockets["mallory"], 'data-busy="false"')
    assert any("Echo: hello there" in f for f in frames)
    assert not any("secret" in f for f in frames)

    # A message of Bob's that lettachat never saw (sent to Letta directly): the run Letta
    # re-attaches Mallory's frame to is Bob's, and it is not followed.
    other = str(uuid.uuid4())
    direct = LettaGateway(base_url=letta_url, api_key=letta_api_key)
    async for _event in direct.astream_reply(
        conversation_id=bobs.letta_id, text="bobs other secret", otid=other
    ):
        pass
    await sockets["mallory"].send(json.dumps({"message": "hi again", "otid": other}))
    frames = await frames_until(sockets["mallory"], 'data-busy="false"')
    assert not any("secret" in f for f in frames)
    assert any("Letta matched this message to a reply in another conversation" in f for f in frames)

    mallorys = await database_sync_to_async(
        lambda: list(
            Message.objects.filter(conversation__owner__username="mallory").values_list(
                "content", flat=True
            )
        )
    )()
    assert not any("secret" in text for text in mallorys), mallorys
    for socket in sockets.values():
        await socket.close()
