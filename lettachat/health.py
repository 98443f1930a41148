"""Probes for load balancers and orchestrators: JSON, no login, nothing secret.

- ``/healthz``: the process answers (liveness). Touches nothing else.
- ``/readyz``: the database, the channel layer and Letta, each with its status and latency;
  503 when any is down (readiness). Each check is bounded by ``LETTACHAT_PROBE_TIMEOUT``, so a
  hanging Letta or database cannot hang the probe, and the checks run side by side.

``ProbeMiddleware`` answers both paths first in the stack: a probe needs no session, and a load
balancer that asks by IP address (a ``Host`` not in ``ALLOWED_HOSTS``) or over plain HTTP behind
``SECURE_SSL_REDIRECT`` still gets its answer. Errors are reported by kind only (``timeout``, an
exception's class name), never by message: a database error names hosts and users.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_safe

from letta_gateway import LettaError, get_gateway
from lettachat.aio import db

HEALTHZ = "/healthz"
READYZ = "/readyz"

Check = Callable[[float], Awaitable[None]]


def _database_ping() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


async def _database(timeout: float) -> None:
    await db(_database_ping)()


async def _channel_layer(timeout: float) -> None:
    """A message sent to a channel of the probe's own and received back."""
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer")
    channel = f"lettachat.readyz.{uuid.uuid4().hex}"
    await layer.send(channel, {"type": "readyz.ping"})
    await layer.receive(channel)


async def _letta(timeout: float) -> None:
    await get_gateway().ahealth(timeout=timeout)


CHECKS: dict[str, Check] = {
    "database": _database,
    "channel_layer": _channel_layer,
    "letta": _letta,
}


async def _run(check: Check, timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    result: dict[str, Any]
    try:
        await asyncio.wait_for(check(timeout), timeout)
    except TimeoutError:
        result = {"status": "down", "error": "timeout"}
    except LettaError as exc:
        result = {"status": "down", "error": type(exc).__name__}
    except Exception as exc:  # noqa: BLE001  # a probe reports any failure, by kind only
        result = {"status": "down", "error": type(exc).__name__}
    else:
        result = {"status": "ok"}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def _no_store(response: HttpResponse) -> HttpResponse:
    response["Cache-Control"] = "no-store"
    return response


@require_safe
async def healthz(request: HttpRequest) -> HttpResponse:
    return _no_store(JsonResponse({"status": "ok"}))


@require_safe
async def readyz(request: HttpRequest) -> HttpResponse:
    timeout = settings.LETTACHAT_PROBE_TIMEOUT
    results = await asyncio.gather(*(_run(check, timeout) for check in CHECKS.values()))
    checks = dict(zip(CHECKS, results, strict=True))
    ready = all(result["status"] == "ok" for result in checks.values())
    body = {"status": "ok" if ready else "down", "checks": checks}
    return _no_store(JsonResponse(body, status=200 if ready else 503))


PROBES: dict[str, Callable[[HttpRequest], Awaitable[HttpResponse]]] = {
    HEALTHZ: healthz,
    READYZ: readyz,
}


class ProbeMiddleware:
    """Answer ``/healthz`` and ``/readyz`` before anything else runs (see the module's doc)."""

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
        probe = PROBES.get(request.path_info.rstrip("/") or "/")
        if probe is not None:
            return async_to_sync(probe)(request)
        return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info.rstrip("/") or "/")
        if probe is not None:
            return await probe(request)
        response: HttpResponse = await self.get_response(request)
        return response
