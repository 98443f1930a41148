"""The real gateway at the HTTP level, against a tiny local server that fails on purpose."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from letta_gateway import ApprovalAnswer, LettaApprovalPending, LettaBusy, LettaError
from letta_gateway.client import LettaGateway
from letta_gateway.types import (
    ContentDelta,
    Ping,
    RunStarted,
    Stopped,
    StreamError,
    ToolCallDelta,
    Usage,
)


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


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler], *, backlog: int = 5) -> Iterator[str]:
    """A local HTTP server answering with ``handler`` (``backlog``: connections it lets wait)."""
    server_class = type("Server", (ThreadingHTTPServer,), {"request_queue_size": backlog})
    server = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def failing_server() -> Iterator[tuple[str, list, type]]:
    seen: list[tuple[str, str, str]] = []
    handler = type("Handler", (_Failing,), {"seen": seen})
    with _serving(handler) as url:
        yield url, seen, handler


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


# A reply's stream: tokens and pings are read from their JSON, every other kind by the SDK ------

_RUN = "run-00000000-0000-4000-8000-000000000001"
_STREAM = [
    {"id": "ping-1", "message_type": "ping", "seq_id": 1, "run_id": _RUN, "date": "2026-12-04"},
    {"id": "message-r", "message_type": "reasoning_message", "seq_id": 2, "run_id": _RUN,
     "reasoning": "Let me think", "date": "2026-12-04T10:00:00Z", "otid": "r-0"},
    {"id": "message-a", "message_type": "assistant_message", "seq_id": 3, "run_id": _RUN,
     "content": "Hel", "date": "2026-12-04T10:00:00Z", "otid": "a-0"},
    {"id": "message-a", "message_type": "assistant_message", "seq_id": 4, "run_id": _RUN,
     "content": [{"type": "text", "text": "lo"}, {"type": "text", "text": "!"}],
     "date": "2026-12-04T10:00:00Z"},
    {"id": "message-t", "message_type": "tool_call_message", "seq_id": 5, "run_id": _RUN,
     "date": "2026-12-04T10:00:00Z",
     "tool_call": {"tool_call_id": "call-1", "name": "archival", "arguments": "{}"}},
    {"id": "ping-2", "message_type": "ping", "seq_id": 6, "run_id": _RUN, "date": "2026-12-04"},
    {"message_type": "stop_reason", "stop_reason": "end_turn"},
    {"message_type": "usage_statistics", "completion_tokens": 3, "prompt_tokens": 100,
     "total_tokens": 103, "step_count": 1, "context_tokens": 103},
]  # fmt: skip


@contextmanager
def _sse_server(frames: list[bytes]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            for frame in frames:
                self.wfile.write(frame)
            self.wfile.flush()

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler) as url:
        yield url


@pytest.fixture
def sse_url() -> Iterator[str]:
    frames = [b"data: " + json.dumps(event).encode() + b"\n\n" for event in _STREAM]
    with _sse_server([*frames, b"data: [DONE]\n\n"]) as url:
        yield url


async def _reply(gateway: LettaGateway) -> list[object]:
    return [e async for e in gateway.astream_reply(conversation_id="conv-1", text="hi", otid="o")]


async def test_a_replys_events_are_those_the_sdks_models_give(sse_url):
    """The stream read without the SDK's models for tokens and pings gives, event for event,
    what the SDK's models give (``_stream_events`` of each), for every kind."""
    from letta_gateway.client import AsyncLetta, _stream_events

    sdk = AsyncLetta(base_url=sse_url, api_key=None, max_retries=0)
    sdk.api_key = None
    stream = await sdk.conversations.messages.create(
        "conv-1", messages=[{"role": "user", "content": "hi"}], stream_tokens=True
    )
    by_the_sdk = [event async for raw in stream for event in _stream_events(raw)]
    by_the_sdk[5] = Ping(6)  # the gateway's own rule: a later ping with the run's id is a ping

    events = await _reply(LettaGateway(base_url=sse_url, api_key=""))

    assert events == by_the_sdk
    assert events == [
        RunStarted(_RUN, 1),
        ContentDelta("message-r", "reasoning", "Let me think", _RUN, 2),
        ContentDelta("message-a", "assistant", "Hel", _RUN, 3),
        ContentDelta("message-a", "assistant", "lo!", _RUN, 4),
        ToolCallDelta("message-t", "call-1", "archival", "{}", _RUN, 5),
        Ping(6),
        Stopped("end_turn"),
        Usage(100, 3, 103, 103, 1),
    ]


async def test_a_token_of_an_unknown_shape_is_left_to_the_sdk():
    """A token whose fields are not what we know (here a seq_id sent as a string) is not
    guessed at: the SDK's model reads it, as it reads every other kind."""
    odd = {"id": "message-a", "message_type": "assistant_message", "seq_id": "3", "content": "x"}
    frames = [b"data: " + json.dumps(odd).encode() + b"\n\n", b"data: [DONE]\n\n"]
    with _sse_server(frames) as url:
        events = await _reply(LettaGateway(base_url=url, api_key=""))
    assert events == [ContentDelta("message-a", "assistant", "x", "", 3)]


async def test_an_error_event_inside_a_reply_is_the_runs_failure():
    frames = [
        b"data: " + json.dumps(_STREAM[0]).encode() + b"\n\n",
        b'event: error\ndata: {"error": {"message": "The model is overloaded", '
        b'"error_type": "llm_error", "run_id": "' + _RUN.encode() + b'"}}\n\n',
    ]
    with _sse_server(frames) as url:
        events = await _reply(LettaGateway(base_url=url, api_key=""))
    assert events == [
        RunStarted(_RUN, 1),
        StreamError("llm_error", "The model is overloaded", "", _RUN),
    ]


async def test_more_replies_than_the_sdks_connection_pool_stream_at_once(settings):
    """Each streaming reply holds a connection to Letta; the SDK's default pool (100) made the
    101st wait for another reply to end. Here 120 replies must all reach Letta before any ends."""
    settings.LETTA_MAX_CONNECTIONS = 1000
    replies = 120
    arrived = threading.Barrier(replies + 1, timeout=30)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"data: " + json.dumps(_STREAM[0]).encode() + b"\n\n")
            self.wfile.flush()
            arrived.wait()  # every reply is streaming at once, or this one never ends
            self.wfile.write(b"data: [DONE]\n\n")

        def log_message(self, *args: object) -> None:
            pass

    with _serving(Handler, backlog=replies) as url:
        gateway = LettaGateway(base_url=url, api_key="")
        waiter = asyncio.get_running_loop().run_in_executor(None, arrived.wait)
        results = await asyncio.gather(*(_reply(gateway) for _ in range(replies)), waiter)
    assert results[:-1] == [[RunStarted(_RUN, 1)]] * replies
