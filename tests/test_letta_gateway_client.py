"""The real gateway at the HTTP level, against a tiny local server that fails on purpose."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from letta_gateway import ApprovalAnswer, LettaApprovalPending, LettaBusy, LettaError
from letta_gateway.client import LettaGateway


class _Failing(BaseHTTPRequestHandler):
    status = 503
    body = b'{"detail": "nope"}'
    seen: list[tuple[str, str, str]]

    def _answer(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        body = self.body
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Retry-After", "0")
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def failing_server() -> Iterator[tuple[str, list, type]]:
    seen: list[tuple[str, str, str]] = []
    handler = type("Handler", (_Failing,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, handler
    server.shutdown()
    server.server_close()


async def test_a_send_is_never_retried(failing_server):
    url, seen, _ = failing_server
    gateway = LettaGateway(base_url=url, api_key="")
    with pytest.raises(LettaError, match="failed"):
        async for _ in gateway.astream_reply(conversation_id="conv-1", text="hi", otid="o-1"):
            pass
    assert [(method, path) for method, path, _ in seen] == [
        ("POST", "/v1/conversations/conv-1/messages")
    ]


def test_creating_a_conversation_is_never_retried(failing_server):
    url, seen, _ = failing_server
    with pytest.raises(LettaError):
        LettaGateway(base_url=url, api_key="").create_conversation(agent_id="agent-1")
    assert len(seen) == 1


def test_reads_are_retried(failing_server):
    url, seen, _ = failing_server
    with pytest.raises(LettaError):
        LettaGateway(base_url=url, api_key="").health()
    assert len(seen) == 3


def test_a_conflict_is_reported_as_busy(failing_server):
    url, _, handler = failing_server
    handler.status = 409
    with pytest.raises(LettaBusy):
        LettaGateway(base_url=url, api_key="").create_conversation(agent_id="agent-1")


def test_the_api_key_is_sent_as_a_bearer_token_and_an_empty_one_not_at_all(
    failing_server, monkeypatch
):
    url, seen, _ = failing_server
    monkeypatch.setenv("LETTA_API_KEY", "")
    for key in ["sk-let-secret", ""]:
        with pytest.raises(LettaError):
            LettaGateway(base_url=url, api_key=key).create_conversation(agent_id="agent-1")
    assert [auth for _, _, auth in seen] == ["Bearer sk-let-secret", ""]


def test_the_sdks_resources_are_imported_with_the_gateway():
    """Not lazily on first use, where two threads at once could trip Python's import lock."""
    import pkgutil
    import sys

    import letta_gateway.client  # noqa: F401
    from letta_gateway.client import letta_client

    resources = letta_client.resources
    names = [m.name for m in pkgutil.walk_packages(resources.__path__, f"{resources.__name__}.")]
    assert names
    assert [name for name in names if name not in sys.modules] == []


async def test_an_approval_answer_is_never_retried(failing_server):
    url, seen, _ = failing_server
    gateway = LettaGateway(base_url=url, api_key="")
    with pytest.raises(LettaError, match="failed"):
        async for _ in gateway.astream_approval(
            conversation_id="conv-1",
            answers=[ApprovalAnswer("call-1", approve=False, reason="no")],
            otid="o-1",
        ):
            pass
    assert [(method, path) for method, path, _ in seen] == [
        ("POST", "/v1/conversations/conv-1/messages")
    ]


def test_a_conflict_for_a_pending_approval_is_told_apart(failing_server):
    url, _, handler = failing_server
    handler.status = 409
    handler.body = b'{"detail": {"code": "PENDING_APPROVAL", "pending_request_id": "message-1"}}'
    with pytest.raises(LettaApprovalPending):
        LettaGateway(base_url=url, api_key="").create_conversation(agent_id="agent-1")
