"""daphne for the benchmarks: the same server, optionally with a message's way traced.

    python bench/_daphne.py -b 127.0.0.1 -p 8000 lettachat.asgi:application

``BENCH_WITHOUT`` (comma-separated) takes one of the shipped performance fixes back out, so a run
can measure what each is worth side by side with the shipped server; the app's code is not
touched:

- ``pool``: no PostgreSQL connection pool: a new connection for every request and every database
  call (``DATABASE_POOL=false``, set in the environment by ``_common.server_extra``);
- ``threads``: the websocket side's database calls all on asgiref's one thread-sensitive thread
  instead of ``lettachat.aio``'s pool of threads;
- ``dispatch``: channels' ``aclose_old_connections()`` hop to the database thread before every
  relayed fragment, as ``AsyncConsumer.dispatch`` does;
- ``sweep``: channels' own in-memory layer, which sweeps every channel and group member on every
  receive and group send;
- ``merge``: every piece from Letta relayed as its own fragment, even when pieces queue up.

With ``BENCH_UVLOOP=1`` daphne's asyncio loop (under Twisted's asyncio reactor) is uvloop's (an
experiment: ``uv sync --extra uvicorn`` installs uvloop; see bench/RESULTS.md, 2026-12-04
afternoon).

With ``BENCH_TRACE=<file>`` it appends one JSON line per event to the file:

- every ``database_sync_to_async`` call: the function, how long it waited for the database
  thread (``queue``), how long it ran there (``run``) and how long the event loop took to resume
  the caller after it (``back``), in ms;
- a message frame arriving on a socket (``receive``) and the relay sending it to Letta
  (``letta_send``), with the conversation, so the way in between can be timed; the frame as
  the consumer's dispatch gets it (``frame``: before channels' hop to its database thread);
  and the steps
  on that way (``step``: the session checked, the message stored and the relay opening, the
  relay open), each when it is done.

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

    from chat import consumers
    from letta_gateway.client import LettaGateway

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

    original_dispatch = consumers.ConversationConsumer.dispatch

    async def traced_dispatch(self, message):  # type: ignore[no-untyped-def]
        text = message.get("text") or ""
        if message["type"] == "websocket.receive" and '"message"' in text and '"type"' not in text:
            write(kind="frame", conversation=self.conversation.letta_id, at=time.time())
        return await original_dispatch(self, message)

    consumers.ConversationConsumer.dispatch = traced_dispatch  # type: ignore[method-assign]

    # The steps between the two, each when it is done (the summary times them from the receive).
    from chat import sessions
    from conversations.relay.loop import ReplyRelay

    original_check = sessions.still_signed_in

    async def traced_check(consumer):  # type: ignore[no-untyped-def]
        try:
            return await original_check(consumer)
        finally:
            conversation = getattr(consumer, "conversation", None)
            if conversation is not None:
                write(kind="step", name="session checked", conversation=conversation.letta_id,
                      at=time.time())  # fmt: skip

    sessions.still_signed_in = traced_check

    original_open = ReplyRelay.open

    async def traced_open(self, channel=""):  # type: ignore[no-untyped-def]
        write(kind="step", name="stored", conversation=self.conversation.letta_id, at=time.time())
        await original_open(self, channel)
        write(kind="step", name="relay open", conversation=self.conversation.letta_id,
              at=time.time())  # fmt: skip

    ReplyRelay.open = traced_open  # type: ignore[method-assign]

    # The garbage collector's pauses (every thread stops while it runs).
    import gc

    started: dict[str, float] = {}

    def collected(phase: str, info: dict) -> None:  # type: ignore[type-arg]
        if phase == "start":
            started["at"] = time.perf_counter()
        elif "at" in started:
            pause = (time.perf_counter() - started.pop("at")) * 1000
            write(kind="gc", generation=info["generation"], ms=pause)

    gc.callbacks.append(collected)

    original_send = LettaGateway.astream_reply

    def traced_send(self, *, conversation_id, text, otid):  # type: ignore[no-untyped-def]
        write(kind="letta_send", conversation=conversation_id, at=time.time())
        return original_send(self, conversation_id=conversation_id, text=text, otid=otid)

    LettaGateway.astream_reply = traced_send  # type: ignore[method-assign]


def without(fixes: set[str]) -> None:
    import django
    from django.conf import settings

    if "sweep" in fixes:
        settings.CHANNEL_LAYERS["default"]["BACKEND"] = "channels.layers.InMemoryChannelLayer"
    if "pubsub" in fixes:
        settings.CHANNEL_LAYERS.pop(settings.FRAGMENTS_LAYER, None)
    django.setup()
    if "threads" in fixes:
        from channels.db import database_sync_to_async

        from chat import consumers
        from conversations import actions, memory
        from conversations.relay import loop

        for module in (consumers, memory, loop, actions):
            module.db = database_sync_to_async  # type: ignore[attr-defined]
    if "dispatch" in fixes:
        from chat.consumers import ConversationConsumer

        del ConversationConsumer.dispatch
    if "merge" in fixes:
        from conversations.relay.loop import ReplyRelay

        ReplyRelay._merge_queued = lambda self, delta: delta  # type: ignore[method-assign]


def dump_tasks_on_sigusr2() -> None:
    """``kill -USR2 <daphne>`` writes every asyncio task's stack to the log (a stuck bench)."""
    import asyncio
    import signal

    def dump(*_: object) -> None:
        for task in asyncio.all_tasks(asyncio.get_event_loop()):
            task.print_stack(file=sys.stdout)
        sys.stdout.flush()

    signal.signal(signal.SIGUSR2, dump)


if __name__ == "__main__":
    dump_tasks_on_sigusr2()
    if os.environ.get("BENCH_WITHOUT"):
        without(set(os.environ["BENCH_WITHOUT"].split(",")))
    if os.environ.get("BENCH_SWITCH_INTERVAL"):  # a diagnosis: the GIL's hand-over period
        sys.setswitchinterval(float(os.environ["BENCH_SWITCH_INTERVAL"]))
    if os.environ.get("BENCH_TRACE"):
        install(os.environ["BENCH_TRACE"])
    if os.environ.get("BENCH_UVLOOP"):  # an experiment: daphne's asyncio loop from uvloop
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()
