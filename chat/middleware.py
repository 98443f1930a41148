"""Responses with a person's data are never kept by a cache, shared or the browser's own; an
ended session sends the browser to the login page."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import resolve_url
from django.utils.cache import patch_cache_control
from django.utils.http import url_has_allowed_host_and_scheme
from django_htmx.http import HttpResponseClientRedirect


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


def htmx_login_redirect(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    """A session that ended sends the whole browser to the login page, not a login form into the
    part of the page an htmx request was for (the thread, the status poll, a panel).

    ``login_required`` answers an htmx request with a redirect to the login page, which the
    browser's XMLHttpRequest would follow and htmx would swap in. It becomes ``HX-Redirect`` to
    the login page, with ``next`` the page the person is on (not the partial's own address).
    """

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        htmx = getattr(request, "htmx", None)
        if not htmx or response.status_code != 302:
            return response
        login = resolve_url(settings.LOGIN_URL)
        location = urlsplit(response.get("Location", ""))
        if location.path != login:
            return response
        back = htmx.current_url_abs_path or "/"
        if not url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            back = "/"
        return HttpResponseClientRedirect(f"{login}?{urlencode({'next': back})}")

    return middleware
