"""Soak: drop the websocket at random points during replies and count what a page loses.

    uv run python bench/soak_resume.py [--drops 100] [--seed 1] [--words 80]

Starts the local Letta server (the project's harness), serves lettachat with daphne on a free
loopback port (a throwaway SQLite database unless DATABASE_URL is set), and, as a browser would,
sends messages over the websocket. During each reply it drops the connection at 1 to 3 random
moments (the TCP connection is aborted, no close handshake), reconnects, and asks to resume from
what the page shows. Every frame is applied to a model of the page. When a reply ends, the text
the page shows is compared with what Letta stored: characters missing are "lost", characters
shown more than once are "duplicated". Both must be 0; the command exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def setup_django(var_dir: Path, letta_url: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "lettachat.settings")
    os.environ["LETTACHAT_VAR_DIR"] = str(var_dir)
    os.environ["LETTA_BASE_URL"] = letta_url
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
    deadline = time.monotonic() + 30
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"daphne did not start; see {log}")
        time.sleep(0.05)


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


async def soak(args: argparse.Namespace, url: str, cookie: str, conversation_id: str) -> dict:
    import websockets

    rng = random.Random(args.seed)
    headers = {"Cookie": cookie, "Origin": url}
    page = Page()
    drops = 0
    replies = 0
    lost = duplicated = 0
    latencies: list[float] = []

    async def connect() -> websockets.ClientConnection:
        ws_url = url.replace("http://", "ws://") + f"/ws/c/{conversation_id}/"
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
        # Drop at 1 to 3 random moments of this reply (its words come 0.03 s apart; Letta sends
        # them in batches, so frames do not count words: the moments are times).
        sent = time.monotonic()
        plan = sorted(sent + rng.uniform(0.05, args.words * 0.03) for _ in range(rng.randint(1, 3)))
        while True:
            try:
                wait = max(0.0, plan[0] - time.monotonic()) if plan else None
                frame = await asyncio.wait_for(ws.recv(), timeout=wait)
            except TimeoutError:
                frame = None
            if frame is not None:
                page.model.apply(frame)
                if idle(frame):
                    break
            if plan and time.monotonic() >= plan[0]:
                plan.pop(0)
                if drops >= args.drops:
                    continue
                drops += 1
                ws.transport.abort()  # the network goes away: no close handshake
                await asyncio.sleep(rng.uniform(0, 0.3))  # the page is away a little while
                ws = await connect()
                if await resume(ws):
                    break
        stored = await asyncio.to_thread(stored_messages, conversation_id)
        shown = [text for _, text in page.model.articles()]
        expected = [" ".join(c.split()) for c in stored]
        a, b = "\n".join(expected), "\n".join(shown)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(
            None, a, b, autojunk=False
        ).get_opcodes():
            if tag in ("delete", "replace"):
                lost += i2 - i1
            if tag in ("insert", "replace"):
                duplicated += j2 - j1
        print(f"reply {replies}: {drops} drops so far, lost {lost}, duplicated {duplicated}",
              flush=True)  # fmt: skip
    await ws.close()
    return {
        "drops": drops,
        "replies": replies,
        "lost": lost,
        "duplicated": duplicated,
        "resume_p50_ms": statistics.median(latencies) * 1000,
        "resume_p95_ms": statistics.quantiles(latencies, n=20)[18] * 1000,
        "resume_max_ms": max(latencies) * 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--drops", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--words", type=int, default=80, help="length of each reply")
    parser.add_argument("--per-conversation", type=int, default=10, help="replies per thread")
    args = parser.parse_args()

    from devtools.local_letta import harness

    print("starting the local Letta server…", flush=True)
    letta_url = os.environ.get("LETTA_BASE_URL") or harness.start()
    with tempfile.TemporaryDirectory(prefix="lettachat-soak-") as tmp:
        var_dir = Path(os.environ.get("SOAK_DIR") or tmp)
        setup_django(var_dir, letta_url)
        cookie, conversation_id = make_fixtures(letta_url)
        port = free_port()
        env = {**os.environ, "LETTACHAT_VAR_DIR": str(var_dir), "LETTA_BASE_URL": letta_url}
        server = start_server(port, env, var_dir / "daphne.log")
        print(f"lettachat on http://127.0.0.1:{port}; {args.drops} drops to go", flush=True)
        try:
            result = asyncio.run(soak(args, f"http://127.0.0.1:{port}", cookie, conversation_id))
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(
        f"\n{result['drops']} drops over {result['replies']} replies: "
        f"lost {result['lost']} characters, duplicated {result['duplicated']}; "
        f"resume latency p50 {result['resume_p50_ms']:.0f} ms, "
        f"p95 {result['resume_p95_ms']:.0f} ms, max {result['resume_max_ms']:.0f} ms"
    )
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
