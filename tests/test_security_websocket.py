"""The websocket under abuse: who may connect, malformed and huge frames, floods, socket storms.

The plain cases (no session, someone else's conversation, a foreign origin, a few malformed
frames) are in ``tests/test_consumers.py``; these are the harder ones.
"""

from __future__ import annotations

import json
import time

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from chat import limits
from chat.consumers import CLOSE_UNAUTHENTICATED
from chat.limits import CLOSE_TOO_MANY_SOCKETS
from lettachat.asgi import application
from tests.websocket import ORIGIN, _session_cookie, frames_until_idle, open_socket, send_message

pytestmark = pytest.mark.django_db(transaction=True)


async def messages_of(conversation):
    return await database_sync_to_async(
        lambda: list(conversation.messages.values_list("message_type", "content"))
    )()


async def still_serves(communicator, fake_gateway, text="are you still there?"):
    """The socket takes a message and relays a whole reply."""
    fake_gateway.enqueue_text("still", " here")
    await send_message(communicator, text)
    frames = await frames_until_idle(communicator)
    assert any("still here" in f for f in frames), frames
    assert fake_gateway.sent[-1]["text"] == text


async def resumed(communicator) -> None:
    """Say what the page shows, as the browser does on connecting; then group events flow."""
    await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
    assert 'data-busy="false"' in await communicator.receive_from()


def socket_with(path: str, headers: list[tuple[bytes, bytes]]) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=headers)


# --- Who may connect ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        None,
        b"null",
        b"http://127.0.0.1.evil.example",
        b"http://localhost.evil.example:8000",
        b"https://evil.example",
        b"http://127.0.0.1:9999",
        b"https://127.0.0.1:8000",
        b"http://localhost:3000",
        b"http://localhost:8000",
        b"http://127.0.0.1",
        b"ws://127.0.0.1:8000",
        b"http://127.0.0.1:8000.evil.example",
    ],
    ids=[
        "no-origin",
        "null",
        "lookalike-ip",
        "lookalike-host",
        "foreign",
        "same-host-other-port",
        "same-host-other-scheme",
        "allowed-host-other-port",
        "allowed-host-not-the-served-one",
        "no-port",
        "ws-scheme",
        "port-lookalike",
    ],
)
async def test_a_socket_from_another_origin_is_refused_before_anything_runs(
    conversation, user, origin
):
    headers = [(b"host", b"127.0.0.1:8000"), (b"cookie", await _session_cookie(user))]
    if origin is not None:
        headers.append((b"origin", origin))
    communicator = socket_with(f"/ws/c/{conversation.letta_id}/", headers)
    connected, _ = await communicator.connect()
    assert not connected
    assert limits.sockets_open(user.pk) == 0


@pytest.mark.parametrize(
    ("origin", "host", "extra", "opens"),
    [
        (b"http://127.0.0.1:8000", b"127.0.0.1:8000", {}, True),
        (b"http://LOCALHOST:8000", b"localhost:8000", {}, True),
        # Served at a host that is not allowed: its own origin does not help.
        (b"http://evil.example:8000", b"evil.example:8000", {}, False),
        # Behind a TLS proxy: the page is https, the socket reaches daphne as plain ws.
        (b"https://127.0.0.1:8000", b"127.0.0.1:8000", {"proxy": b"https"}, True),
        (b"http://127.0.0.1:8000", b"127.0.0.1:8000", {"proxy": b"https"}, False),
        (b"https://127.0.0.1:8000", b"127.0.0.1:8000", {"proxy": b"http"}, False),
        # CSRF_TRUSTED_ORIGINS, exactly or by a subdomain wildcard, as Django reads it.
        (b"https://chat.example.com", b"127.0.0.1:8000", {}, True),
        (b"http://chat.example.com", b"127.0.0.1:8000", {}, False),
        (b"https://chat.example.com:8443", b"127.0.0.1:8000", {}, False),
        (b"https://eu.team.example", b"127.0.0.1:8000", {}, True),
        (b"https://team.example.evil", b"127.0.0.1:8000", {}, False),
    ],
)
async def test_an_origin_opens_a_socket_only_when_it_matches_exactly(
    conversation, user, settings, origin, host, extra, opens
):
    settings.CSRF_TRUSTED_ORIGINS = ["https://chat.example.com", "https://*.team.example"]
    headers = [(b"origin", origin), (b"host", host), (b"cookie", await _session_cookie(user))]
    if "proxy" in extra:
        settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        headers.append((b"x-forwarded-proto", extra["proxy"]))
    communicator = socket_with(f"/ws/c/{conversation.letta_id}/", headers)
    connected, _ = await communicator.connect()
    assert connected is opens
    await communicator.disconnect()


async def test_a_session_ended_by_logging_out_no_longer_opens_a_socket(conversation, user):
    @database_sync_to_async
    def logged_in_then_out():
        client = Client()
        client.force_login(user)
        cookie = client.cookies["sessionid"].value
        client.post("/logout/")
        return f"sessionid={cookie}".encode()

    cookie = await logged_in_then_out()
    communicator = socket_with(
        f"/ws/c/{conversation.letta_id}/",
        [(b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)],
    )
    connected, _ = await communicator.connect()
    assert connected
    assert (await communicator.receive_output())["code"] == CLOSE_UNAUTHENTICATED
    await communicator.disconnect()


async def test_a_deactivated_persons_socket_is_refused(conversation, user):
    cookie = await _session_cookie(user)
    user.is_active = False
    await database_sync_to_async(user.save)()
    communicator = socket_with(
        f"/ws/c/{conversation.letta_id}/",
        [(b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)],
    )
    await communicator.connect()
    assert (await communicator.receive_output())["code"] == CLOSE_UNAUTHENTICATED
    await communicator.disconnect()


async def test_an_open_socket_closes_when_its_session_logs_out_and_sends_nothing_after(
    conversation, user, fake_gateway
):
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = socket_with(
        f"/ws/c/{conversation.letta_id}/",
        [(b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)],
    )
    assert (await communicator.connect())[0]
    await resumed(communicator)

    await database_sync_to_async(client.post)("/logout/")

    assert (await communicator.receive_output())["code"] == CLOSE_UNAUTHENTICATED
    await send_message(communicator, "sent after logging out")
    assert await communicator.receive_nothing()
    await communicator.disconnect()
    assert fake_gateway.sent == []
    assert await messages_of(conversation) == []


# --- Malformed frames --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        '{"message": null}',
        '{"message": ["hi"]}',
        '{"message": {"text": "hi"}}',
        '{"message": true}',
        '"hi"',
        "null",
        "",
        '{"message": "unterminated',
        "[" * 100_000,  # nested past the JSON parser's recursion limit
        '{"message": "hi", "n": ' + "1" * 5000 + "}",  # past Python's int-digits limit
        "\x00\ud800",
    ],
    ids=[
        "null",
        "list",
        "object",
        "bool",
        "bare-string",
        "bare-null",
        "empty",
        "truncated",
        "deep-nesting",
        "huge-int",
        "nul-and-lone-surrogate",
    ],
)
async def test_a_frame_of_the_wrong_shape_gets_an_error_and_the_socket_keeps_serving(
    conversation, user, fake_gateway, frame
):
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    # Straight to the app: the test communicator's send_to refuses an empty text frame.
    await communicator.send_input({"type": "websocket.receive", "text": frame})
    error = await communicator.receive_from()
    assert 'id="composer-error"' in error and "could not be read" in error
    await still_serves(communicator, fake_gateway)
    await communicator.disconnect()
    assert [s["text"] for s in fake_gateway.sent] == ["are you still there?"]


async def test_a_binary_frame_gets_an_error_and_the_socket_keeps_serving(
    conversation, user, fake_gateway
):
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await communicator.send_to(bytes_data=json.dumps({"message": "hi"}).encode())
    assert "could not be read" in await communicator.receive_from()
    await still_serves(communicator, fake_gateway)
    await communicator.disconnect()
    assert len(fake_gateway.sent) == 1


async def test_a_one_megabyte_frame_gets_an_error_and_the_socket_keeps_serving(
    conversation, user, fake_gateway
):
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    await send_message(communicator, "x" * 1_000_000)
    error = await communicator.receive_from()
    assert 'id="composer-error"' in error
    assert "x" * 100 not in error, "the error does not echo the frame back"
    await still_serves(communicator, fake_gateway)
    await communicator.disconnect()
    assert await messages_of(conversation) == [
        ("user", "are you still there?"),
        ("assistant", "still here"),
    ]


async def test_frames_over_the_byte_limit_are_refused_by_size_and_the_socket_keeps_serving(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_MAX_FRAME_BYTES = 1000
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    envelope = len(json.dumps({"message": "", "HEADERS": {}}))
    # Exactly at the limit: read (and refused only as a message with nothing but spaces).
    await send_message(communicator, " " * (1000 - envelope))
    assert "Type a message first." in await communicator.receive_from()
    # One byte over, counted in UTF-8 bytes, not characters (ensure_ascii=False, as the page).
    frame = json.dumps({"message": "é" * 400 + "x" * (201 - envelope), "HEADERS": {}},
                       ensure_ascii=False)  # fmt: skip
    assert len(frame) < 1000 < len(frame.encode())
    await communicator.send_to(text_data=frame)
    error = await communicator.receive_from()
    assert 'id="composer-error"' in error
    assert "too large to send (1001 bytes; the limit is 1000 bytes)" in error
    await communicator.send_to(bytes_data=b"\0" * 1001)
    assert "too large to send" in await communicator.receive_from()
    await still_serves(communicator, fake_gateway)
    await communicator.disconnect()
    assert [s["text"] for s in fake_gateway.sent] == ["are you still there?"]


async def test_fields_in_a_frame_cannot_point_a_message_at_another_conversation(
    conversation, make_conversation, user, other_user, fake_gateway
):
    theirs = await database_sync_to_async(make_conversation)(other_user)
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    fake_gateway.enqueue_text("ok")
    frame = {
        "message": "hello",
        "conversation": theirs.letta_id,
        "conversation_id": theirs.letta_id,
        "user": other_user.pk,
        "HEADERS": {"HX-Target": "messages", "HX-Current-URL": f"/c/{theirs.letta_id}/"},
    }
    await communicator.send_to(text_data=json.dumps(frame))
    await frames_until_idle(communicator)
    await communicator.disconnect()
    assert [s["conversation_id"] for s in fake_gateway.sent] == [conversation.letta_id]
    assert await messages_of(theirs) == []
    assert await messages_of(conversation) == [("user", "hello"), ("assistant", "ok")]


# --- Floods ------------------------------------------------------------------------------------


async def test_a_flood_of_sends_is_refused_past_the_limit_and_others_are_still_served(
    conversation, make_conversation, user, other_user, fake_gateway, settings
):
    settings.LETTACHAT_SEND_RATE = "3/60"
    bobs = await database_sync_to_async(make_conversation)(other_user)
    flooder, _, _ = await open_socket(conversation.letta_id, user=user)
    bob, _, _ = await open_socket(bobs.letta_id, user=other_user)

    for _ in range(3):
        await send_message(flooder, "   ")
        assert "Type a message first." in await flooder.receive_from()
    for text in ["a real message", "and another"]:
        await send_message(flooder, text)
        refusal = await flooder.receive_from()
        assert 'id="composer-error"' in refusal
        assert "sending messages too fast" in refusal and "Wait 60 seconds" in refusal
        # Only the error line is swapped: the text stays in the box.
        assert 'id="composer"' not in refusal

    await still_serves(bob, fake_gateway, "hello from bob")
    await flooder.disconnect()
    await bob.disconnect()
    assert [s["text"] for s in fake_gateway.sent] == ["hello from bob"]
    assert await messages_of(conversation) == []


async def test_after_the_window_passes_a_flooding_socket_is_served_again(
    conversation, user, fake_gateway, settings, monkeypatch
):
    settings.LETTACHAT_SEND_RATE = "2/60"
    now = [1000.0]  # a clock that moves only when the test moves it
    monkeypatch.setattr(limits, "_now", lambda: now[0])
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    for _ in range(2):
        await send_message(communicator, "")
        assert "Type a message first." in await communicator.receive_from()
    now[0] += 45
    await send_message(communicator, "too soon")
    assert "Wait 15 seconds" in await communicator.receive_from()
    now[0] += 15
    await still_serves(communicator, fake_gateway, "now it is fine")
    await communicator.disconnect()


async def test_sockets_past_the_per_person_cap_are_closed_with_4429_and_the_first_still_served(
    conversation, make_conversation, user, other_user, fake_gateway, settings
):
    settings.LETTACHAT_MAX_SOCKETS_PER_USER = 5
    sockets = []
    for _ in range(5):
        communicator, connected, _ = await open_socket(conversation.letta_id, user=user)
        assert connected
        sockets.append(communicator)
    extra, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    assert (await extra.receive_output())["code"] == CLOSE_TOO_MANY_SOCKETS
    await extra.disconnect()
    assert limits.sockets_open(user.pk) == 5

    # The earlier sockets are still served, and every one of them sees the reply.
    for other in sockets[1:]:
        await resumed(other)
    await still_serves(sockets[0], fake_gateway)
    for other in sockets[1:]:
        assert any("still here" in f for f in await frames_until_idle(other))

    # Closing one frees its place.
    await sockets.pop().disconnect()
    again, connected, _ = await open_socket(conversation.letta_id, user=user)
    assert connected
    await still_serves(again, fake_gateway, "from the new socket")

    # Someone else is not affected by any of it.
    bobs = await database_sync_to_async(make_conversation)(other_user)
    bob, connected, _ = await open_socket(bobs.letta_id, user=other_user)
    assert connected
    await still_serves(bob, fake_gateway, "hello from bob")
    for communicator in [*sockets, again, bob]:
        await communicator.disconnect()
    assert limits.sockets_open(user.pk) == 0


async def test_a_thousand_sockets_from_one_person_are_refused_and_others_are_served(
    conversation, make_conversation, user, other_user, fake_gateway, settings
):
    # The in-memory layer: with Redis, the test communicator waits on each socket's layer receive
    # as it is torn down, which makes a thousand of them slow to clean up (not to refuse).
    settings.CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 5000}}
    }
    settings.LETTACHAT_MAX_SOCKETS_PER_USER = 5
    cookie = await _session_cookie(user)
    headers = [(b"origin", ORIGIN), (b"host", b"127.0.0.1:8000"), (b"cookie", cookie)]
    started = time.monotonic()
    accepted, refused = [], []
    for index in range(1000):
        communicator = socket_with(f"/ws/c/{conversation.letta_id}/", headers)
        connected, _ = await communicator.connect()
        assert connected
        if index < 5:
            accepted.append(communicator)
        else:
            assert (await communicator.receive_output())["code"] == CLOSE_TOO_MANY_SOCKETS
            refused.append(communicator)
    assert (len(accepted), len(refused)) == (5, 995)

    bobs = await database_sync_to_async(make_conversation)(other_user)
    bob, _, _ = await open_socket(bobs.letta_id, user=other_user)
    await still_serves(bob, fake_gateway, "hello from bob")
    # The first five were kept: each sees the reply to a message sent on one of them.
    for other in accepted[1:]:
        await resumed(other)
    await still_serves(accepted[0], fake_gateway, "hello from alice")
    for other in accepted[1:]:
        assert any("still here" in f for f in await frames_until_idle(other))
    for communicator in [*accepted, *refused, bob]:
        await communicator.disconnect()
    assert limits.sockets_open(user.pk) == 0
    assert time.monotonic() - started < 60


async def test_every_kind_of_frame_but_stop_counts_against_the_limit(
    conversation, user, fake_gateway, settings
):
    settings.LETTACHAT_SEND_RATE = "3/60"
    communicator, _, _ = await open_socket(conversation.letta_id, user=user)
    for _ in range(3):
        await communicator.send_to(text_data=json.dumps({"type": "resume", "after": 0}))
        assert "too fast" not in await communicator.receive_from()
    for frame in [
        {"message": "hello"},
        {"type": "retry", "message": 1},
        {"type": "resume", "after": 0},
        "not even json",
    ]:
        text = frame if isinstance(frame, str) else json.dumps({**frame, "HEADERS": {}})
        await communicator.send_to(text_data=text)
        assert "sending messages too fast" in await communicator.receive_from(), frame
    # Stop always works: a person can always stop a reply (with none running, it just says so).
    await communicator.send_to(text_data=json.dumps({"type": "stop", "HEADERS": {}}))
    assert 'data-busy="false"' in await communicator.receive_from()
    await communicator.disconnect()
    assert fake_gateway.sent == []
    assert await messages_of(conversation) == []
