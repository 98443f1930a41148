"""Soak with hard faults: Letta killed or hanging, a server process killed, Stop at bad moments.

    uv run python bench/soak_faults.py [--rounds 60] [--seed 1] [--words 60]

The sibling of soak_resume.py for issue 12's faults, on what production runs: PostgreSQL and
Redis (DATABASE_URL's server and REDIS_URL, the local standard ports by default; a throwaway
database is made and dropped), two daphne processes A and B on the same database and channel
layer, and the real Letta server (the project's harness). Two pages watch one conversation: page A
on process A sends, page B on process B only watches. Each round sends a reply and causes one
fault, chosen in turn at a random moment of the reply:

- ``stop``: Stop mid-reply;
- ``stop-early``: Stop while the model has said nothing yet (it waits 3 s before its first token);
- ``drop``: page A's connection aborted (no close handshake), reconnected, resumed;
- ``letta-pause``: the Letta server hangs (SIGSTOP) for 2 to 6 s, then goes on (SIGCONT);
- ``letta-kill``: the Letta server is killed (SIGKILL) and started again;
- ``server-kill``: process A, which runs the reply, is killed (SIGKILL); page A reconnects to B
  (as behind a load balancer), B's reaper takes the run over; A is started again.

Counted, each must be 0 (the command exits 1 otherwise):

- lost / duplicated: characters of what lettachat stored missing from, or shown twice on, either
  page once the round is over;
- stuck: a round whose pages still say "answering" after the bound (GIVE_UP + 60 s), or whose
  next message is not taken;
- second turns: a message that reached Letta twice (its text found in more than one of Letta's
  user messages);
- disagreements: after the soak has settled, a message Letta kept that the mirror lacks, or one the
  mirror shows that Letta did not keep and is not marked so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak_resume import Page, free_port, new_conversation, start_server  # noqa: E402

FAULTS = ("stop", "stop-early", "drop", "letta-pause", "letta-kill", "server-kill")
SERVER_SETTINGS = {  # short bounds, so a soak of faults takes minutes, not hours
    "LETTACHAT_STALL_SECONDS": "5",
    "LETTACHAT_RUN_CHECK_SECONDS": "2",
    "LETTACHAT_GIVE_UP_SECONDS": "60",
    "LETTACHAT_SETTLE_SECONDS": "120",
    "LETTACHAT_RELAY_HEARTBEAT_SECONDS": "1",
    "LETTACHAT_REAP_AFTER_SECONDS": "4",
    "LETTACHAT_RESUME_SECONDS": "180",
    "LETTACHAT_SEND_RATE": "100000/1",
    "LETTACHAT_NEW_CONVERSATION_RATE": "100000/1",
    "LETTACHAT_SHUTDOWN_SECONDS": "5",
}


def make_database(url: str) -> tuple[str, str]:
    """A throwaway database on ``url``'s PostgreSQL server: (its url, its name)."""
    import environ

    config = environ.Env.db_url_config(url)
    if not config["ENGINE"].endswith("postgresql"):
        raise SystemExit("the fault soak runs on PostgreSQL (set DATABASE_URL to one)")
    name = f"lettachat_soak_{os.getpid()}"
    with _admin(config) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    host = config["HOST"] or "127.0.0.1"
    auth = config["USER"] + (f":{config['PASSWORD']}" if config["PASSWORD"] else "")
    return f"postgres://{auth}@{host}:{config['PORT'] or 5432}/{name}", name


def drop_database(url: str, name: str) -> None:
    import environ

    with _admin(environ.Env.db_url_config(url)) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(config: dict[str, Any]) -> Any:
    import psycopg

    return psycopg.connect(
        dbname=config["NAME"], user=config["USER"], password=config["PASSWORD"] or None,
        host=config["HOST"] or "127.0.0.1", port=config["PORT"] or 5432, autocommit=True,
    )  # fmt: skip


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lettachat.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def make_fixtures() -> str:
    """The soak's person, the demo agent made visible; returns a session cookie."""
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.test import Client

    from conversations import services
    from devtools.local_letta import harness
    from letta_gateway import get_gateway

    services.agent_ensure_demo(gateway=get_gateway(), model=harness.MODEL_HANDLE)
    user, _ = get_user_model().objects.get_or_create(username="soak")
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def stored_messages(conversation_id: str) -> dict[str, str]:
    """What lettachat stored, by the id of the article the page shows it in."""
    from conversations.models import Message

    return {
        f"msg-{pk}": " ".join(content.split())
        for pk, content in Message.objects.filter(conversation__letta_id=conversation_id)
        .exclude(message_type="system")
        .values_list("pk", "content")
    }


def any_running() -> bool:
    from conversations.models import Run

    return Run.objects.filter(status=Run.Status.RUNNING).exists()


def compare_with_letta(conversation_id: str) -> tuple[list[Any], int]:
    """(Letta's disagreements with the mirror, user messages Letta holds twice)."""
    from conversations.models import Message
    from letta_gateway import get_gateway

    gateway, kept, after = get_gateway(), [], None
    while page := gateway.list_messages(conversation_id=conversation_id, after=after):
        kept += [(m.message_type, m.content) for m in page if m.message_type != "system"]
        after = page[-1].letta_id
    ours = [
        (m.message_type, m.content, m.error)
        for m in Message.objects.filter(conversation__letta_id=conversation_id).order_by(
            "created_at", "id"
        )
    ]
    mirrored = {(kind, content) for kind, content, _ in ours}
    missing = [m for m in kept if m not in mirrored]
    unmarked = [o for o in ours if (o[0], o[1]) not in kept and not o[2] and o[0] != "error"]
    users = Counter(content for kind, content in kept if kind == "user")
    twice = sum(count - 1 for count in users.values() if count > 1)
    return missing + unmarked, twice


def diff(stored: dict[str, str], shown: list[tuple[str, str]]) -> tuple[int, int]:
    """(characters stored but not shown, characters shown more than once or never stored).

    Each stored message must be in its own article (the id says which), once; an article of no
    stored message (a draft left behind, a copy) is all duplicated. Labels beside a message's text
    (its time, "not sent", buttons) are not counted.
    """
    lost = duplicated = 0
    articles = dict(shown)
    for dom_id, content in stored.items():
        text = articles.get(dom_id)
        if text is None or content not in text:
            lost += len(content)
            if os.environ.get("SOAK_VERBOSE"):
                print(f"    lost {dom_id}: {content!r:.120} shown {text!r:.120}", flush=True)
        elif content and text.count(content) > 1:
            duplicated += len(content) * (text.count(content) - 1)
    for dom_id, text in shown:
        if dom_id not in stored or [i for i, _ in shown].count(dom_id) > 1:
            duplicated += len(text)
            if os.environ.get("SOAK_VERBOSE"):
                print(f"    extra {dom_id}: {text!r:.160}", flush=True)
    return lost, duplicated


class Servers:
    """Daphne processes A and B on one database and channel layer."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.ports = {"A": free_port(), "B": free_port()}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.starts = Counter[str]()

    def start(self, name: str) -> None:
        self.starts[name] += 1
        log = self.logs / f"daphne-{name}-{self.starts[name]}.log"
        self.processes[name] = start_server(self.ports[name], self.env, log)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def kill(self, name: str) -> None:
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()


def idle(frame: str | bytes) -> bool:
    return 'id="reply-status"' in str(frame) and 'data-busy="false"' in str(frame)


class Watcher:
    """One page: its socket, its model of #messages, whether the reply is over."""

    def __init__(self, servers: Servers, server: str, cookie: str, conversation_id: str) -> None:
        self.servers, self.server, self.cookie = servers, server, cookie
        self.conversation_id = conversation_id
        self.page = Page()
        self.ws: Any = None
        self.idle = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    async def open(self, server: str | None = None) -> None:
        import websockets

        self.server = server or self.server
        url = self.servers.url(self.server)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.ws = await websockets.connect(
                    url.replace("http://", "ws://") + f"/ws/c/{self.conversation_id}/",
                    additional_headers={"Cookie": self.cookie, "Origin": url},
                    max_size=None,
                )
                break
            except (OSError, websockets.InvalidStatus):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)  # the server is starting: try again, as a page does
        await self.ws.send(
            json.dumps(
                {"type": "resume", "after": self.page.shown_up_to(), "drafts": self.page.drafts()}
            )
        )
        self.reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: Any) -> None:
        import websockets

        try:
            async for frame in ws:
                self.page.model.apply(frame)
                if idle(frame):
                    self.idle.set()
                elif 'id="reply-status"' in str(frame):
                    self.idle.clear()
        except websockets.ConnectionClosed:
            pass
        if ws is self.ws:  # closed from the other end: only server-kill does, and says where to
            self.ws = None

    async def drop(self) -> None:
        ws, self.ws = self.ws, None
        ws.transport.abort()
        await asyncio.sleep(0)
        await self.open()

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if self.reader:
            self.reader.cancel()
        if ws is not None:
            await ws.close()

    async def send(self, frame: dict[str, Any]) -> None:
        while self.ws is None:
            await asyncio.sleep(0.05)
        await self.ws.send(json.dumps(frame))


async def soak(args: argparse.Namespace, servers: Servers, cookie: str) -> dict[str, Any]:
    from devtools.local_letta import harness

    rng = random.Random(args.seed)
    counts = Counter[str]()
    conversations: list[str] = []
    bound = float(SERVER_SETTINGS["LETTACHAT_GIVE_UP_SECONDS"]) + 60
    a = b = None
    for number in range(1, args.rounds + 1):
        fault = FAULTS[(number - 1) % len(FAULTS)]
        if (number - 1) % len(FAULTS) == 0:  # a fresh thread for each turn of the faults
            if a and b:
                await a.close()
                await b.close()
            conversation_id = await asyncio.to_thread(new_conversation)
            conversations.append(conversation_id)
            a = Watcher(servers, "A", cookie, conversation_id)
            b = Watcher(servers, "B", cookie, conversation_id)
            await a.open("A")
            await b.open("B")
            await asyncio.wait_for(asyncio.gather(a.idle.wait(), b.idle.wait()), 30)
        assert a and b
        wait = "[[wait:3]] " if fault == "stop-early" else ""
        text = f"{wait}soak {number} {fault} [[long:{args.words}]]"
        a.idle.clear()
        b.idle.clear()
        shown_before = len(a.page.model.articles())
        await a.send({"message": text, "otid": str(uuid.uuid4())})
        at = 0.5 if fault == "stop-early" else rng.uniform(0.3, args.words * 0.03)
        await asyncio.sleep(at)  # the fault's random moment in the reply (not a synchronisation)
        started = time.monotonic()
        if a.idle.is_set():
            counts["after_the_end"] += 1  # the reply was over before its fault: said, not hidden
        if fault in ("stop", "stop-early"):
            await a.send({"type": "stop"})
        elif fault == "drop":
            await a.drop()
        elif fault == "letta-pause":
            harness.pause_letta(True)
            await asyncio.sleep(rng.uniform(2, 6))
            harness.pause_letta(False)
        elif fault == "letta-kill":
            await asyncio.to_thread(harness.kill_letta)
            await asyncio.to_thread(harness.start_letta)
        elif fault == "server-kill":
            servers.kill("A")
            await a.open("B")  # the page's reconnect lands on the other process
            await asyncio.to_thread(servers.start, "A")
        try:
            await asyncio.wait_for(asyncio.gather(a.idle.wait(), b.idle.wait()), bound)
        except TimeoutError:
            counts["stuck"] += 1
            print(f"round {number} ({fault}): STUCK after {bound:.0f} s", flush=True)
            continue
        if len(a.page.model.articles()) == shown_before:
            counts["stuck"] += 1  # the message was not taken
            print(f"round {number} ({fault}): the message was not taken", flush=True)
        stored = await asyncio.to_thread(stored_messages, a.conversation_id)
        for page in (a, b):
            lost, duplicated = diff(stored, page.page.model.articles())
            counts["lost"] += lost
            counts["duplicated"] += duplicated
        counts["rounds"] += 1
        counts[fault] += 1
        print(
            f"round {number} ({fault}): over {time.monotonic() - started:.1f} s after the fault; "
            f"lost {counts['lost']}, duplicated {counts['duplicated']}, stuck {counts['stuck']}",
            flush=True,
        )
        if a.server == "B" and fault == "server-kill":
            await a.close()
            a = Watcher(servers, "A", cookie, a.conversation_id)
            await a.open("A")
            await asyncio.wait_for(a.idle.wait(), 30)
    for page in (a, b):
        if page:
            await page.close()
    # Letta and the mirror, once every Stop has settled (cancels confirmed, runs reconciled).
    deadline = time.monotonic() + float(SERVER_SETTINGS["LETTACHAT_SETTLE_SECONDS"]) + 30
    while await asyncio.to_thread(any_running) and time.monotonic() < deadline:
        await asyncio.sleep(1)
    for conversation_id in conversations:
        while True:
            disagreements, twice = await asyncio.to_thread(compare_with_letta, conversation_id)
            if not disagreements or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)  # a settle may still be writing
        counts["second_turns"] += twice
        counts["disagreements"] += len(disagreements)
        for item in disagreements:
            print(f"  {conversation_id}: Letta and the mirror differ on {item!r:.160}", flush=True)
    return dict(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--words", type=int, default=60, help="length of each reply")
    args = parser.parse_args()

    from devtools.local_letta import harness

    print("starting the local Letta server…", flush=True)
    letta_url = os.environ.get("LETTA_BASE_URL") or harness.start()
    base_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    database_url, database = make_database(base_url)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="lettachat-soak-faults-") as tmp:
            env = {
                **os.environ,
                **SERVER_SETTINGS,
                "LETTACHAT_VAR_DIR": tmp,
                "LETTA_BASE_URL": letta_url,
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "CHANNEL_LAYER_PREFIX": f"lettachat-soak-{os.getpid()}",
            }
            setup_django(env)
            cookie = make_fixtures()
            servers = Servers(env, Path(tmp))
            servers.start("A")
            servers.start("B")
            print(f"A {servers.url('A')}, B {servers.url('B')}; {args.rounds} rounds", flush=True)
            try:
                result = asyncio.run(soak(args, servers, cookie))
            finally:
                servers.stop_all()
                from django.db import connections

                connections.close_all()
    finally:
        drop_database(base_url, database)
    faults = ", ".join(f"{result.get(f, 0)} {f}" for f in FAULTS)
    print(
        f"\n{result.get('rounds', 0)} rounds ({faults}) in {(time.monotonic() - started) / 60:.1f}"
        f" minutes: lost {result.get('lost', 0)} characters, duplicated"
        f" {result.get('duplicated', 0)}, stuck {result.get('stuck', 0)}, second turns"
        f" {result.get('second_turns', 0)}, mirror and Letta disagree on"
        f" {result.get('disagreements', 0)} messages; {result.get('after_the_end', 0)} faults"
        " came after their reply had ended"
    )
    bad = ("lost", "duplicated", "stuck", "second_turns", "disagreements")
    return 1 if any(result.get(k, 0) for k in bad) else 0


if __name__ == "__main__":
    raise SystemExit(main())
