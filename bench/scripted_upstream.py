"""A scripted Letta server for the benchmarks: streams replies at a fixed token rate.

    uv run python bench/scripted_upstream.py [--port 8390] [--tokens 30] [--rate 20]
                                             [--first-token 0.3]

It answers what lettachat's relay (and the letta-client SDK) call during a reply, in Letta
0.16.8's wire format (checked against a stream captured from the real server):

- ``POST /v1/conversations/{id}/messages``: a background run's SSE stream: a ``ping`` carrying
  ``run_id`` and ``seq_id`` 1 at once, the first ``assistant_message`` token ``--first-token``
  seconds after the request, then one token every ``1/--rate`` seconds (on a fixed schedule, so
  a late write does not shift the ones after it), then ``stop_reason``, ``usage_statistics`` and
  ``[DONE]``. Every token's text is ``t=<unix time of the write> ``: a client on the same machine
  reads the send time back out of what it receives. A message may set its own plan with
  ``[[bench tokens=N rate=R first=S]]``.
- ``GET /v1/conversations/{id}/messages`` (the relay's re-read after a reply): what was said.
- ``GET /v1/runs/{id}`` (the relay asks whose a run is, and where it is, as Letta answers).
- ``POST /v1/conversations/`` (create), ``POST /v1/conversations/{id}/cancel``,
  ``GET /v1/health/``, ``GET /v1/agents/``.

An asyncio server speaking just enough HTTP/1.1 (keep-alive, chunked responses), so that it
costs little CPU next to what it measures. Stdlib only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

AGENT_ID = "agent-00000000-0000-4000-8000-00000000bench"
PLAN_RE = re.compile(r"\[\[bench([^\]]*)\]\]")
CONVERSATION_MESSAGES = re.compile(r"^/v1/conversations/([^/]+)/messages/?$")
CONVERSATION_CANCEL = re.compile(r"^/v1/conversations/([^/]+)/cancel/?$")
RUN = re.compile(r"^/v1/runs/([^/]+)/?$")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Plan:
    tokens: int
    rate: float
    first: float


@dataclass
class Conversation:
    letta_id: str
    messages: list[dict] = field(default_factory=list)
    active_run: str = ""
    cancelled: bool = False


class ScriptedLetta:
    def __init__(self, default: Plan) -> None:
        self.default = default
        self.conversations: dict[str, Conversation] = {}
        self.runs: dict[str, dict] = {}  # Letta's run objects, as GET /v1/runs/{id} gives them
        self.streams = 0  # replies streamed, for the log line at exit
        self.tokens = 0

    def conversation(self, letta_id: str) -> Conversation:
        found = self.conversations.get(letta_id)
        if found is None:
            found = self.conversations[letta_id] = Conversation(letta_id)
        return found

    def plan(self, text: str) -> Plan:
        plan = Plan(self.default.tokens, self.default.rate, self.default.first)
        found = PLAN_RE.search(text)
        if found:
            for key, _, value in (p.partition("=") for p in found.group(1).split()):
                if key == "tokens":
                    plan.tokens = int(value)
                elif key == "rate":
                    plan.rate = float(value)
                elif key == "first":
                    plan.first = float(value)
        return plan

    # HTTP ----------------------------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while True:
                    raw = await reader.readline()
                    if raw in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = raw.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                body = await reader.readexactly(length) if length else b""
                await self.dispatch(method, target, body, writer)
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            writer.close()

    @staticmethod
    async def respond(writer: asyncio.StreamWriter, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 409: "Conflict"}[status]
        writer.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def dispatch(
        self, method: str, target: str, body: bytes, writer: asyncio.StreamWriter
    ) -> None:
        url = urlsplit(target)
        path, query = url.path, parse_qs(url.query)
        if method == "GET" and path.rstrip("/") == "/v1/health":
            return await self.respond(writer, 200, {"version": "0.16.8", "status": "ok"})
        if method == "GET" and path.rstrip("/") == "/v1/agents":
            return await self.respond(writer, 200, [self.agent()])
        if path.rstrip("/") == "/v1/conversations":
            if method == "POST":
                letta_id = f"conv-{uuid.uuid4()}"
                self.conversation(letta_id)
                return await self.respond(writer, 200, self.conversation_json(letta_id))
            return await self.respond(writer, 200, [])
        if found := CONVERSATION_MESSAGES.match(path):
            conversation = self.conversation(found.group(1))
            if method == "POST":
                return await self.stream(conversation, json.loads(body or b"{}"), writer)
            return await self.respond(writer, 200, self.listed(conversation, query))
        if method == "GET" and (found := RUN.match(path)):
            run = self.runs.get(found.group(1))
            if run is None:
                return await self.respond(writer, 404, {"detail": "Run not found"})
            return await self.respond(writer, 200, run)
        if method == "POST" and (found := CONVERSATION_CANCEL.match(path)):
            conversation = self.conversation(found.group(1))
            if not conversation.active_run:
                return await self.respond(writer, 409, {"detail": "No active runs to cancel"})
            conversation.cancelled = True
            return await self.respond(writer, 200, {})
        return await self.respond(writer, 404, {"detail": f"not scripted: {method} {path}"})

    # Letta's objects -----------------------------------------------------------------------------

    @staticmethod
    def agent() -> dict:
        return {
            "id": AGENT_ID,
            "name": "bench agent",
            "description": "the benchmarks' scripted upstream",
            "model": "scripted/bench",
            "blocks": [],
        }

    @staticmethod
    def conversation_json(letta_id: str) -> dict:
        now = datetime.now(UTC).isoformat()
        return {
            "id": letta_id,
            "agent_id": AGENT_ID,
            "summary": None,
            "created_at": now,
            "updated_at": now,
            "last_message_at": None,
            "in_context_message_ids": [],
            "isolated_block_ids": [],
            "model": None,
            "model_settings": None,
        }

    @staticmethod
    def listed(conversation: Conversation, query: dict[str, list[str]]) -> list[dict]:
        messages = conversation.messages
        after = (query.get("after") or [""])[0]
        if after:
            ids = [m["id"] for m in messages]
            messages = messages[ids.index(after) + 1 :] if after in ids else []
        limit = int((query.get("limit") or ["100"])[0])
        return messages[:limit]

    async def stream(self, conversation: Conversation, body: dict, writer: asyncio.StreamWriter):
        sent = (body.get("messages") or [{}])[0]
        text = sent.get("content") if isinstance(sent.get("content"), str) else ""
        plan = self.plan(text)
        run_id = f"run-{uuid.uuid4()}"
        if conversation.active_run:
            return await self.respond(
                writer, 409, {"detail": f"Conversation is busy: run_id={conversation.active_run}"}
            )
        conversation.active_run, conversation.cancelled = run_id, False
        run = self.runs[run_id] = {
            "id": run_id, "agent_id": AGENT_ID, "conversation_id": conversation.letta_id,
            "status": "running", "stop_reason": None, "background": True,
        }  # fmt: skip
        requested = time.monotonic()
        message_id = f"message-{uuid.uuid4()}"
        conversation.messages.append(
            self.message(f"message-{uuid.uuid4()}", "user_message", text, run_id, sent.get("otid"))
        )
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        seq = 1

        def event(payload: object) -> None:
            data = b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload,
                                separators=(",", ":")).encode()) + b"\n\n"  # fmt: skip
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))

        parts: list[str] = []
        try:
            event(
                {
                    "id": f"ping-{uuid.uuid4()}", "date": _now_iso(), "name": None,
                    "message_type": "ping", "otid": None, "sender_id": None, "step_id": None,
                    "is_err": None, "seq_id": seq, "run_id": run_id,
                }
            )  # fmt: skip
            await writer.drain()
            date = _now_iso()
            step_id = f"step-{uuid.uuid4()}"
            reason = "end_turn"
            for i in range(plan.tokens):
                due = requested + plan.first + i / plan.rate
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if conversation.cancelled:
                    reason = "cancelled"
                    break
                seq += 1
                token = f"t={time.time():.6f} "
                parts.append(token)
                event(
                    {
                        "id": message_id, "date": date, "name": None,
                        "message_type": "assistant_message", "otid": message_id[8:] + "00",
                        "sender_id": None, "step_id": step_id, "is_err": None, "seq_id": seq,
                        "run_id": run_id, "content": token,
                    }
                )  # fmt: skip
                await writer.drain()
            self.tokens += len(parts)
            self.streams += 1
            conversation.messages.append(
                self.message(message_id, "assistant_message", "".join(parts), run_id, None)
            )
            event({"message_type": "stop_reason", "stop_reason": reason})
            event(
                {
                    "message_type": "usage_statistics", "completion_tokens": len(parts),
                    "prompt_tokens": 100, "total_tokens": 100 + len(parts), "step_count": 1,
                    "run_ids": None, "cached_input_tokens": None, "cache_write_tokens": None,
                    "reasoning_tokens": None, "context_tokens": 100 + len(parts),
                }
            )  # fmt: skip
            event(b"[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            run["status"] = "cancelled" if reason == "cancelled" else "completed"
            run["stop_reason"] = reason
        finally:
            conversation.active_run = ""
            if run["status"] == "running":
                run["status"], run["stop_reason"] = "failed", "error"  # the stream broke

    @staticmethod
    def message(letta_id: str, kind: str, content: str, run_id: str, otid: str | None) -> dict:
        return {
            "id": letta_id, "date": _now_iso(), "name": None, "message_type": kind,
            "otid": otid, "sender_id": None, "step_id": None, "is_err": None, "seq_id": None,
            "run_id": run_id, "content": content,
        }  # fmt: skip


async def serve(host: str, port: int, default: Plan) -> None:
    letta = ScriptedLetta(default)
    server = await asyncio.start_server(letta.handle, host, port, backlog=4096)
    print(f"scripted upstream on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8390)
    parser.add_argument("--tokens", type=int, default=30, help="tokens per reply")
    parser.add_argument("--rate", type=float, default=20.0, help="tokens per second per reply")
    parser.add_argument(
        "--first-token", type=float, default=0.3, help="seconds from the request to the first token"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, Plan(args.tokens, args.rate, args.first_token)))


if __name__ == "__main__":
    main()
