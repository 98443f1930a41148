"""The real gateway: the one place lettachat talks to Letta.

Only this module imports ``letta_client`` (ruff's banned-api rule enforces it). Everything it hands
back is one of the frozen dataclasses of ``letta_gateway.types``, and everything that goes wrong is
a ``LettaError`` (``letta_gateway.errors``).

Sends are never retried: a retried ``messages.create`` is a second agent turn. Reads may be.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import pkgutil
import re
import weakref
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import letta_client
from django.conf import settings
from letta_client import AsyncLetta, Letta

from letta_gateway.errors import (
    LettaApprovalPending,
    LettaBusy,
    LettaError,
    LettaNotFound,
    LettaUnavailable,
)
from letta_gateway.types import (
    AgentConfig,
    AgentInfo,
    ApprovalAnswer,
    ApprovalPending,
    ApprovalRequest,
    CompactionInfo,
    ContentDelta,
    ConversationDetails,
    ConversationInfo,
    MemoryBlockInfo,
    MessageInfo,
    MessageKind,
    Ping,
    RunStarted,
    RunState,
    Stopped,
    StreamError,
    StreamEvent,
    ToolCallDelta,
    ToolCallRequest,
    ToolInfo,
    ToolReturn,
    Usage,
)

logger = logging.getLogger(__name__)

READ_RETRIES = 2


def _import_client_resources() -> None:
    """Import every resource module of letta-client now, while this module is imported.

    The SDK imports them lazily, on a client's first use of ``.conversations``, ``.agents``…
    Two threads doing that at once (a view in its thread, the websocket side on the event loop)
    import the same modules at the same time, and Python's import lock may refuse one of them
    (``_DeadlockError``: seen as a 500 on renaming a thread in a just-started server).
    """
    resources = letta_client.resources
    for found in pkgutil.walk_packages(resources.__path__, f"{resources.__name__}."):
        importlib.import_module(found.name)


_import_client_resources()


APPROVAL_PENDING = "The agent is waiting for an answer to a tool call's approval request."


def _waits_for_approval(text: str) -> bool:
    """Letta's refusal of a message while a tool call waits for approval (0.16.8: a 409
    ``PENDING_APPROVAL``, or inside a background run's stream an error saying so)."""
    return "PENDING_APPROVAL" in text or "waiting for approval" in text


def _error_from(exc: Exception) -> LettaError:
    if isinstance(exc, letta_client.APITimeoutError | httpx.TimeoutException):
        return LettaUnavailable("The Letta server did not answer in time.")
    if isinstance(exc, letta_client.APIConnectionError | httpx.TransportError):
        cause = exc.__cause__ if isinstance(exc, letta_client.APIConnectionError) else exc
        refused = isinstance(cause, httpx.ConnectError)  # the request never left
        return LettaUnavailable("The Letta server cannot be reached.", reached=not refused)
    if isinstance(exc, letta_client.APIStatusError):
        status = exc.status_code
        if status == 409 and _waits_for_approval(str(getattr(exc, "body", "") or exc)):
            return LettaApprovalPending(APPROVAL_PENDING, status=status)
        if status == 409:
            found = re.search(r"run_id=(run-[0-9a-fA-F-]+)", str(getattr(exc, "body", "") or exc))
            return LettaBusy(
                "The agent is still answering in this conversation.",
                status=status,
                run_id=found.group(1) if found else "",
            )
        if status == 404:
            return LettaNotFound("Letta does not know this item.", status=status)
        if status in (401, 403):
            return LettaError("Letta refused the request: check LETTA_API_KEY.", status=status)
        if status >= 500:
            return LettaError(f"The Letta server failed ({status}).", status=status)
        return LettaError(f"Letta rejected the request ({status}).", status=status)
    return LettaError(f"Unexpected answer from Letta: {type(exc).__name__}.")


@contextmanager
def _translated_errors() -> Iterator[None]:
    try:
        yield
    except (letta_client.LettaError, httpx.HTTPError) as exc:
        raise _error_from(exc) from exc


def _after(cursor: str | None) -> dict[str, Any]:
    """The ``after`` cursor of a list call, left out when there is none."""
    return {"after": cursor} if cursor else {}


def _text_of(content: Any) -> str:
    """Letta message content is a string or a list of typed parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        text = getattr(part, "text", None)
        if text is None and isinstance(part, dict):
            text = part.get("text")
        if text:
            parts.append(text)
    return "".join(parts)


_STORED_TYPES: dict[str, MessageKind] = {
    "user_message": "user",
    "assistant_message": "assistant",
    "reasoning_message": "reasoning",
    "hidden_reasoning_message": "reasoning",
    "tool_call_message": "tool_call",
    "tool_return_message": "tool_return",
    "system_message": "system",
    "approval_request_message": "approval",
}


def _tool_calls_of(m: Any) -> list[Any]:
    """An approval request's tool calls: ``tool_calls`` (a list, or one delta while streaming),
    else the single ``tool_call``."""
    calls = getattr(m, "tool_calls", None)
    if isinstance(calls, list) and calls:
        return calls
    if calls is not None and not isinstance(calls, list):
        return [calls]
    call = getattr(m, "tool_call", None)
    return [call] if call is not None else []


def _message_info(m: Any) -> MessageInfo | None:
    kind = _STORED_TYPES.get(m.message_type or "")
    if kind is None:
        return None
    name = ""
    if kind == "reasoning":
        content = getattr(m, "reasoning", None) or getattr(m, "hidden_reasoning", None) or ""
    elif kind == "tool_call":
        call = m.tool_call
        content, name = call.arguments or "", call.name or ""
    elif kind == "tool_return":
        content, name = m.tool_return or "", m.status or ""
    elif kind == "approval":
        calls = tuple(
            ToolCallRequest(c.tool_call_id or "", c.name or "", c.arguments or "")
            for c in _tool_calls_of(m)
        )
        content, name = (calls[0].arguments, calls[0].name) if calls else ("", "")
    else:
        content = _text_of(m.content)
    return MessageInfo(
        letta_id=m.id,
        message_type=kind,
        content=content,
        created_at=m.date,
        name=name,
        otid=m.otid or "",
        run_id=m.run_id or "",
        tool_calls=calls if kind == "approval" else (),
    )


def _stream_events(ev: Any) -> list[StreamEvent]:
    """Our events for one SSE event: an approval request names one or more tool calls."""
    if getattr(ev, "message_type", None) == "approval_request_message":
        run_id = getattr(ev, "run_id", None) or ""
        return [
            ApprovalRequest(
                ev.id,
                c.tool_call_id or "",
                c.name or "",
                c.arguments or "",
                run_id,
                getattr(ev, "seq_id", None),
            )
            for c in _tool_calls_of(ev)
        ]
    event = _stream_event(ev)
    return [event] if event is not None else []


def _stream_event(ev: Any) -> StreamEvent | None:
    """Translate one SSE event of ``messages.create``/``messages.stream`` into ours."""
    kind = getattr(ev, "message_type", None)
    run_id = getattr(ev, "run_id", None) or ""
    seq_id = getattr(ev, "seq_id", None)
    if kind == "ping":
        return RunStarted(run_id, seq_id) if run_id else Ping(seq_id)
    if kind == "assistant_message":
        return ContentDelta(ev.id, "assistant", _text_of(ev.content), run_id, seq_id)
    if kind == "reasoning_message":
        return ContentDelta(ev.id, "reasoning", ev.reasoning or "", run_id, seq_id)
    if kind == "tool_call_message":
        call = ev.tool_call
        return ToolCallDelta(
            ev.id, call.tool_call_id or "", call.name or "", call.arguments or "", run_id, seq_id
        )
    if kind == "tool_return_message":
        return ToolReturn(ev.id, ev.tool_call_id, ev.status, ev.tool_return or "", run_id, seq_id)
    if kind == "error_message":
        if _waits_for_approval(f"{ev.message} {ev.detail or ''}"):
            return ApprovalPending(run_id)
        return StreamError(ev.error_type, ev.message, ev.detail or "", run_id)
    if kind == "stop_reason":
        return Stopped(str(ev.stop_reason))
    if kind == "usage_statistics":
        return Usage(
            ev.prompt_tokens,
            ev.completion_tokens,
            ev.total_tokens,
            ev.context_tokens,
            ev.step_count,
        )
    return None


_TOKEN_KINDS = frozenset({"assistant_message", "reasoning_message", "ping"})


def _token_event(data: dict[str, Any]) -> StreamEvent | None:
    """The events of a reply that come many times a second (a token, a ping) read straight from
    their JSON, by the same translation as the SDK's models (``_stream_event``); None for every
    other kind, and for a shape we do not know: those go through the SDK's model. Building the
    SDK's pydantic model took 27 µs an event against 3.4 µs for the JSON (bench/RESULTS.md)."""
    kind = data.get("message_type")
    if kind not in _TOKEN_KINDS:
        return None
    known = isinstance(data.get("run_id"), str | None) and isinstance(
        data.get("seq_id"), int | None
    )
    if kind != "ping":
        known = known and isinstance(data.get("id"), str)
        known = known and isinstance(data.get("content"), str | list | None)
        known = known and isinstance(data.get("reasoning"), str | None)
    if not known:
        return None
    return _stream_event(SimpleNamespace(**{"content": None, "reasoning": None, **data}))


async def _sse_events(stream: Any) -> AsyncIterator[StreamEvent]:
    """Our events of an SDK stream, read from its server-sent events.

    What the SDK's own iteration does (``letta_client._streaming.AsyncStream.__stream__``), except
    that tokens and pings skip its model (``_token_event``). An ``event: error`` raises the SDK's
    status error, as the SDK would.
    """
    process = stream._client._process_response_data
    async for sse in stream._iter_events():
        if sse.data.startswith("[DONE]"):
            return
        if sse.event == "error":
            try:
                body: object = sse.json()
                message = f"{body}"
            except ValueError:
                body = sse.data
                message = sse.data or f"Error code: {stream.response.status_code}"
            raise stream._client._make_status_error(message, body=body, response=stream.response)
        if sse.event is not None:
            continue
        data = sse.json()
        event = _token_event(data) if isinstance(data, dict) else None
        if event is not None:
            yield event
            continue
        raw = process(data=data, cast_to=stream._cast_to, response=stream.response)
        for event in _stream_events(raw):
            yield event


def _in_stream_error(body: object) -> StreamError | ApprovalPending:
    data = body if isinstance(body, dict) else {}
    if isinstance(data.get("error"), dict):
        data = data["error"]
    message = str(data.get("message") or data.get("detail") or "The agent's run failed.")
    if _waits_for_approval(f"{message} {data.get('detail') or ''}"):
        return ApprovalPending(str(data.get("run_id") or ""))
    return StreamError(
        error_type=str(data.get("error_type") or data.get("type") or "error"),
        message=message,
        detail=str(data.get("detail") or ""),
        run_id=str(data.get("run_id") or ""),
    )


class LettaGateway:
    """letta-client behind our own types. One instance per process (see ``get_gateway``)."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.base_url = base_url or settings.LETTA_BASE_URL
        # No key means no Authorization header (a local server). The SDK would otherwise fall back
        # to the LETTA_API_KEY variable, and an empty one makes an illegal "Bearer " header.
        self.api_key = api_key if api_key is not None else settings.LETTA_API_KEY
        seconds = timeout if timeout is not None else settings.LETTA_TIMEOUT
        self.timeout = httpx.Timeout(seconds, connect=min(5.0, seconds))
        self._client = self._build(Letta, retries=READ_RETRIES)
        self._send_client = self._build(Letta, retries=0)
        # httpx's async pool belongs to one event loop: keep the async clients per loop.
        self._async_clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[AsyncLetta, AsyncLetta]
        ] = weakref.WeakKeyDictionary()

    def _build(self, cls: type[Any], *, retries: int) -> Any:
        # Every connection kept alive as well: closing those over the SDK's 20 meant a new TCP
        # connection for most replies once more than 20 were in flight.
        most = settings.LETTA_MAX_CONNECTIONS
        limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
        http = (
            letta_client.DefaultAsyncHttpxClient
            if cls is AsyncLetta
            else letta_client.DefaultHttpxClient
        )
        client = cls(
            base_url=self.base_url,
            api_key=self.api_key or None,
            timeout=self.timeout,
            max_retries=retries,
            http_client=http(limits=limits, timeout=self.timeout),
        )
        client.api_key = self.api_key or None  # not the environment's, even when empty
        return client

    def _aclients(self) -> tuple[AsyncLetta, AsyncLetta]:
        """(reads, sends) for the running event loop; sends are never retried."""
        loop = asyncio.get_running_loop()
        clients = self._async_clients.get(loop)
        if clients is None:
            clients = (
                self._build(AsyncLetta, retries=READ_RETRIES),
                self._build(AsyncLetta, retries=0),
            )
            self._async_clients[loop] = clients
        return clients

    # Reads and idempotent calls -------------------------------------------------------------------

    def health(self) -> str:
        """The server's version; raises ``LettaUnavailable`` when it is down."""
        with _translated_errors():
            return str(self._client.health().version)

    async def ahealth(self, *, timeout: float) -> str:
        """The server's version, asked once (no retry) with its own ``timeout`` (a probe's)."""
        with _translated_errors():
            return str((await self._aclients()[1].health(timeout=timeout)).version)

    def list_agents(self) -> list[AgentInfo]:
        agents: list[AgentInfo] = []
        after: str | None = None
        with _translated_errors():
            while True:
                page = self._client.agents.list(
                    limit=100,
                    order="asc",
                    include=["agent.blocks", "agent.tags"],
                    **_after(after),
                )
                batch = list(page.items if hasattr(page, "items") else page)
                agents.extend(self._agent_info(a) for a in batch)
                if len(batch) < 100:
                    return agents
                after = batch[-1].id

    @classmethod
    def _agent_info(cls, agent: Any) -> AgentInfo:
        return AgentInfo(
            letta_id=agent.id,
            name=agent.name or agent.id,
            description=agent.description or "",
            model=agent.model or "",
            blocks=tuple(cls._block_info(b) for b in (getattr(agent, "blocks", None) or [])),
            tags=tuple(getattr(agent, "tags", None) or ()),
            context_window=getattr(getattr(agent, "llm_config", None), "context_window", None),
        )

    def retrieve_agent(self, *, agent_id: str) -> AgentInfo:
        """One agent, its context window among the rest (its blocks and tags are not read)."""
        with _translated_errors():
            agent = self._client.agents.retrieve(agent_id)
        return self._agent_info(agent)

    def list_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]:
        """Messages oldest first, after message ``after`` (a cursor, never an offset)."""
        with _translated_errors():
            page = self._client.conversations.messages.list(
                conversation_id, order="asc", limit=limit, **_after(after)
            )
            return [info for m in page.items if (info := _message_info(m)) is not None]

    async def alist_messages(
        self, *, conversation_id: str, after: str | None = None, limit: int = 100
    ) -> list[MessageInfo]:
        with _translated_errors():
            page = await self._aclients()[0].conversations.messages.list(
                conversation_id, order="asc", limit=limit, **_after(after)
            )
            return [info for m in page.items if (info := _message_info(m)) is not None]

    # Writes: never retried -----------------------------------------------------------------------

    def create_agent(
        self, *, name: str, model: str, description: str, blocks: dict[str, str]
    ) -> AgentInfo:
        with _translated_errors():
            agent = self._send_client.agents.create(
                name=name,
                model=model,
                description=description,
                memory_blocks=[{"label": label, "value": value} for label, value in blocks.items()],
            )
        return self._agent_info(agent)

    def create_conversation(self, *, agent_id: str) -> ConversationInfo:
        with _translated_errors():
            conv = self._send_client.conversations.create(agent_id=agent_id)
        return ConversationInfo(
            letta_id=conv.id,
            agent_id=conv.agent_id,
            summary=conv.summary or "",
            created_at=conv.created_at,
            last_message_at=conv.last_message_at,
        )

    async def astream_reply(
        self, *, conversation_id: str, text: str, otid: str
    ) -> AsyncIterator[StreamEvent]:
        """Send one user message and yield the reply as it streams, token by token.

        The reply runs in the background on Letta, so it goes on if this stream breaks; resume it
        with ``astream_resume``. Sending the same ``otid`` again re-attaches to the same run.
        """
        message = {"role": "user", "content": text, "otid": otid}
        async for event in self._astream_background(conversation_id, message):
            yield event

    def stream_reply(self, *, conversation_id: str, text: str, otid: str) -> Iterator[StreamEvent]:
        """Send one user message and yield the reply as it streams, token by token, in this thread:
        for commands, which have no event loop. Not a background run: the reply is this stream.
        """
        with _translated_errors():
            stream = self._send_client.conversations.messages.create(
                conversation_id,
                messages=[{"role": "user", "content": text, "otid": otid}],
                streaming=True,
                stream_tokens=True,
                include_pings=True,
            )
            try:
                for raw in stream:
                    yield from _stream_events(raw)
            except letta_client.APIStatusError as exc:
                if exc.status_code >= 400:
                    raise
                yield _in_stream_error(exc.body)  # an `event: error` inside the stream
            finally:
                stream.close()

    async def astream_approval(
        self, *, conversation_id: str, answers: Sequence[ApprovalAnswer], otid: str
    ) -> AsyncIterator[StreamEvent]:
        """Answer the tool calls waiting for approval (all of one request at once, as Letta
        0.16.8 wants), and yield the rest of the reply as it streams, like ``astream_reply``.

        Never retried: Letta takes a second answer as a new turn (a "keep-alive" message).
        """
        approvals: list[Any] = [
            {
                "type": "approval",
                "tool_call_id": a.tool_call_id,
                "approve": a.approve,
                **({"reason": a.reason} if a.reason else {}),
            }
            for a in answers
        ]
        message = {"type": "approval", "approvals": approvals, "otid": otid}
        async for event in self._astream_background(conversation_id, message):
            yield event

    async def _astream_background(
        self, conversation_id: str, message: dict[str, Any]
    ) -> AsyncIterator[StreamEvent]:
        """Send one message as a background run (it goes on if this stream breaks) and yield
        the reply, token by token, with Letta's pings."""
        client = self._aclients()[1]
        with _translated_errors():
            stream = await client.conversations.messages.create(
                conversation_id,
                messages=[message],  # type: ignore[list-item]  # a dict of the SDK's message shapes
                stream_tokens=True,
                background=True,
                include_pings=True,
            )
            async for event in self._events(stream):
                yield event

    async def astream_resume(
        self,
        *,
        conversation_id: str,
        run_id: str = "",
        after_seq: int | None = None,
        otid: str = "",
    ) -> AsyncIterator[StreamEvent]:
        """Follow a background run from after ``after_seq`` (from its start when None).

        The run is ``run_id``, or the one a message with ``otid`` started (``LettaNotFound``: Letta
        never got that message), or else the conversation's active run, if any.
        """
        client = self._aclients()[0]
        options: dict[str, Any] = {"include_pings": True}
        if run_id:
            options["run_id"] = run_id
        elif otid:
            options["otid"] = otid
        if after_seq is not None:
            options["starting_after"] = after_seq
        with _translated_errors():
            stream = await client.conversations.messages.stream(conversation_id, **options)
            async for event in self._events(stream):
                yield event

    async def arun_state(self, *, run_id: str) -> RunState | None:
        """Where Letta says the run is (None: Letta does not know it)."""
        try:
            with _translated_errors():
                run = await self._aclients()[0].runs.retrieve(run_id)
        except LettaNotFound:
            return None
        return RunState(
            run_id=run.id,
            status=str(getattr(run.status, "value", run.status) or ""),
            stop_reason=str(getattr(run.stop_reason, "value", run.stop_reason) or ""),
        )

    async def arun_conversation(self, *, run_id: str) -> str | None:
        """The conversation a run belongs to, as Letta reports it ("" for none)."""
        with _translated_errors():
            run = await self._aclients()[0].runs.retrieve(run_id)
        return str(run.conversation_id or "")

    async def acancel(self, *, conversation_id: str, run_id: str = "", agent_id: str = "") -> bool:
        """Stop run ``run_id`` when given (a no-op once it has ended), else every active run of
        the conversation; False when there was none."""
        try:
            with _translated_errors():
                if run_id and agent_id:
                    await self._aclients()[1].agents.messages.cancel(agent_id, run_ids=[run_id])
                else:
                    await self._aclients()[1].conversations.cancel(conversation_id)
        except LettaBusy:
            return False  # 409: no active run to cancel
        return True

    @staticmethod
    async def _events(stream: Any) -> AsyncIterator[StreamEvent]:
        """Our events of one SSE stream. Letta sends a ping with the run's id first and then every
        20 s: the first says the run started, the others are keep-alives (sent by the stream's
        endpoint, not by the run, so they say nothing about the run being alive)."""
        started = False
        try:
            async for event in _sse_events(stream):
                if isinstance(event, RunStarted):
                    if started:
                        event = Ping(event.seq_id)
                    started = True
                yield event
        except letta_client.APIStatusError as exc:
            if exc.status_code >= 400:
                raise
            # An `event: error` inside a stream that had started fine: the run failed.
            yield _in_stream_error(exc.body)
        finally:
            await stream.close()

    # Conversations: listing, renaming, deleting, forking ------------------------------------------

    @staticmethod
    def _conversation_info(conv: Any) -> ConversationInfo:
        return ConversationInfo(
            letta_id=conv.id,
            agent_id=conv.agent_id,
            summary=conv.summary or "",
            created_at=conv.created_at,
            last_message_at=conv.last_message_at,
        )

    def list_conversations(
        self,
        *,
        agent_id: str,
        after: str | None = None,
        limit: int = 50,
        summary_search: str | None = None,
    ) -> list[ConversationInfo]:
        """One page of an agent's conversations, newest first; ``after`` is a conversation id.

        ``summary_search`` is a case-sensitive substring match on Letta 0.16.8.
        """
        options: dict[str, Any] = {}
        if after:
            options["after"] = after
        if summary_search:
            options["summary_search"] = summary_search
        with _translated_errors():
            page = self._client.conversations.list(
                agent_id=agent_id, limit=limit, order="desc", **options
            )
            return [self._conversation_info(c) for c in page]

    def update_conversation(self, *, conversation_id: str, summary: str) -> ConversationInfo:
        with _translated_errors():
            conv = self._send_client.conversations.update(conversation_id, summary=summary)
        return self._conversation_info(conv)

    def retrieve_conversation(self, *, conversation_id: str) -> ConversationDetails:
        with _translated_errors():
            conv = self._client.conversations.retrieve(conversation_id)
        return ConversationDetails(
            letta_id=conv.id,
            agent_id=conv.agent_id,
            summary=conv.summary or "",
            created_at=conv.created_at,
            last_message_at=conv.last_message_at,
            in_context_message_ids=tuple(getattr(conv, "in_context_message_ids", None) or ()),
        )

    def compact_conversation(self, *, conversation_id: str) -> CompactionInfo:
        """Have Letta summarise the conversation's older messages out of the context window now
        (as it does by itself when the window fills). Its messages stay in the history."""
        with _translated_errors():
            done = self._send_client.conversations.messages.compact(conversation_id)
        return CompactionInfo(
            messages_before=done.num_messages_before,
            messages_after=done.num_messages_after,
            summary=done.summary or "",
        )

    def delete_conversation(self, *, conversation_id: str) -> None:
        with _translated_errors():
            self._send_client.conversations.delete(conversation_id)

    def fork_conversation(
        self, *, conversation_id: str, message_id: str | None = None
    ) -> ConversationInfo:
        """A new conversation with the same messages, up to ``message_id`` where honoured.

        Letta 0.16.8 ignores ``message_id`` and copies the whole conversation: callers that ask
        for a fork point must check what they got.
        """
        options = {"message_id": message_id} if message_id else {}
        with _translated_errors():
            conv = self._send_client.conversations.fork(conversation_id, **options)
        return self._conversation_info(conv)

    # Memory: the agent's core memory blocks, shared by all its conversations -------------------

    BLOCK_PAGE = 100

    @staticmethod
    def _block_info(block: Any) -> MemoryBlockInfo:
        return MemoryBlockInfo(
            label=block.label or "",
            value=block.value or "",
            limit=block.limit,
            block_id=getattr(block, "id", None) or "",
            read_only=bool(getattr(block, "read_only", False)),
            description=getattr(block, "description", None) or "",
        )

    def list_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]:
        """The agent's core memory blocks, oldest first (read in cursor pages)."""
        blocks: list[MemoryBlockInfo] = []
        after: str | None = None
        with _translated_errors():
            while True:
                page = self._client.agents.blocks.list(
                    agent_id,
                    limit=self.BLOCK_PAGE,
                    order="asc",
                    **_after(after),
                )
                blocks.extend(self._block_info(b) for b in page.items)
                if len(page.items) < self.BLOCK_PAGE:
                    return blocks
                after = page.items[-1].id

    async def alist_blocks(self, *, agent_id: str) -> list[MemoryBlockInfo]:
        blocks: list[MemoryBlockInfo] = []
        after: str | None = None
        client = self._aclients()[0]
        with _translated_errors():
            while True:
                page = await client.agents.blocks.list(
                    agent_id,
                    limit=self.BLOCK_PAGE,
                    order="asc",
                    **_after(after),
                )
                blocks.extend(self._block_info(b) for b in page.items)
                if len(page.items) < self.BLOCK_PAGE:
                    return blocks
                after = page.items[-1].id

    # Agents of their own: copies of a template, identities, common blocks ----------------------

    def agent_config(self, *, agent_id: str) -> AgentConfig:
        """The agent's model, system prompt, tools, tool rules and memory blocks."""
        with _translated_errors():
            agent = self._client.agents.retrieve(
                agent_id, include=["agent.tools", "agent.blocks", "agent.tags"]
            )
        llm_config = getattr(agent, "llm_config", None)
        return AgentConfig(
            letta_id=agent.id,
            name=agent.name or agent.id,
            description=agent.description or "",
            model=agent.model or (getattr(llm_config, "handle", None) or ""),
            agent_type=str(agent.agent_type or ""),
            system=agent.system or "",
            tools=tuple(ToolInfo(t.id, t.name or "") for t in agent.tools or []),
            tool_rules=tuple(
                r if isinstance(r, dict) else r.model_dump(exclude_none=True)
                for r in agent.tool_rules or []
            ),
            blocks=tuple(self._block_info(b) for b in agent.blocks or []),
            tags=tuple(agent.tags or ()),
            context_window=getattr(llm_config, "context_window", None),
        )

    def create_agent_copy(
        self,
        *,
        template: AgentConfig,
        name: str,
        skip_labels: frozenset[str] = frozenset(),
        block_ids: tuple[str, ...] = (),
        identity_id: str = "",
        tags: tuple[str, ...] = (),
    ) -> AgentInfo:
        """A new agent made from ``template``: its model, system prompt, tools and tool rules
        exactly (no base tools or rules added), and new memory blocks holding the template's
        values, except ``skip_labels``; the existing blocks ``block_ids`` are attached instead.
        """
        blocks = [
            {
                "label": b.label,
                "value": b.value,
                **({"limit": b.limit} if b.limit is not None else {}),
                **({"description": b.description} if b.description else {}),
                "read_only": b.read_only,
            }
            for b in template.blocks
            if b.label not in skip_labels
        ]
        options: dict[str, Any] = {}
        if identity_id:
            options["identity_ids"] = [identity_id]
        if block_ids:
            options["block_ids"] = list(block_ids)
        with _translated_errors():
            agent = self._send_client.agents.create(
                name=name,
                model=template.model,
                agent_type=template.agent_type or "letta_v1_agent",
                system=template.system,
                description=template.description,
                tool_ids=[t.tool_id for t in template.tools],
                tool_rules=list(template.tool_rules),
                memory_blocks=blocks,
                tags=list(tags),
                include_base_tools=False,
                include_base_tool_rules=False,
                **options,
            )
        return self._agent_info(agent)

    def set_tool_approval(self, *, agent_id: str, tool_name: str, required: bool) -> None:
        """Make the agent's tool wait for a person's approval before it runs (or not): Letta
        keeps it as a ``requires_approval`` tool rule."""
        with _translated_errors():
            self._send_client.agents.tools.update_approval(
                tool_name, agent_id=agent_id, body_requires_approval=required
            )

    def reapply_agent_config(self, *, agent_id: str, template: AgentConfig) -> None:
        """Give an agent ``template``'s system prompt, tools and tool rules; memory untouched."""
        with _translated_errors():
            self._client.agents.update(
                agent_id,
                system=template.system,
                tool_ids=[t.tool_id for t in template.tools],
                tool_rules=list(template.tool_rules),
            )

    def delete_agent(self, *, agent_id: str, keep_block_ids: frozenset[str] = frozenset()) -> None:
        """Delete an agent and the memory blocks only it uses (Letta leaves blocks behind),
        except ``keep_block_ids`` (blocks that are someone else's to keep, even if attached
        nowhere else now).

        Blocks first: if this stops half-way, the agent is still there to find them from.
        """
        with _translated_errors():
            for block in self.list_blocks(agent_id=agent_id):
                if block.block_id in keep_block_ids:
                    continue
                users = self._client.blocks.agents.list(block.block_id, limit=2)
                if [a.id for a in users.items] == [agent_id]:
                    self._client.blocks.delete(block.block_id)
            self._client.agents.delete(agent_id)

    def identity_ensure(self, *, identifier_key: str, name: str) -> str:
        """The id of the Letta identity ``identifier_key``, made if there is none.

        (Letta 0.16.8's upsert answers 404 for a key it does not know yet: find, else create.)
        """
        with _translated_errors():
            for attempt in range(2):
                if ids := self._identity_ids(identifier_key):
                    return ids[0]
                try:
                    made = self._send_client.post(
                        "/v1/identities/",
                        body={
                            "identifier_key": identifier_key,
                            "name": name,
                            "identity_type": "user",
                        },
                        cast_to=object,
                    )
                    return str(_field(made, "id"))
                except letta_client.ConflictError:
                    if attempt:  # made by someone else meanwhile, yet not listed: give up
                        raise
        raise AssertionError("unreachable")

    def _identity_ids(self, identifier_key: str) -> list[str]:
        found = self._client.get(
            "/v1/identities/",
            options={"params": {"identifier_key": identifier_key}},
            cast_to=object,
        )
        return [str(_field(i, "id")) for i in found or [] if isinstance(i, dict)]

    def delete_identity(self, *, identifier_key: str) -> None:
        """Delete the identity ``identifier_key`` (its agents stay); LettaNotFound if none."""
        with _translated_errors():
            ids = self._identity_ids(identifier_key)
            if not ids:
                raise LettaNotFound("Letta has no such identity.", status=404)
            for identity_id in ids:
                self._client.delete(f"/v1/identities/{identity_id}", cast_to=object)

    def create_block(
        self, *, label: str, value: str, limit: int | None, read_only: bool, description: str = ""
    ) -> MemoryBlockInfo:
        options: dict[str, Any] = {}
        if limit is not None:
            options["limit"] = limit
        if description:
            options["description"] = description
        with _translated_errors():
            block = self._send_client.blocks.create(
                label=label, value=value, read_only=read_only, **options
            )
        return self._block_info(block)

    def attach_block(self, *, agent_id: str, block_id: str) -> None:
        with _translated_errors():
            self._client.agents.blocks.attach(block_id, agent_id=agent_id)

    def retrieve_block(self, *, block_id: str) -> MemoryBlockInfo:
        with _translated_errors():
            block = self._client.blocks.retrieve(block_id)
        return self._block_info(block)

    def update_block(self, *, block_id: str, value: str) -> MemoryBlockInfo:
        with _translated_errors():
            block = self._client.blocks.update(block_id, value=value)
        return self._block_info(block)

    def delete_block(self, *, block_id: str) -> None:
        with _translated_errors():
            self._client.blocks.delete(block_id)


def _field(data: object, name: str) -> object:
    return data.get(name) if isinstance(data, dict) else getattr(data, name, None)
