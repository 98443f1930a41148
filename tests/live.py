"""lettachat served by daphne in processes of their own, for tests over real sockets and HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.db import connection
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def database_url() -> str:
    """The test database the test process made, as a URL for the server process."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


class LiveServer:
    """lettachat served by daphne in a process of its own, which a test may kill and restart."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = _free_port()
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
                 "lettachat.asgi:application"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"daphne did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)  # polling a port with a deadline, not synchronising on time

    def kill(self) -> None:
        """The process dies at once (SIGKILL): nothing of it finishes cleanly."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` s."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a server process on the test database (and on the test's Redis layer
    and channel prefix when the tests use Redis, so several processes reach each other)."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url(),
        "LETTACHAT_VAR_DIR": str(tmp_path / "var"),
        "SECRET_KEY": settings.SECRET_KEY,
        "DJANGO_SETTINGS_MODULE": "lettachat.settings",
        **extra,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    return env


# --- Talking to a live server as a browser would -------------------------------------------------

PASSWORD = "a-long-test-password"


def http_client(base_url: str, *, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """A browser's HTTP side, connecting from ``address`` (any of loopback's 127.0.0.0/8)."""
    return httpx.AsyncClient(
        base_url=base_url,
        trust_env=False,
        timeout=30,
        transport=httpx.AsyncHTTPTransport(local_address=address),
    )


async def try_login(
    client: httpx.AsyncClient, username: str, password: str, *, path: str = "/login/"
) -> httpx.Response:
    """Fill in and send a login form (the site's or the admin's) as a person would."""
    await client.get(path)
    return await client.post(
        path,
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": client.cookies["csrftoken"],
        },
    )


async def log_in(base_url: str, username: str, password: str = PASSWORD) -> httpx.AsyncClient:
    """An HTTP client with a fresh session of ``username``, logged in through the login form."""
    client = http_client(base_url)
    answer = await try_login(client, username, password)
    assert answer.status_code == 302, answer.text[:500]
    return client


def cookie_header(client: httpx.AsyncClient) -> str:
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def post_form(client: httpx.AsyncClient, path: str, **data: str) -> httpx.Response:
    """A form POST with the CSRF token, as the page's forms send it."""
    return await client.post(
        path, data={**data, "csrfmiddlewaretoken": client.cookies["csrftoken"]}
    )


def origin_of(server: LiveServer) -> str:
    return server.url


async def open_socket(
    server: LiveServer, path: str, *, cookie: str = "", origin: str | None = None
) -> ClientConnection:
    """A real websocket to ``server``, with the page's own origin unless told otherwise."""
    headers = {"Cookie": cookie} if cookie else {}
    return await ws_connect(
        f"ws://127.0.0.1:{server.port}{path}",
        origin=Origin(origin if origin is not None else origin_of(server)),
        additional_headers=headers,
        open_timeout=10,
        max_size=None,
    )


async def close_code(socket: ClientConnection, timeout: float = 10) -> int:
    """Read until the server closes the socket; its close code (1006: dropped without one)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await socket.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else 1006


async def served(socket: ClientConnection, timeout: float = 10) -> str:
    """The socket still answers: a resume frame gets the page's catch-up."""
    await socket.send(json.dumps({"type": "resume", "after": 0}))
    async with asyncio.timeout(timeout):
        while True:
            frame = await socket.recv()
            if 'id="reply-status"' in str(frame):
                return str(frame)
