"""The periodic session check (chat/sessions.py): one for the whole process, each session once.

With a check per socket, a thousand idle sockets made two hundred database calls a second; now
the process checks every few seconds, in one call, each session its sockets hold.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.sessions.models import Session
from django.utils import timezone

from chat import sessions
from chat.sessions import CLOSE_SIGNED_OUT
from lettachat.asgi import application
from tests.websocket import ORIGIN, _session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def _sockets(letta_id: str, cookie: bytes, count: int) -> list[WebsocketCommunicator]:
    headers = [(b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)]
    opened = []
    for _ in range(count):
        socket = WebsocketCommunicator(application, f"/ws/c/{letta_id}/", headers=headers)
        connected, _ = await socket.connect(timeout=10)
        assert connected
        opened.append(socket)
    return opened


async def test_the_process_checks_each_session_once_however_many_sockets_it_holds(
    settings, monkeypatch, user, make_user, make_conversation
):
    settings.LETTACHAT_SESSION_CHECK_SECONDS = 0.05
    bob = await database_sync_to_async(make_user)("bob")
    mine = await database_sync_to_async(make_conversation)(user)
    his = await database_sync_to_async(make_conversation)(bob)
    checked: asyncio.Queue[set] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    real = sessions.sessions_live

    def counted(pairs):
        live = real(pairs)
        loop.call_soon_threadsafe(checked.put_nowait, set(pairs))
        return live

    monkeypatch.setattr(sessions, "sessions_live", counted)
    my_cookie = await _session_cookie(user)
    held = await _sockets(mine.letta_id, my_cookie, 3)
    held += await _sockets(his.letta_id, await _session_cookie(bob), 2)

    # Once every socket is watched, each check covers both sessions, once each.
    while len(pairs := await asyncio.wait_for(checked.get(), 10)) < 2:
        pass
    assert {user_pk for _, user_pk in pairs} == {user.pk, bob.pk}
    assert len(pairs) == 2  # not 5: a check per session, not per socket

    # My session expires: my three sockets close at the next check; Bob's two stay.
    key = my_cookie.decode().split("=", 1)[1]
    await database_sync_to_async(
        lambda: Session.objects.filter(session_key=key).update(expire_date=timezone.now())
    )()
    for socket in held[:3]:
        assert (await socket.receive_output(timeout=10))["code"] == CLOSE_SIGNED_OUT
    for _ in range(2):  # the check that closed them is over, and one more after it
        await asyncio.wait_for(checked.get(), 10)
    for socket in held[3:]:
        assert await socket.receive_nothing(timeout=0.01)
    for socket in held[3:]:
        await socket.disconnect()


def test_the_sessions_of_a_process_are_checked_in_two_queries_by_djangos_rules(
    make_user, django_assert_num_queries
):
    """sessions_live agrees with session_is_live (one session at a time) on every case, and
    reads the sessions and their people in one query each, however many there are."""
    from django.contrib.auth import get_user_model

    people = [make_user(f"person-{n}") for n in range(6)]
    keys = [_session_cookie.__wrapped__(p).decode().split("=", 1)[1] for p in people]
    pairs = {(key, person.pk) for key, person in zip(keys, people, strict=True)}
    Session.objects.filter(session_key=keys[0]).update(expire_date=timezone.now())  # expired
    people[1].set_password("a new one, elsewhere")  # every session of theirs ends
    people[1].save()
    get_user_model().objects.filter(pk=people[2].pk).update(is_active=False)  # let go
    Session.objects.filter(session_key=keys[3]).delete()  # logged out
    pairs |= {(keys[4], people[5].pk), ("no-such-session", people[4].pk), (None, people[4].pk)}

    one_by_one = {pair for pair in pairs if sessions.session_is_live(*pair)}
    with django_assert_num_queries(2):
        together = sessions.sessions_live(pairs)
    assert together == one_by_one == {(keys[4], people[4].pk), (keys[5], people[5].pk)}
