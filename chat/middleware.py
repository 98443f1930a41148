"""Responses with a person's data are never kept by a cache, shared or the browser's own."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import patch_cache_control


def private_pages(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """``Cache-Control: private, no-store`` on every response to someone logged in.

    Every page, partial and redirect for a logged-in person shows or leads to their own things
    (threads, titles, memory, the admin); static files are served before this runs (WhiteNoise)
    and keep their long-lived caching.
    """

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            patch_cache_control(response, private=True, no_store=True)
        return response

    return middleware
