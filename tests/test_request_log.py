"""One log line per request on stdout, each with a request id that the response returns and that
every other line logged while serving it carries; websocket handshakes get their line too."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sys

import httpx
import pytest
import websockets
from django.http import HttpResponse
from django.test import AsyncClient
from django.urls import path, reverse

from lettachat.request_log import RequestIdFilter, new_request_id
from tests.servers import ServerProcess, free_port, server_env, test_database_url

pytestmark = pytest.mark.django_db

REQUESTS = "lettachat.requests"


def _noisy_view(request):
    logging.getLogger("conversations").warning("something worth saying")
    return HttpResponse("ok")


urlpatterns = [
    path("noisy/", _noisy_view, name="noisy"),
    *__import__("lettachat.urls", fromlist=["urlpatterns"]).urlpatterns,
]


def test_every_response_returns_its_request_id(client):
    first, second = client.get("/healthz"), client.get("/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", first["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


def test_an_id_from_the_proxy_is_kept_and_anything_else_replaced(client):
    assert client.get("/healthz", HTTP_X_REQUEST_ID="lb-1234.abc")["X-Request-ID"] == "lb-1234.abc"
    for hostile in ["x" * 65, "a b", "id\r\nSet-Cookie: x=1", "<script>", ""]:
        assert new_request_id(hostile) != hostile
        assert re.fullmatch(r"[0-9a-f]{32}", new_request_id(hostile))


def test_one_line_per_request_says_what_was_asked_and_what_came_of_it(client, user, caplog):
    client.force_login(user)
    with caplog.at_level(logging.INFO, logger=REQUESTS):
        response = client.get("/c/conv-nope/?q=my+secret+search", HTTP_X_REQUEST_ID="req-42")
    lines = [r for r in caplog.records if r.name == REQUESTS]
    assert len(lines) == 1
    line = lines[0].getMessage()
    assert response.status_code == 404
    assert line.startswith("GET /c/conv-nope/ 404 ")
    assert "secret" not in line  # the query is people's words: not logged
    assert f"user={user.pk}" in line and "ip=127.0.0.1" in line
    assert re.search(r" \d+B \d+\.\dms ", line)


async def test_the_async_stack_logs_the_same_line(caplog):
    with caplog.at_level(logging.INFO, logger=REQUESTS):
        response = await AsyncClient().get("/healthz", headers={"X-Request-ID": "async-1"})
    assert response["X-Request-ID"] == "async-1"
    assert [r.getMessage()[:15] for r in caplog.records if r.name == REQUESTS] == [
        "GET /healthz 20"
    ]


@pytest.mark.django_db(transaction=True)
def test_a_server_logs_to_stdout_each_line_with_its_request_id(tmp_path, settings):
    """The real thing: daphne's stdout, the request line and a line from inside the view."""
    port = free_port()
    env = server_env(
        DATABASE_URL=test_database_url(),
        LETTACHAT_VAR_DIR=str(tmp_path / "var"),
        SECRET_KEY=settings.SECRET_KEY,
        DJANGO_SETTINGS_MODULE="lettachat.settings",
    )
    # daphne -v 0: no access log of its own (README "Production"); lettachat logs each request.
    command = [sys.executable, "-m", "daphne", "-v", "0", "-b", "127.0.0.1", "-p", str(port),
               "lettachat.asgi:application"]  # fmt: skip
    with ServerProcess(command, env=env, log=tmp_path / "out", port=port) as server:
        response = httpx.get(f"{server.url}/healthz", headers={"X-Request-ID": "probe-7"})
        assert response.headers["X-Request-ID"] == "probe-7"

        async def handshake():
            async with websockets.connect(
                f"ws://127.0.0.1:{port}/ws/c/conv-nope/",
                origin=f"http://127.0.0.1:{port}",
                additional_headers={"X-Request-ID": "socket-9"},
            ) as socket:
                with pytest.raises(websockets.ConnectionClosed):
                    await socket.recv()

        asyncio.run(handshake())
        server.stop()
        out = server.output()
    probe = [line for line in out.splitlines() if "rid=probe-7" in line]
    assert len(probe) == 1, out
    assert re.search(r"INFO lettachat\.requests pid=\d+ rid=probe-7 GET /healthz 200 ", probe[0])
    socket_lines = [line for line in out.splitlines() if "rid=socket-9" in line]
    assert len(socket_lines) == 1, out
    assert "WEBSOCKET /ws/c/conv-nope/ accepted" in socket_lines[0]  # then closed with 4401


def test_lines_logged_while_serving_carry_the_request_id(client, settings):
    """The settings' own formatter and filter, on a handler the test reads."""
    settings.ROOT_URLCONF = __name__
    config = settings.LOGGING
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(config["formatters"]["line"]["format"]))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        client.get(reverse("noisy"), HTTP_X_REQUEST_ID="inner-3")
        logging.getLogger("conversations").warning("outside any request")
    finally:
        root.removeHandler(handler)
    text = out.getvalue()
    assert re.search(r"WARNING conversations pid=\d+ rid=inner-3 something worth saying", text)
    assert re.search(r"INFO lettachat\.requests pid=\d+ rid=inner-3 GET /noisy/ 200", text)
    assert re.search(r"rid=- outside any request", text)
    assert config["handlers"]["stdout"]["stream"] == "ext://sys.stdout"
