"""daphne for the benchmarks: the same server, optionally with a message's way traced.

    python bench/_daphne.py -b 127.0.0.1 -p 8000 lettachat.asgi:application

``BENCH_WHATIF`` (comma-separated) changes the server the way a proposed fix would, to measure
the fix before anyone makes it; the app's code is not touched:

- ``dispatch``: a socket delivers ``conversation.html`` events (the relay's fragments) without
  channels' ``aclose_old_connections()`` hop to the one database thread that
  ``AsyncConsumer.dispatch`` makes before every event (that handler touches no database);
- ``pool``: PostgreSQL connections come from a pool (Django's ``OPTIONS["pool"]``, psycopg-pool,
  at most 8) instead of a new connection for every request and every ``database_sync_to_async``
  call (the shipped ``CONN_MAX_AGE=0``);
- ``clean``: the in-memory channel layer sweeps expired messages and group memberships at most
  once a second instead of on every send, receive and group send (each sweep walks every channel
  and every group member of the process).

With ``BENCH_TRACE=<file>`` it appends one JSON line per event to the file:

- every ``database_sync_to_async`` call: the function, how long it waited for the database
  thread (``queue``), how long it ran there (``run``) and how long the event loop took to resume
  the caller after it (``back``), in ms;
- a message frame arriving on a socket (``receive``) and the relay sending it to Letta
  (``letta_send``), with the conversation, so the way in between can be timed.

Used by ``relay_overhead.py --trace`` to explain where the time before the first token goes.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def install(path: str) -> None:
    import django

    django.setup()
    import channels.db
    from asgiref.sync import SyncToAsync

    from conversations import consumers
    from conversations.letta_gateway import LettaGateway

    out = open(path, "a", buffering=1)  # noqa: SIM115 - open for the process's life
    lock = threading.Lock()

    def write(**event: object) -> None:
        with lock:
            out.write(json.dumps(event) + "\n")

    original_call = SyncToAsync.__call__

    async def traced_call(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not isinstance(self, channels.db.DatabaseSyncToAsync):
            return await original_call(self, *args, **kwargs)
        func = self.func
        name = getattr(func, "__qualname__", repr(func))
        submitted = time.perf_counter()
        timing: dict[str, float] = {}

        def run(*a, **kw):  # type: ignore[no-untyped-def]
            timing["start"] = time.perf_counter()
            try:
                return func(*a, **kw)
            finally:
                timing["end"] = time.perf_counter()

        clone = copy.copy(self)  # never change a decorator's shared instance
        clone.func = run
        try:
            return await original_call(clone, *args, **kwargs)
        finally:
            back = time.perf_counter()
            if "start" in timing:
                write(
                    kind="db",
                    name=name,
                    queue=(timing["start"] - submitted) * 1000,
                    run=(timing["end"] - timing["start"]) * 1000,
                    back=(back - timing["end"]) * 1000,
                )

    SyncToAsync.__call__ = traced_call  # type: ignore[method-assign]

    original_receive = consumers.ConversationConsumer.receive

    async def traced_receive(self, text_data=None, bytes_data=None):  # type: ignore[no-untyped-def]
        if text_data and '"message"' in text_data and '"type"' not in text_data:
            write(kind="receive", conversation=self.conversation.letta_id, at=time.time())
        return await original_receive(self, text_data, bytes_data)

    consumers.ConversationConsumer.receive = traced_receive  # type: ignore[method-assign]

    original_send = LettaGateway.astream_reply

    def traced_send(self, *, conversation_id, text, otid):  # type: ignore[no-untyped-def]
        write(kind="letta_send", conversation=conversation_id, at=time.time())
        return original_send(self, conversation_id=conversation_id, text=text, otid=otid)

    LettaGateway.astream_reply = traced_send  # type: ignore[method-assign]


def what_if(changes: set[str]) -> None:
    import django

    django.setup()
    if "pool" in changes:
        from django.conf import settings

        settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
        settings.DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 2,
            "max_size": 8,
        }
    if "dispatch" in changes:
        from channels.consumer import AsyncConsumer

        from conversations import consumers

        def dispatch(self, message):  # type: ignore[no-untyped-def]
            if message.get("type") == "conversation.html":
                return self.conversation_html(message)
            return AsyncConsumer.dispatch(self, message)

        consumers.ConversationConsumer.dispatch = dispatch  # type: ignore[method-assign]
    if "clean" in changes:
        from channels.layers import InMemoryChannelLayer

        sweep = InMemoryChannelLayer._clean_expired
        last: dict[int, float] = {}

        def clean_expired(self):  # type: ignore[no-untyped-def]
            now = time.monotonic()
            if now - last.get(id(self), 0.0) >= 1.0:
                last[id(self)] = now
                sweep(self)

        InMemoryChannelLayer._clean_expired = clean_expired  # type: ignore[method-assign]


if __name__ == "__main__":
    if os.environ.get("BENCH_WHATIF"):
        what_if(set(os.environ["BENCH_WHATIF"].split(",")))
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # a diagnosis: the GIL's hand-over period
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("BENCH_TRACE"):
        install(os.environ["BENCH_TRACE"])
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()
