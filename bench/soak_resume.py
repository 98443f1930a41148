"""Soak: drop the websocket at random points during replies and count what a page loses.

    uv run python bench/soak_resume.py [--drops 100] [--seed 1] [--words 80]
        [--redis] [--processes 1] [--balance alternate|random]

Starts the local Letta server (the project's harness), serves lettachat with daphne on a free
loopback port (a throwaway SQLite database unless DATABASE_URL is set), and, as a browser would,
sends messages over the websocket. During each reply it drops the connection at 1 to 3 random
moments (the TCP connection is aborted, no close handshake), reconnects, and asks to resume from
what the page shows. Every frame is applied to a model of the page. When a reply ends, the text
the page shows is compared with what Letta stored: characters missing are "lost", characters
shown more than once are "duplicated". Both must be 0, and no reply may leave the page saying
"answering" (stuck); the command exits 1 otherwise.

With ``--redis``, as production runs: a throwaway PostgreSQL database (``_common.bench_database``,
on BENCH_POSTGRES's server, dropped after) and the Redis channel layer (REDIS_URL, by default
redis://127.0.0.1:6379/0, under a prefix of this run's own). With ``--processes N`` (more than
one needs ``--redis``) N daphne processes serve the app on that database and channel layer; each
reconnect after a drop goes to another process (``--balance``: the next one in turn, or one at
random as a load balancer would), so a page often resumes on a process that does not run the
reply's relay, and sends its next message from wherever it is. ``LETTACHAT_FRAGMENTS_PUBSUB`` in
the environment reaches the servers (page fragments over Redis pub/sub). The last line printed
says how many processes, which database and which channel layer were used.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    bench_database,
    free_port,
    log_errors,
    percentile,
    stop,
    wait_for_port,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
# A page that sees no frame of a running reply for this long has lost its end: the reply is stuck.
STUCK_SECONDS = 120.0


def setup_django(env: dict[str, str]) -> None:
    """This process's Django on the servers' own settings (database, channel layer), migrated."""
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lettachat.settings")
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # this process's own sign-in, not a line each
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_fixtures(letta_url: str) -> tuple[str, str]:
    """A user, the demo agent made visible; returns (session cookie, a new conversation's id)."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from conversations import services
    from devtools.local_letta import harness
    from letta_gateway import get_gateway

    gateway = get_gateway()
    agent = services.agent_ensure_demo(gateway=gateway, model=harness.MODEL_HANDLE)
    if agent is None:
        from conversations.models import Agent

        agent = Agent.objects.filter(visible_to_users=True).first()
    user, _ = get_user_model().objects.get_or_create(username="soak")
    client = Client()
    client.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    return cookie, new_conversation()


def new_conversation() -> str:
    from django.contrib.auth import get_user_model

    from conversations import services
    from conversations.models import Agent
    from letta_gateway import get_gateway

    user = get_user_model().objects.get(username="soak")
    agent = Agent.objects.filter(visible_to_users=True).first()
    return services.conversation_create(gateway=get_gateway(), user=user, agent=agent).letta_id


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
         "lettachat.asgi:application"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port, server, log)
    return server


def setup_description() -> str:
    """The database and channel layer this process's settings picked (the servers have the same
    environment, so the same settings)."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"].endswith("postgresql"):
        db = f"PostgreSQL (database {database['NAME']})"
    elif database["ENGINE"].endswith("sqlite3"):
        db = "SQLite"
    else:
        db = database["ENGINE"].rsplit(".", 1)[-1]
    layers = settings.CHANNEL_LAYERS
    backend = layers["default"]["BACKEND"]
    if "redis" in backend.lower():
        layer = f"Redis channel layer (prefix {layers['default']['CONFIG'].get('prefix')})"
        if settings.FRAGMENTS_LAYER in layers:
            layer += ", fragments over Redis pub/sub"
        else:
            layer += ", fragments on the list layer"
    elif "InMemory" in backend:
        layer = "in-memory channel layer"
    else:
        layer = backend
    return f"{db}, {layer}"


class Page:
    """One browser page: a model of #messages, fed by the frames it receives."""

    def __init__(self) -> None:
        from tests.page_model import PageModel

        self.model = PageModel()

    def drafts(self) -> int:
        return sum(1 for i, _ in self.model.articles() if i.startswith("stream-"))

    def shown_up_to(self) -> int:
        ids = [int(i[4:]) for i, _ in self.model.articles() if i.startswith("msg-")]
        return max(ids, default=0)


def stored_messages(conversation_id: str) -> list[str]:
    from conversations.models import Message

    return list(
        Message.objects.filter(conversation__letta_id=conversation_id)
        .exclude(message_type="system")
        .order_by("created_at", "id")
        .values_list("content", flat=True)
    )


async def soak(
    args: argparse.Namespace, urls: list[str], cookie: str, conversation_id: str
) -> dict:
    import websockets

    rng = random.Random(args.seed)
    route = random.Random(args.seed + 1)  # its own: the drops are the same whatever the routing
    page = Page()
    drops = 0
    replies = 0
    lost = duplicated = 0
    counts = Counter[str]()
    latencies: list[float] = []
    server = 0  # the process the page is connected to (an index into urls)

    async def connect() -> websockets.ClientConnection:
        url = urls[server]
        ws_url = url.replace("http://", "ws://") + f"/ws/c/{conversation_id}/"
        headers = {"Cookie": cookie, "Origin": url}
        return await websockets.connect(ws_url, additional_headers=headers, max_size=None)

    async def resume(ws: websockets.ClientConnection) -> bool:
        """Catch up; True if no reply is running any more."""
        started = time.monotonic()
        resume_frame = {"type": "resume", "after": page.shown_up_to(), "drafts": page.drafts()}
        await ws.send(json.dumps(resume_frame))
        frame = await ws.recv()  # the catch-up, or the relay's snapshot
        latencies.append(time.monotonic() - started)
        page.model.apply(frame)
        return idle(frame)

    def idle(frame: str | bytes) -> bool:
        return 'id="reply-status"' in str(frame) and 'data-busy="false"' in str(frame)

    def next_server() -> int:
        """Where a reconnect lands, as behind a load balancer."""
        if args.balance == "random":
            return route.randrange(len(urls))
        return (server + 1) % len(urls)

    ws = await connect()
    await resume(ws)
    while drops < args.drops:
        replies += 1
        if replies % args.per_conversation == 0:
            # A fresh thread now and then keeps Letta's per-turn work (history) from growing.
            await ws.close()
            conversation_id = await asyncio.to_thread(new_conversation)
            page = Page()
            ws = await connect()
            await resume(ws)
        await ws.send(json.dumps({"message": f"soak {replies} [[long:{args.words}]]",
                                  "otid": str(uuid.uuid4())}))  # fmt: skip
        sent_on = server  # the process that took the message runs the reply's relay
        path = [server]
        # Drop at 1 to 3 random moments of this reply (its words come 0.03 s apart; Letta sends
        # them in batches, so frames do not count words: the moments are times).
        sent = time.monotonic()
        plan = sorted(sent + rng.uniform(0.05, args.words * 0.03) for _ in range(rng.randint(1, 3)))
        last_frame = time.monotonic()
        while True:
            give_up = last_frame + STUCK_SECONDS
            wait = min(plan[0], give_up) if plan else give_up
            try:
                frame = await asyncio.wait_for(ws.recv(), timeout=max(0.0, wait - time.monotonic()))
            except TimeoutError:
                frame = None
            if frame is not None:
                last_frame = time.monotonic()
                page.model.apply(frame)
                if idle(frame):
                    break
            elif time.monotonic() >= give_up:
                counts["stuck"] += 1
                print(f"reply {replies}: STUCK, no frame for {STUCK_SECONDS:.0f} s and the page "
                      f"still says answering (processes {path})", flush=True)  # fmt: skip
                break
            if plan and time.monotonic() >= plan[0]:
                plan.pop(0)
                if drops >= args.drops:
                    continue
                drops += 1
                ws.transport.abort()  # the network goes away: no close handshake
                await asyncio.sleep(rng.uniform(0, 0.3))  # the page is away a little while
                server = next_server()
                path.append(server)
                ws = await connect()
                last_frame = time.monotonic()
                over = await resume(ws)
                if not over:
                    counts["mid_reply"] += 1
                    if server != sent_on:
                        counts["elsewhere"] += 1  # resumed on a process not running the relay
                if over:
                    break
        stored = await asyncio.to_thread(stored_messages, conversation_id)
        shown = [text for _, text in page.model.articles()]
        expected = [" ".join(c.split()) for c in stored]
        a, b = "\n".join(expected), "\n".join(shown)
        reply_lost = reply_duplicated = 0
        differences = []
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
            None, a, b, autojunk=False
        ).get_opcodes():
            if tag in ("delete", "replace"):
                reply_lost += i2 - i1
            if tag in ("insert", "replace"):
                reply_duplicated += j2 - j1
            if tag != "equal":
                differences.append(f"    {tag}: stored {a[i1:i2]!r:.200} shown {b[j1:j2]!r:.200}")
        lost += reply_lost
        duplicated += reply_duplicated
        print(f"reply {replies}: {drops} drops so far, lost {lost}, duplicated {duplicated}",
              flush=True)  # fmt: skip
        if differences:
            print(f"  reply {replies} (sent on process {sent_on}, page on processes {path}): "
                  f"the thread's text differs from what was stored:", flush=True)  # fmt: skip
            print("\n".join(differences[:10]), flush=True)
    await ws.close()
    return {
        "drops": drops,
        "replies": replies,
        "lost": lost,
        "duplicated": duplicated,
        "stuck": counts["stuck"],
        "mid_reply": counts["mid_reply"],
        "elsewhere": counts["elsewhere"],
        "resume_p50_ms": statistics.median(latencies) * 1000,
        "resume_p95_ms": percentile(latencies, 95) * 1000,
        "resume_max_ms": max(latencies) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--words", type=int, default=80, help="length of each reply")
    parser.add_argument("--per-conversation", type=int, default=10, help="replies per thread")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="a throwaway PostgreSQL database and the Redis channel layer (REDIS_URL)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, help="daphne processes (more than one: --redis)"
    )
    parser.add_argument(
        "--balance",
        choices=["alternate", "random"],
        default="alternate",
        help="where a reconnect lands: the next process in turn, or one at random",
    )
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes > 1 and not args.redis:
        parser.error("--processes above 1 needs --redis (a shared database and channel layer)")

    from devtools.local_letta import harness

    print("starting the local Letta server…", flush=True)
    letta_url = os.environ.get("LETTA_BASE_URL") or harness.start()
    servers: list[subprocess.Popen[bytes]] = []
    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="lettachat-soak-"))
        var_dir = Path(os.environ.get("SOAK_DIR") or tmp)
        env = {**os.environ, "LETTACHAT_VAR_DIR": str(var_dir), "LETTA_BASE_URL": letta_url}
        if args.redis:
            database_url = stack.enter_context(bench_database(f"soak_resume_{os.getpid()}"))
            if database_url.startswith("sqlite"):
                raise SystemExit("--redis runs on PostgreSQL, which does not answer")
            env["DATABASE_URL"] = database_url
            env["REDIS_URL"] = REDIS_URL
            env["CHANNEL_LAYER_PREFIX"] = f"lettachat-soak-resume-{uuid.uuid4().hex[:8]}"
        setup_django(env)
        cookie, conversation_id = make_fixtures(letta_url)
        setup = (
            f"{args.processes} process{'es' if args.processes > 1 else ''}, {setup_description()}"
        )
        from django.db import connections

        stack.callback(connections.close_all)  # before the database is dropped
        urls = []
        try:
            for number in range(args.processes):
                port = free_port()
                servers.append(start_server(port, env, var_dir / f"daphne-{number}.log"))
                urls.append(f"http://127.0.0.1:{port}")
            print(f"lettachat on {', '.join(urls)} ({setup}); {args.drops} drops to go",
                  flush=True)  # fmt: skip
            started = time.monotonic()
            result = asyncio.run(soak(args, urls, cookie, conversation_id))
            minutes = (time.monotonic() - started) / 60
        finally:
            for server in servers:
                stop(server)
            for number in range(len(servers)):
                # The logs go with the temporary directory: what the servers logged as errors.
                if logged := log_errors(var_dir / f"daphne-{number}.log"):
                    print(f"process {number} logged {len(logged)} errors:", flush=True)
                    print("\n".join(f"  {line}" for line in logged[:20]), flush=True)
    elsewhere = (
        f"; {result['elsewhere']} of {result['mid_reply']} resumes mid-reply on a process "
        f"other than the reply's ({args.balance})"
        if args.processes > 1
        else ""
    )
    print(
        f"\n{result['drops']} drops over {result['replies']} replies in {minutes:.1f} minutes "
        f"({setup}): lost {result['lost']} characters, duplicated {result['duplicated']}, "
        f"stuck {result['stuck']}; resume latency p50 {result['resume_p50_ms']:.0f} ms, "
        f"p95 {result['resume_p95_ms']:.0f} ms, max {result['resume_max_ms']:.0f} ms{elsewhere}"
    )
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and not result["stuck"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
