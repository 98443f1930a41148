"""A socket lives no longer than its session (chat/sessions.py), over real sockets and HTTP.

Two daphne processes share the test database and Redis. A person logs in through the login form,
holds sockets on both, and the session ends (logout through one process, deactivation, a password
change, expiry, a session deleted behind the app's back): every socket of that session closes with
4401 within seconds, on both processes, and sockets of other sessions go on being served. The
servers re-check sessions only once an hour here, unless a test says otherwise, so it is the
"session ended" event that closes the sockets, not the periodic check.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from django.contrib.sessions.models import Session
from django.utils import timezone
from websockets.exceptions import ConnectionClosed

from chat.sessions import CLOSE_SIGNED_OUT
from conversations.models import Message
from tests.conftest import require
from tests.live import (
    PASSWORD,
    LiveServer,
    close_code,
    cookie_header,
    log_in,
    open_socket,
    post_form,
    served,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_servers(start_server) -> tuple[LiveServer, LiveServer]:
    require(bool(os.environ.get("REDIS_URL")), "no Redis (REDIS_URL) for two server processes")
    return start_server(), start_server()


def ws_path(conversation) -> str:
    return f"/ws/c/{conversation.letta_id}/"


@pytest.mark.production_stack  # two processes reach each other only over Redis
async def test_logging_out_closes_that_sessions_sockets_in_both_processes(
    two_servers, make_user, make_conversation
):
    a, b = two_servers
    alice = await database_sync_to_async(make_user)("alice", PASSWORD)
    conversation = await database_sync_to_async(make_conversation)(alice)
    laptop = await log_in(a.url, "alice")
    phone = await log_in(b.url, "alice")  # another session of the same person
    on_a = await open_socket(a, ws_path(conversation), cookie=cookie_header(laptop))
    on_b = await open_socket(b, ws_path(conversation), cookie=cookie_header(laptop))
    phones = await open_socket(b, ws_path(conversation), cookie=cookie_header(phone))
    await served(on_a)
    await served(on_b)

    logout = await post_form(laptop, "/logout/")
    assert logout.status_code == 302

    assert await close_code(on_a) == CLOSE_SIGNED_OUT
    assert await close_code(on_b) == CLOSE_SIGNED_OUT
    assert "data-busy" in await served(phones), "the other session is not affected"
    await phones.close()
    for client in (laptop, phone):
        await client.aclose()


@pytest.mark.production_stack  # two processes reach each other only over Redis
async def test_deactivating_a_person_closes_every_socket_of_theirs_and_no_one_elses(
    two_servers, make_user, make_conversation
):
    a, b = two_servers
    alice = await database_sync_to_async(make_user)("alice", PASSWORD)
    await database_sync_to_async(make_user)("bob", PASSWORD)
    bob = await database_sync_to_async(lambda: type(alice).objects.get(username="bob"))()
    alices = await database_sync_to_async(make_conversation)(alice)
    bobs = await database_sync_to_async(make_conversation)(bob)
    alice_http = [await log_in(a.url, "alice"), await log_in(b.url, "alice")]
    bob_http = await log_in(b.url, "bob")
    sockets = [
        await open_socket(server, ws_path(alices), cookie=cookie_header(client))
        for server in (a, b)
        for client in alice_http
    ]
    bobs_socket = await open_socket(b, ws_path(bobs), cookie=cookie_header(bob_http))

    alice.is_active = False
    await database_sync_to_async(alice.save)()  # as the admin or a command would

    for socket in sockets:
        assert await close_code(socket) == CLOSE_SIGNED_OUT
    assert "data-busy" in await served(bobs_socket)
    await bobs_socket.close()
    for client in [*alice_http, bob_http]:
        await client.aclose()


@pytest.mark.production_stack  # two processes reach each other only over Redis
async def test_a_password_change_closes_the_other_sessions_and_the_changer_goes_on(
    two_servers, make_user, make_conversation
):
    a, b = two_servers
    alice = await database_sync_to_async(make_user)("alice", PASSWORD, is_staff=True)
    conversation = await database_sync_to_async(make_conversation)(alice)
    changer = await log_in(a.url, "alice")
    elsewhere = await log_in(b.url, "alice")
    stale = await open_socket(b, ws_path(conversation), cookie=cookie_header(elsewhere))
    changers_old = await open_socket(a, ws_path(conversation), cookie=cookie_header(changer))

    changed = await post_form(
        changer,
        "/admin/password_change/",
        old_password=PASSWORD,
        new_password1="another-long-password-7",
        new_password2="another-long-password-7",
    )
    assert changed.status_code == 302, changed.text[:500]

    assert await close_code(stale) == CLOSE_SIGNED_OUT
    # The change gave the changer's browser a new session key: the old one's socket closes,
    # and the page's reconnect, with the cookie it now holds, is served.
    assert await close_code(changers_old) == CLOSE_SIGNED_OUT
    again = await open_socket(a, ws_path(conversation), cookie=cookie_header(changer))
    assert "data-busy" in await served(again)
    refused = await open_socket(b, ws_path(conversation), cookie=cookie_header(elsewhere))
    assert await close_code(refused) == CLOSE_SIGNED_OUT
    await again.close()
    for client in (changer, elsewhere):
        await client.aclose()


async def test_an_expired_session_closes_its_socket_at_the_next_check(
    start_server, make_user, make_conversation
):
    server = start_server(LETTACHAT_SESSION_CHECK_SECONDS="0.5")
    alice = await database_sync_to_async(make_user)("alice", PASSWORD)
    conversation = await database_sync_to_async(make_conversation)(alice)
    client = await log_in(server.url, "alice")
    socket = await open_socket(server, ws_path(conversation), cookie=cookie_header(client))
    await served(socket)

    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=client.cookies["sessionid"]).update(
            expire_date=timezone.now() - timedelta(seconds=1)
        )
    )()

    assert await close_code(socket, timeout=10) == CLOSE_SIGNED_OUT
    await client.aclose()


@pytest.mark.parametrize(
    "frame",
    [
        '{"message": "are you still listening?", "HEADERS": {}}',
        # Refused however it would have been answered: the socket closes, no "Type a message
        # first." answers it.
        '{"message": "   ", "HEADERS": {}}',
        '{"type": "stop"}',
    ],
    ids=["message", "empty-message", "stop"],
)
async def test_a_frame_on_a_socket_whose_session_is_gone_is_refused_and_nothing_is_sent(
    start_server, make_user, make_conversation, frame
):
    server = start_server()  # re-checks only hourly: the frame itself must be checked
    alice = await database_sync_to_async(make_user)("alice", PASSWORD)
    conversation = await database_sync_to_async(make_conversation)(alice)
    client = await log_in(server.url, "alice")
    socket = await open_socket(server, ws_path(conversation), cookie=cookie_header(client))
    await served(socket)

    # Gone behind the app's back: no signal, no event.
    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=client.cookies["sessionid"]).delete()
    )()
    await socket.send(frame)

    answers = []
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                answers.append(await socket.recv())
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_SIGNED_OUT
    assert answers == [], "the frame was answered"
    assert not await database_sync_to_async(Message.objects.exists)()
    await client.aclose()
