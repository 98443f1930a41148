"""Who is asking, as far as the server can tell: the client's address behind trusted proxies."""

from __future__ import annotations

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """The client's address: ``REMOTE_ADDR``, or with ``LETTACHAT_TRUSTED_PROXIES`` = N > 0 the
    address the Nth proxy from the end of ``X-Forwarded-For`` saw (a client can write anything
    in that header; only what trusted proxies appended counts). None when it is not an address.
    """
    address = request.META.get("REMOTE_ADDR", "")
    proxies = settings.LETTACHAT_TRUSTED_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if len(hops) >= proxies:
            address = hops[-proxies]
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
