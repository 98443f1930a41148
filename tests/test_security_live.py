"""The attacks of issue 13, over real sockets and HTTP against a lettachat server process.

Each test starts daphne on the test database (``start_server`` in conftest) and talks to it as a
browser or an attacker on the same host would: real websocket handshakes with chosen ``Origin``
headers, logins through the forms, frames of every size.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from websockets.exceptions import InvalidStatus

from tests.live import (
    PASSWORD,
    cookie_header,
    log_in,
    open_socket,
    served,
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
