"""Websockets from this site's own pages only: the ``Origin`` must match exactly.

Channels' ``AllowedHostsOriginValidator`` compares the origin's host name with ``ALLOWED_HOSTS``
and ignores scheme and port, so a page on another port of the same host (``http://127.0.0.1:9999``)
or plain http next to https could use a person's session. This check is the one Django's CSRF
middleware makes for an unsafe request's ``Origin``:

- the serving address: ``http(s)://<Host>``, where ``Host`` is the handshake's own header and
  must itself be in ``ALLOWED_HOSTS``, and the scheme is https when the socket is ``wss`` or
  ``SECURE_PROXY_SSL_HEADER`` (``BEHIND_TLS_PROXY``) says the proxy received it over TLS;
- or an entry of ``CSRF_TRUSTED_ORIGINS``, exactly (``https://chat.example.com``), or by its
  subdomain wildcard (``https://*.example.com``), as Django reads it.

Anything else (another scheme, host or port, ``null``, none at all) is refused before the
session is even read: the handshake is answered 403.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.http import is_same_domain


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _is_secure(scope: dict[str, Any]) -> bool:
    if scope.get("scheme") in ("wss", "https"):
        return True
    proxy: tuple[str, str] | None = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if proxy:
        meta_name, secure_value = proxy
        header = meta_name.removeprefix("HTTP_").replace("_", "-").lower().encode()
        value = _header(scope, header)
        if value is not None:
            return value.split(",", 1)[0].strip() == secure_value
    return False


def serving_origin(scope: dict[str, Any]) -> str | None:
    """``scheme://host[:port]`` the handshake was made to, if its Host is an allowed host."""
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    return f"{'https' if _is_secure(scope) else 'http'}://{host}".lower()


def origin_allowed(origin: str | None, scope: dict[str, Any]) -> bool:
    """Whether a page at ``origin`` may open a socket on this connection (exact match)."""
    if not origin or origin == "null":
        return False
    origin = origin.lower()
    if origin == serving_origin(scope):
        return True
    trusted = [o.lower() for o in settings.CSRF_TRUSTED_ORIGINS]
    if origin in (o for o in trusted if "*" not in o):
        return True
    try:
        parsed = urlsplit(origin)
    except ValueError:
        return False
    for entry in trusted:
        if "*" not in entry:
            continue
        scheme, _, netloc = entry.partition("://")
        if parsed.scheme == scheme and is_same_domain(parsed.netloc, netloc.replace("*", "", 1)):
            return True
    return False


class SameOriginValidator:
    """ASGI middleware: refuse a websocket whose ``Origin`` is not exactly an allowed one."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        plain = dict(scope)
        if scope["type"] == "websocket" and not origin_allowed(_header(plain, b"origin"), plain):
            await WebsocketDenier()(scope, receive, send)
            return
        await self.application(scope, receive, send)
