"""One log line per request, each with a request id, and who is asking (the client's address).

- ``RequestLogMiddleware``: takes the request id a proxy sent (``X-Request-ID``, when it looks
  like one) or makes one, returns it in ``X-Request-ID``, and logs one line when the response
  is ready: method, path (not the query: searches are people's words), status, size, time, user
  id, address.
- ``websocket_logged``: the same for websocket handshakes (one line when the socket is accepted
  or refused, origin refusals included); the id stays set for the socket's life, so the
  consumer's and relay's log lines carry it too.
- ``RequestIdFilter``: puts the current id on every log record (``%(request_id)s``); "-" outside
  a request. Settings send the records to stdout.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from contextvars import ContextVar
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

logger = logging.getLogger("lettachat.requests")

HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
request_id: ContextVar[str] = ContextVar("request_id", default="-")


def new_request_id(offered: str | None) -> str:
    """The id a proxy (or client) offered when it is a plain token, otherwise a new one."""
    if offered and _VALID_ID.fullmatch(offered):
        return offered
    return uuid.uuid4().hex


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or with ``LETTACHAT_TRUSTED_PROXIES`` = N > 0 the
    address the Nth proxy from the end of ``X-Forwarded-For`` saw (a client can write anything
    in that header; only what trusted proxies appended counts). None when it is not an address.
    """
    return _address(
        request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR", "")
    )


def _address(remote: str, forwarded: str) -> str | None:
    proxies = settings.LETTACHAT_TRUSTED_PROXIES
    address = remote
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            address = hops[-proxies]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class RequestLogMiddleware:
    """First in the stack: every response, probes and errors included, gets its line."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        token, started = self._begin(request)
        try:
            response = self.get_response(request)
            self._end(request, response, started)
        finally:
            request_id.reset(token)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        token, started = self._begin(request)
        try:
            response: HttpResponseBase = await self.get_response(request)
            self._end(request, response, started)
        finally:
            request_id.reset(token)
        return response

    @staticmethod
    def _begin(request: HttpRequest) -> tuple[Any, float]:
        rid = new_request_id(request.headers.get(HEADER))
        request.request_id = rid  # type: ignore[attr-defined]
        return request_id.set(rid), time.perf_counter()

    @staticmethod
    def _end(request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        response[HEADER] = request.request_id  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        size = "-" if response.streaming else str(len(response.content))  # type: ignore[attr-defined]
        logger.info(
            "%s %s %s %sB %.1fms user=%s ip=%s",
            request.method,
            request.path,
            response.status_code,
            size,
            (time.perf_counter() - started) * 1000,
            user.pk if user is not None and user.is_authenticated else "-",
            client_ip(request) or "-",
        )


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def websocket_logged(app: ASGIApp) -> ASGIApp:
    """Wrap the websocket side: a request id for the socket's life, one line per handshake."""

    async def logged(scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        rid = new_request_id(headers.get(HEADER.lower()))
        token = request_id.set(rid)
        started = time.perf_counter()
        remote = (scope.get("client") or ("", 0))[0] or ""
        answered = False

        async def send_logged(message: dict[str, Any]) -> None:
            nonlocal answered
            kind = message.get("type")
            if not answered and kind in ("websocket.accept", "websocket.close"):
                answered = True
                outcome = "accepted" if kind == "websocket.accept" else "refused"
                if kind == "websocket.close":
                    outcome += f" {message.get('code', 1000)}"
                logger.info(
                    "WEBSOCKET %s %s %.1fms ip=%s",
                    scope.get("path", ""),
                    outcome,
                    (time.perf_counter() - started) * 1000,
                    _address(remote, headers.get("x-forwarded-for", "")) or "-",
                )
            await send(message)

        try:
            await app(scope, receive, send_logged)
        finally:
            request_id.reset(token)

    return logged
