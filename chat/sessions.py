"""A websocket lives no longer than the session that opened it.

When a session ends, its sockets close with ``CLOSE_SIGNED_OUT`` within seconds, in every server
process, and the page says "You were signed out" (``static/js/chat.js``):

- **Logout** ends that one session: ``user_logged_out`` publishes "session ended" with a digest
  of its key to the person's group, and the sockets of that session close at once.
- **Deactivation, a password change, deletion**: saving the person publishes "check your
  session" to their group (after the transaction commits); every socket of theirs re-checks its
  session as Django would on the next request (exists, not expired, same person, still active,
  auth hash still valid) and closes when it fails. A session whose hash was updated by the
  password change itself (``update_session_auth_hash``) stays.
- **Anything else** (expiry, a session deleted or a password changed with a queryset update,
  an event lost with Redis): each socket re-checks its session on every frame it receives, and
  every ``LETTACHAT_SESSION_CHECK_SECONDS`` the process checks the sessions of all its sockets at
  once (each session once, in one call to a database thread, however many sockets it has).

The person's group is named by ``user_group`` from their primary key, never from input; events
carry only the type and a digest of a session key.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import weakref
from collections.abc import Callable, Iterable
from importlib import import_module
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth import (
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
    load_backend,
    user_logged_out,
)
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.db import SessionStore as DatabaseSessionStore
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from lettachat.aio import db

logger = logging.getLogger(__name__)

CLOSE_SIGNED_OUT = 4401  # the same code as a socket opened without a session
EVENT_TYPE = "session.ended"  # -> consumer.session_ended: {"session": digest, or "" to re-check}


def user_group(user_pk: object) -> str:
    """The channel group of every socket a person holds: derived from their key only."""
    return f"user.{int(str(user_pk))}"


def session_digest(session_key: str | None) -> str:
    """What events carry instead of a session key."""
    return hashlib.sha256((session_key or "").encode()).hexdigest() if session_key else ""


# --- Is a session still good? ------------------------------------------------------------------


def session_is_live(session_key: str | None, user_pk: object) -> bool:
    """Whether ``session_key`` still logs ``user_pk`` in, by Django's own rules, changing nothing.

    The checks of ``django.contrib.auth.get_user``: the session exists and has not expired, it
    names this person and a configured backend, the backend still gives the person (not for an
    inactive one, with ModelBackend), and the auth hash matches the password (or a fallback
    secret's hash). Unlike ``get_user`` it never flushes or rotates the session.
    """
    if not session_key:
        return False
    engine = import_module(settings.SESSION_ENGINE)
    data = engine.SessionStore(session_key).load()  # {} when missing or expired
    return _logs_in(data, user_pk, lambda path: load_backend(path).get_user(user_pk))


def sessions_live(sessions: set[tuple[str | None, object]]) -> set[tuple[str | None, object]]:
    """Those of ``(session key, user pk)`` that ``session_is_live``.

    With sessions in the database (Django's db and cached_db engines), in two queries whatever
    their number: the sessions, then their people (through ModelBackend's own rules). Other
    engines and backends: one session at a time.
    """
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not issubclass(store, DatabaseSessionStore):
        return {session for session in sessions if session_is_live(*session)}
    keys = {key for key, _ in sessions if key}
    rows = store.get_model_class().objects.filter(
        session_key__in=keys, expire_date__gt=timezone.now()
    )
    data = {row.session_key: store(row.session_key).decode(row.session_data) for row in rows}
    people = _people(data.values())
    return {
        (key, user_pk)
        for key, user_pk in sessions
        if key in data and _logs_in(data[key], user_pk, functools.partial(_found, people, user_pk))
    }


def _found(people: dict[tuple[str, str], Any], user_pk: object, backend_path: str) -> Any:
    return people.get((backend_path, str(user_pk)))


def _people(sessions: Iterable[dict[str, Any]]) -> dict[tuple[str, str], Any]:
    """The person each session names, by (backend, pk), as its backend's ``get_user`` gives it
    (None: none, or not allowed in); ModelBackend's people in one query."""
    wanted: dict[str, set[str]] = {}
    for data in sessions:
        path = data.get(BACKEND_SESSION_KEY)
        if path in settings.AUTHENTICATION_BACKENDS and data.get(SESSION_KEY) is not None:
            wanted.setdefault(path, set()).add(str(data[SESSION_KEY]))
    people: dict[tuple[str, str], Any] = {}
    for path, pks in wanted.items():
        backend = load_backend(path)
        if isinstance(backend, ModelBackend) and type(backend).get_user is ModelBackend.get_user:
            found = get_user_model()._default_manager.in_bulk(pks)
            for pk, user in found.items():
                if backend.user_can_authenticate(user):
                    people[(path, str(pk))] = user
        else:
            for pk in pks:
                people[(path, pk)] = backend.get_user(pk)
    return people


def _logs_in(data: dict[str, Any], user_pk: object, user_of: Callable[[str], Any]) -> bool:
    """Whether a session's ``data`` logs ``user_pk`` in; ``user_of(backend path)`` gives the
    person as that backend does (None: none, or not allowed in)."""
    if str(data.get(SESSION_KEY, "")) != str(user_pk):
        return False
    backend_path = data.get(BACKEND_SESSION_KEY)
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return False
    user = user_of(backend_path)
    if user is None:
        return False
    if not hasattr(user, "get_session_auth_hash"):
        return True
    stored = data.get(HASH_SESSION_KEY) or ""
    if not stored:
        return False
    if constant_time_compare(stored, user.get_session_auth_hash()):
        return True
    return any(constant_time_compare(stored, h) for h in user.get_session_auth_fallback_hash())


# --- The consumer's side -----------------------------------------------------------------------


async def socket_opened(consumer: Any) -> None:
    """Join the person's group and start the periodic check. Call once the socket is accepted."""
    user = consumer.scope["user"]
    session = consumer.scope.get("session")
    consumer.session_key = getattr(session, "session_key", None)
    consumer.session_user_pk = user.pk
    consumer.session_over = False
    consumer.session_group = user_group(user.pk)
    await consumer.channel_layer.group_add(consumer.session_group, consumer.channel_name)
    _watched_sockets().add(consumer)


async def socket_closed(consumer: Any) -> None:
    """Leave the group and the periodic check (safe for a socket that never opened)."""
    _sockets.get(asyncio.get_running_loop(), set()).discard(consumer)
    group = getattr(consumer, "session_group", None)
    if group is not None:
        await consumer.channel_layer.group_discard(group, consumer.channel_name)


async def still_signed_in(consumer: Any) -> bool:
    """Re-check the socket's session (before a frame is handled); closes the socket if it ended."""
    if getattr(consumer, "session_over", True):
        return False
    if await db(session_is_live)(consumer.session_key, consumer.session_user_pk):
        return True
    await _end(consumer)
    return False


async def on_event(consumer: Any, event: dict[str, Any]) -> None:
    """A "session ended" event for the person: close if it names this session, else re-check."""
    digest = str(event.get("session") or "")
    if digest:
        if constant_time_compare(digest, session_digest(consumer.session_key)):
            await _end(consumer)
        return
    await still_signed_in(consumer)


async def _end(consumer: Any) -> None:
    if consumer.session_over:
        return
    consumer.session_over = True
    await consumer.close(code=CLOSE_SIGNED_OUT)


# The sockets of this process (of each event loop: the tests run one per test), and the task that
# checks their sessions every few seconds while there are any.
_sockets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, set[Any]] = (
    weakref.WeakKeyDictionary()
)
_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def _watched_sockets() -> set[Any]:
    """The sockets the periodic check covers; it runs while the set is not empty."""
    loop = asyncio.get_running_loop()
    sockets = _sockets.setdefault(loop, set())
    watcher = _watchers.get(loop)
    if watcher is None or watcher.done():
        _watchers[loop] = loop.create_task(_watch(sockets), name="session-watch")
    return sockets


async def _watch(sockets: set[Any]) -> None:
    """Every few seconds, the sessions of all the process's sockets: expiry and changes no event
    announced. One call to a database thread for all of them, each session checked once: with
    a check per socket, a thousand idle sockets made two hundred database calls a second."""
    interval = settings.LETTACHAT_SESSION_CHECK_SECONDS
    while sockets:
        await asyncio.sleep(interval)
        watched = [c for c in sockets if not c.session_over]
        try:
            live = await db(sessions_live)({(c.session_key, c.session_user_pk) for c in watched})
        except Exception:  # a failed check must not end the watch: the next one tries again
            logger.exception("could not check the sessions of this process's sockets")
            continue
        for consumer in watched:
            if (consumer.session_key, consumer.session_user_pk) not in live:
                await _end(consumer)


# --- Publishing: after the transaction commits -------------------------------------------------


def publish_session_ended(*, user_pk: object, session_key: str | None = None) -> None:
    """Tell every socket of the person, in every process, once the transaction commits.

    With ``session_key`` the sockets of that session close; without, each re-checks its own.
    """
    group = user_group(user_pk)
    event = {"type": EVENT_TYPE, "session": session_digest(session_key)}

    def send() -> None:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            async_to_sync(layer.group_send)(group, event)
        except Exception:  # the sockets' own checks still close them within seconds
            logger.exception("could not announce the end of a session")

    transaction.on_commit(send)


@receiver(user_logged_out, dispatch_uid="chat.sessions.logged_out")
def _logged_out(sender: object, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is None or request is None:
        return
    publish_session_ended(user_pk=user.pk, session_key=request.session.session_key)


@receiver(post_save, dispatch_uid="chat.sessions.user_saved")
def _user_saved(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    if sender is not get_user_model() or created:
        return
    # A password set with set_password() is still in _password while post_save runs.
    if not instance.is_active or getattr(instance, "_password", None) is not None:
        publish_session_ended(user_pk=instance.pk)


@receiver(post_delete, dispatch_uid="chat.sessions.user_deleted")
def _user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    if sender is get_user_model():
        publish_session_ended(user_pk=instance.pk)
