"""Scripted OpenAI-compatible model server for lettachat's local Letta harness (stdlib only).

The real Letta server (see ``harness.py``) talks to this instead of a real LLM, so that the
whole stack runs offline and deterministically.  It can also be used on its own, in-process
(``make_server(port=0)`` + ``serve_in_thread``) or as a program::

    python -m devtools.local_letta.fake_model --host 127.0.0.1 --port 8399

Endpoints
    GET  /v1/models               one chat model, ``FAKE_MODEL_ID`` (default ``lettachat-demo``)
    POST /v1/chat/completions     streaming (SSE) and non-streaming, with tool calls
    POST /v1/embeddings           deterministic unit vectors (``FAKE_MODEL_EMBED_DIM``, 1536)
    GET  /health                  ``{"ok": true}``

Every response carries ``Connection: close``: Letta 0.16.8 leaks one HTTP client per LLM call,
and with keep-alive a later socket that reuses the leaked fd number hangs for 60 s.

Behaviour is driven by the LAST USER TEXT of the request.  Directives are removed from the
text that is echoed back, and can be combined (e.g. ``[[think:hmm]] [[stall:2]] hello``):

    (plain text)          reply ``Echo: <text>``, one SSE chunk per word (word + its leading
                          whitespace), ``FAKE_MODEL_DELAY`` s apart (default 0.03)
    the word ``slow``     reply padded to 40 words, ``FAKE_MODEL_SLOW_DELAY`` s per token (0.3)
    [[tool:NAME {json}]]  call tool NAME with the JSON arguments, if the request offers NAME.
                          When the last message is a tool result the reply is
                          ``Tool NAME returned: <first 80 chars of the result>``
    [[block:LABEL]]       reply ``LABEL=<value of that memory block in the system prompt>``
    [[think:TEXT]]        first stream TEXT as ``reasoning_content`` deltas (the deepseek-style
                          field; Letta 0.16.8 turns them into ``reasoning_message`` events), then
                          the reply
    [[stall:N]]           after the first reply token, pause N seconds (float), then go on
    [[wait:N]]            before anything at all (no first token), wait N seconds (float)
    [[then_stall:N]]      as [[stall:N]], but for the reply after a tool result (a tool
                          call asked in the same message, then approved, say)
    [[fail:STATUS]]       answer at once with HTTP STATUS and an OpenAI-style error JSON.  The
                          response carries ``x-should-retry: false`` so the OpenAI SDK inside
                          Letta does not retry it (set FAKE_MODEL_FAIL_RETRY=1 to allow retries)
    [[fail_mid]]          stream up to 3 reply tokens, then drop the connection (no [DONE],
                          no terminating chunk)
    [[markdown]]          reply with ``MARKDOWN_SAMPLE`` (heading, **bold**, list, python fence)
    [[long:N]]            reply with exactly N words

If the request forces a tool call (``tool_choice`` "required" or a named function) and offers
``send_message`` (legacy memgpt agent types), the reply text is sent as
``send_message(message=text)``; otherwise it is plain assistant content, which is what Letta's
default ``letta_v1_agent`` expects.

Environment: FAKE_MODEL_ID, FAKE_MODEL_DELAY, FAKE_MODEL_SLOW_DELAY, FAKE_MODEL_LOG (append
every request body as one JSON line), FAKE_MODEL_EMBED_DIM, FAKE_MODEL_FAIL_RETRY,
FAKE_MODEL_VERBOSE (access log on stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_MODEL_ID = "lettachat-demo"
# Letta routes these model names to the OpenAI Responses API, which this server does not speak.
FORBIDDEN_PREFIXES = ("gpt-5", "o1", "o3", "o4")

MARKDOWN_SAMPLE = (
    "# Markdown demo\n"
    "\n"
    "This reply has **bold text**, *italics* and `inline code`.\n"
    "\n"
    "- first item\n"
    "- second item\n"
    "- third item\n"
    "\n"
    "```python\n"
    "def greet(name):\n"
    '    return f"Hello, {name}!"\n'
    "```\n"
    "\n"
    "That is all."
)

LOREM = tuple(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua".split(" ")
)

TOOL_RE = re.compile(r"\[\[tool:([A-Za-z0-9_\-]+)\s*(\{.*?\})?\s*\]\]", re.S)
BLOCK_RE = re.compile(r"\[\[block:([A-Za-z0-9_\-/]+)\]\]")
THINK_RE = re.compile(r"\[\[think:(.*?)\]\]", re.S)
STALL_RE = re.compile(r"\[\[stall:([0-9]*\.?[0-9]+)\]\]")
WAIT_RE = re.compile(r"\[\[wait:([0-9]*\.?[0-9]+)\]\]")
THEN_STALL_RE = re.compile(r"\[\[then_stall:([0-9]*\.?[0-9]+)\]\]")
FAIL_RE = re.compile(r"\[\[fail:(\d{3})\]\]")
FAIL_MID_RE = re.compile(r"\[\[fail_mid\]\]")
MARKDOWN_RE = re.compile(r"\[\[markdown\]\]")
LONG_RE = re.compile(r"\[\[long:(\d+)\]\]")
ALL_DIRECTIVES = (
    TOOL_RE,
    BLOCK_RE,
    THINK_RE,
    STALL_RE,
    WAIT_RE,
    THEN_STALL_RE,
    FAIL_RE,
    FAIL_MID_RE,
    MARKDOWN_RE,
    LONG_RE,
)
SLOW_RE = re.compile(r"\bslow\b")
FAIL_MID_TOKENS = 3

ERROR_TYPES = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "forbidden"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
}


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class Settings:
    model_id: str = field(default_factory=lambda: os.environ.get("FAKE_MODEL_ID", DEFAULT_MODEL_ID))
    delay: float = field(default_factory=lambda: _env_float("FAKE_MODEL_DELAY", 0.03))
    slow_delay: float = field(default_factory=lambda: _env_float("FAKE_MODEL_SLOW_DELAY", 0.3))
    log_path: str | None = field(default_factory=lambda: os.environ.get("FAKE_MODEL_LOG") or None)
    embed_dim: int = field(
        default_factory=lambda: int(os.environ.get("FAKE_MODEL_EMBED_DIM", "1536"))
    )
    fail_retry: bool = field(default_factory=lambda: os.environ.get("FAKE_MODEL_FAIL_RETRY") == "1")
    verbose: bool = field(default_factory=lambda: bool(os.environ.get("FAKE_MODEL_VERBOSE")))

    def __post_init__(self):
        if self.model_id.lower().startswith(FORBIDDEN_PREFIXES):
            raise ValueError(
                f"model id {self.model_id!r} starts with one of {FORBIDDEN_PREFIXES}: Letta "
                "would call the OpenAI Responses API for it, which this fake does not implement"
            )


# --------------------------------------------------------------------------- request analysis


def _text_of(content) -> str:
    """OpenAI message content may be a string or a list of parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return str(content)


def _unwrap_user_text(text: str) -> str:
    """Older Letta agent types pack user input as JSON {"type": "user_message", "message": ...}."""
    try:
        obj = json.loads(text)
    except (ValueError, TypeError):
        return text
    if isinstance(obj, dict) and "message" in obj:
        return str(obj["message"])
    return text


def _tool_names(body: dict) -> list[str]:
    return [
        (t.get("function") or {}).get("name")
        for t in body.get("tools") or []
        if (t.get("function") or {}).get("name")
    ]


def _must_call_tool(body: dict) -> bool:
    tc = body.get("tool_choice")
    return tc == "required" or isinstance(tc, dict)


def _send_message_args(body: dict, text: str) -> dict:
    """Legacy memgpt agents put inner thoughts in a kwarg that must come first."""
    for t in body.get("tools") or []:
        fn = t.get("function") or {}
        if fn.get("name") == "send_message":
            props = (fn.get("parameters") or {}).get("properties") or {}
            if "thinking" in props:
                return {"thinking": "Replying deterministically.", "message": text}
    return {"message": text}


def last_user_text(body: dict) -> str:
    for m in reversed(body.get("messages") or []):
        if m.get("role") == "user":
            return _unwrap_user_text(_text_of(m.get("content")))
    return ""


def strip_directives(text: str) -> str:
    for rx in ALL_DIRECTIVES:
        text = rx.sub(" ", text)
    return " ".join(text.split())


def tokens(text: str) -> list[str]:
    """Split into tokens of (leading whitespace + word); ''.join(tokens(t)) == t."""
    return re.findall(r"\s*\S+|\s+", text)


def _long_text(n: int) -> str:
    return " ".join(LOREM[i % len(LOREM)] for i in range(n))


@dataclass
class Plan:
    """What to answer to one chat completion request."""

    kind: str = "text"  # "text" | "tool" | "fail"
    text: str = ""
    tool_name: str = ""
    tool_args: dict = field(default_factory=dict)
    reasoning: str = ""
    stall: float = 0.0
    wait: float = 0.0
    fail_status: int = 0
    fail_mid: bool = False
    slow: bool = False


def plan_reply(body: dict) -> Plan:
    messages = body.get("messages") or []
    tools = _tool_names(body)
    last = messages[-1] if messages else {}
    user = last_user_text(body)
    plan = Plan()

    if last.get("role") == "tool":
        name = "?"
        for m in reversed(messages):
            for tc in m.get("tool_calls") or []:
                if tc.get("id") == last.get("tool_call_id"):
                    name = (tc.get("function") or {}).get("name", "?")
        plan.text = f"Tool {name} returned: {_text_of(last.get('content'))[:80]}"
        if then := THEN_STALL_RE.search(user):
            plan.stall = float(then.group(1))
    else:
        f = FAIL_RE.search(user)
        if f:
            return Plan(kind="fail", fail_status=int(f.group(1)))
        t = THINK_RE.search(user)
        if t:
            plan.reasoning = " ".join(t.group(1).split())
        s = STALL_RE.search(user)
        if s:
            plan.stall = float(s.group(1))
        w = WAIT_RE.search(user)
        if w:
            plan.wait = float(w.group(1))
        plan.fail_mid = bool(FAIL_MID_RE.search(user))
        clean = strip_directives(user)
        plan.slow = bool(SLOW_RE.search(clean))

        tool = TOOL_RE.search(user)
        if tool and tool.group(1) in tools:  # only if the agent actually offers that tool
            try:
                args = json.loads(tool.group(2)) if tool.group(2) else {}
            except ValueError:
                args = {"raw": tool.group(2)}
            plan.kind, plan.tool_name, plan.tool_args = "tool", tool.group(1), args
            return plan

        block = BLOCK_RE.search(user)
        long_ = LONG_RE.search(user)
        if block:
            system = ""
            if messages and messages[0].get("role") in ("system", "developer"):
                system = _text_of(messages[0].get("content"))
            label = re.escape(block.group(1))
            v = re.search(rf"<{label}>.*?<value>\n?(.*?)\n?</value>", system, re.S)
            plan.text = f"{block.group(1)}=" + (v.group(1).strip() if v else "<not found>")
        elif MARKDOWN_RE.search(user):
            plan.text = MARKDOWN_SAMPLE
        elif long_:
            plan.text = _long_text(int(long_.group(1)))
        else:
            plan.text = "Echo: " + (clean or "(empty)")
        if plan.slow:
            words = plan.text.split(" ")
            i = 0
            while len(words) < 40:
                words.append(f"w{i}")
                i += 1
            plan.text = " ".join(words)

    if _must_call_tool(body) and "send_message" in tools:
        plan.kind, plan.tool_name, plan.tool_args = (
            "tool",
            "send_message",
            _send_message_args(body, plan.text),
        )
    return plan


def _embedding(text: str, dim: int) -> list[float]:
    h = hashlib.sha256(text.encode()).digest()
    vals = [((h[i % len(h)] + i * 31) % 251) / 251.0 - 0.5 for i in range(dim)]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return [v / norm for v in vals]


# --------------------------------------------------------------------------- HTTP


class FakeModelServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, settings: Settings | None = None):
        self.settings = settings or Settings()
        self._log_lock = threading.Lock()
        super().__init__(address, Handler)

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def log_request_body(self, obj: dict) -> None:
        if not self.settings.log_path:
            return
        with self._log_lock, open(self.settings.log_path, "a") as f:
            f.write(json.dumps(obj) + "\n")


class _Dropped(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "lettachat-fake-model/1.0"
    server: FakeModelServer

    def log_message(self, fmt, *args):
        if self.server.settings.verbose:
            sys.stderr.write("fake_model: " + fmt % args + "\n")

    # ---- helpers
    def _start(self, code: int, headers: dict[str, str]):
        self.send_response(code)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Connection", "close")
        self.close_connection = True
        self.end_headers()

    def _json(self, code: int, obj, extra_headers: dict[str, str] | None = None):
        data = json.dumps(obj).encode()
        self._start(
            code,
            {
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
                **(extra_headers or {}),
            },
        )
        self.wfile.write(data)

    def _chunk(self, data: bytes):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _sse(self, obj):
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self._chunk(f"data: {payload}\n\n".encode())

    def _drop(self):
        """End the response abruptly: FIN in the middle of the chunked body, no [DONE]."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.close_connection = True
        raise _Dropped()

    def _body(self) -> dict:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return body if isinstance(body, dict) else {}

    # ---- routes
    def do_GET(self):
        s = self.server.settings
        path = self.path.split("?")[0].rstrip("/")
        if path in ("/v1/models", "/models"):
            return self._json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": s.model_id,
                            "object": "model",
                            "created": 0,
                            "owned_by": "lettachat",
                            "context_length": 32000,
                        }
                    ],
                },
            )
        if path.startswith("/v1/models/"):
            return self._json(
                200,
                {
                    "id": path.rsplit("/", 1)[-1],
                    "object": "model",
                    "created": 0,
                    "owned_by": "lettachat",
                },
            )
        if path in ("/health", "/v1/health", ""):
            return self._json(200, {"ok": True, "model": s.model_id})
        return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self):
        path = self.path.split("?")[0].rstrip("/")
        body = self._body()
        self.server.log_request_body({"t": time.time(), "path": path, "body": body})
        try:
            if path in ("/v1/embeddings", "/embeddings"):
                return self._embeddings(body)
            if path in ("/v1/chat/completions", "/chat/completions"):
                return self._chat(body)
            return self._json(
                404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
            )
        except _Dropped:
            return None
        except (BrokenPipeError, ConnectionResetError):
            return None  # client went away (e.g. run cancelled)

    def _embeddings(self, body):
        inp = body.get("input")
        inputs = inp if isinstance(inp, list) else [inp]
        dim = int(body.get("dimensions") or self.server.settings.embed_dim)
        data = [
            {"object": "embedding", "index": i, "embedding": _embedding(str(x), dim)}
            for i, x in enumerate(inputs)
        ]
        ntok = sum(len(str(x).split()) for x in inputs)
        return self._json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model", "fake-embed"),
                "usage": {"prompt_tokens": ntok, "total_tokens": ntok},
            },
        )

    def _chat(self, body):
        s = self.server.settings
        plan = plan_reply(body)
        if plan.wait and (body.get("messages") or [{}])[-1].get("role") != "tool":
            time.sleep(plan.wait)  # the model says nothing at all for a while
        if plan.kind == "fail":
            etype, code = ERROR_TYPES.get(
                plan.fail_status,
                (
                    "server_error" if plan.fail_status >= 500 else "invalid_request_error",
                    "scripted_failure",
                ),
            )
            headers = {} if s.fail_retry else {"x-should-retry": "false"}
            return self._json(
                plan.fail_status,
                {
                    "error": {
                        "message": f"Scripted failure (HTTP {plan.fail_status})",
                        "type": etype,
                        "param": None,
                        "code": code,
                    }
                },
                headers,
            )

        cid = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = body.get("model") or s.model_id
        delay = (
            s.slow_delay
            if plan.slow and (body.get("messages") or [{}])[-1].get("role") != "tool"
            else s.delay
        )
        prompt_tokens = sum(
            len(_text_of(m.get("content")).split()) for m in body.get("messages") or []
        )

        if plan.kind == "text":
            message = {"role": "assistant", "content": plan.text}
            finish = "stop"
            completion_tokens = len(plan.text.split())
        else:
            call = {
                "id": "call_" + uuid.uuid4().hex[:20],
                "type": "function",
                "function": {"name": plan.tool_name, "arguments": json.dumps(plan.tool_args)},
            }
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            finish = "tool_calls"
            completion_tokens = len(call["function"]["arguments"].split())
        if plan.reasoning:
            message["reasoning_content"] = plan.reasoning
        completion_tokens += len(plan.reasoning.split())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

        if not body.get("stream"):
            time.sleep(plan.stall)
            data = json.dumps(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
                    ],
                    "usage": usage,
                }
            ).encode()
            self._start(200, {"Content-Type": "application/json", "Content-Length": str(len(data))})
            if plan.fail_mid:
                self.wfile.write(data[: len(data) // 2])
                self._drop()
            self.wfile.write(data)
            return None

        self._start(
            200,
            {
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "Transfer-Encoding": "chunked",
            },
        )

        def chunk(delta, finish_reason=None):
            return {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
                ],
            }

        self._sse(chunk({"role": "assistant", "content": ""}))
        for tok in tokens(plan.reasoning):
            time.sleep(delay)
            self._sse(chunk({"reasoning_content": tok}))
        sent = 0
        if plan.kind == "text":
            toks = tokens(message["content"])
            for i, tok in enumerate(toks):
                if plan.fail_mid and sent >= min(FAIL_MID_TOKENS, max(1, len(toks) - 1)):
                    self._drop()
                time.sleep(delay)
                self._sse(chunk({"content": tok}))
                sent += 1
                if i == 0 and plan.stall:
                    time.sleep(plan.stall)
        else:
            call = message["tool_calls"][0]
            self._sse(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for i, tok in enumerate(tokens(call["function"]["arguments"])):
                if plan.fail_mid and sent >= FAIL_MID_TOKENS:
                    self._drop()
                time.sleep(delay)
                self._sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": tok}}]}))
                sent += 1
                if i == 0 and plan.stall:
                    time.sleep(plan.stall)
        if plan.fail_mid:
            self._drop()
        self._sse(chunk({}, finish))
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse(
                {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
            )
        self._sse("[DONE]")
        self._chunk(b"")  # end of chunked body


def make_server(
    host: str = "127.0.0.1", port: int = 0, settings: Settings | None = None, **overrides
) -> FakeModelServer:
    """Bind a server (port 0 = any free port); ``overrides`` are ``Settings`` fields."""
    if settings is None:
        settings = Settings(**overrides)
    return FakeModelServer((host, port), settings)


def serve_in_thread(server: FakeModelServer) -> threading.Thread:
    """Serve in a daemon thread; stop with ``server.shutdown(); server.server_close()``."""
    t = threading.Thread(target=server.serve_forever, name="fake-model", daemon=True)
    t.start()
    return t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description="Scripted OpenAI-compatible model server for the local Letta harness"
    )
    ap.add_argument("--host", default=os.environ.get("FAKE_MODEL_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("FAKE_MODEL_PORT", "8399")))
    a = ap.parse_args(argv)
    srv = make_server(a.host, a.port)
    print(
        f"fake model listening on {srv.base_url} model={srv.settings.model_id} "
        f"delay={srv.settings.delay} slow_delay={srv.settings.slow_delay}",
        flush=True,
    )
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()


if __name__ == "__main__":
    main()
