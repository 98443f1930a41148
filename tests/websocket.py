"""Helpers to talk to the real ASGI stack (origin check, session auth, routing) in tests."""

from __future__ import annotations

import json

from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from lettachat.asgi import application

ORIGIN = b"http://127.0.0.1:8000"


@database_sync_to_async
def _session_cookie(user) -> bytes:
    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


async def open_socket(
    letta_id: str, *, user=None, origin: bytes = ORIGIN
) -> tuple[WebsocketCommunicator, bool, int | None]:
    headers = [(b"origin", origin), (b"host", b"127.0.0.1:8000")]
    if user is not None:
        headers.append((b"cookie", await _session_cookie(user)))
    communicator = WebsocketCommunicator(application, f"/ws/c/{letta_id}/", headers=headers)
    connected, code = await communicator.connect(timeout=10)  # a loaded machine: not 1 s
    return communicator, connected, code


async def send_message(communicator: WebsocketCommunicator, text: str) -> None:
    await communicator.send_to(text_data=json.dumps({"message": text, "HEADERS": {}}))


async def frames_until_idle(communicator: WebsocketCommunicator, timeout: float = 10) -> list[str]:
    """Every frame up to and including the one saying the reply is over."""
    frames = []
    while True:
        frame = await communicator.receive_from(timeout=timeout)
        frames.append(frame)
        if is_idle(frame):
            return frames


def is_idle(frame: str) -> bool:
    """The frame says the reply is over."""
    return 'id="reply-status"' in frame and 'data-busy="false"' in frame
