"""Relay overhead and per-token latency: the same replies read directly and through lettachat.

    uv run python bench/relay_overhead.py                      # scripted upstream, 1/50/200
    uv run python bench/relay_overhead.py --layer redis        # the same on the Redis layer
    uv run python bench/relay_overhead.py --upstream letta     # the real Letta server, 1 and 5
    uv run python bench/relay_overhead.py --sweep 50,100,200   # where the relay saturates
    uv run python bench/relay_overhead.py --layer redis --processes 2 --watch-elsewhere

At each concurrency N, rounds alternate (ABBA) between N replies read straight from the upstream
with the letta-client SDK (the limit: what a client of Letta itself gets) and N replies read
through lettachat's websocket, as a browser receives them (one conversation and one open socket
per reply; the socket is open before the message is sent). For each reply: time to first token
and to last token, from the moment the message is sent. Reported: medians, p95 and the ratios
lettachat / direct. Targets: ratio <= 1.05 at the median and p95, at 1, 50 and 200.

With the scripted upstream (``bench/scripted_upstream.py``, ``--rate`` tokens/s per reply, first
token ``--first-token`` s after the request, like Letta's background runs here) every token
carries its send time: the per-token latency upstream write -> websocket receive is reported at
p50 and p99 (target: p99 <= 20 ms at 200 concurrent replies), with the same for the direct read
as its floor. Also reported: daphne's CPU time per relayed token (tokens per CPU-second: where
one core saturates). ``--sweep`` raises the rate per reply at the highest concurrency to find
that point. ``--profile`` samples daphne with py-spy during the highest concurrency.

daphne is started for the run on a throwaway PostgreSQL database (``bench_relay_*``), with the
limits per person lifted (``_common.SERVER_LIMITS``) and a bench person per reply in flight, on
the in-memory channel layer or Redis (``--layer``). ``--processes N`` (Redis) starts
N daphnes: conversation i's socket is on process i mod N, so the replies spread over all of
them. With ``--watch-elsewhere`` each conversation has a second socket, on the next process: the
message is sent on one and the reply measured on the other, so every token crosses processes (a
person with two tabs, each on another process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as c

ERROR_FRAME = re.compile(r'class="msg-error"|id="composer-error"[^>]*>[^<\s]')
REFUSED_FRAME = re.compile(r'id="composer-error"[^>]*>[^<\s]')  # not sent: no reply will come


@dataclass
class Reply:
    ttft: float = math.nan  # seconds from send to the first token
    ttlt: float = math.nan  # seconds from send to the last token
    done: float = math.nan  # seconds from send to the end of the reply (relay: idle status)
    tokens: int = 0
    latencies: list[float] = field(default_factory=list)  # ms, upstream write -> receive
    sent_at: float = 0.0  # wall clock at the send
    received: list[float] = field(default_factory=list)  # perf_counter of each token frame
    first_stamp: float = math.nan  # the upstream's wall clock at the first token
    error: str = ""

    def to_upstream(self, first_token: float) -> float:
        """Seconds from the send to the upstream's receiving the request (scripted upstream)."""
        return self.first_stamp - first_token - self.sent_at


# --- The two ways to read a reply ----------------------------------------------------------------


async def direct_reply(client: Any, conversation_id: str, text: str) -> Reply:
    reply = Reply(sent_at=time.time())
    started = time.perf_counter()
    try:
        stream = await client.conversations.messages.create(
            conversation_id,
            messages=[{"role": "user", "content": text, "otid": str(uuid.uuid4())}],
            stream_tokens=True,
            background=True,
            include_pings=True,
        )
        async for event in stream:
            if getattr(event, "message_type", None) != "assistant_message":
                continue
            now, wall = time.perf_counter(), time.time()
            content = event.content if isinstance(event.content, str) else ""
            if reply.tokens == 0:
                reply.ttft = now - started
                if stamp := c.STAMP.search(content):
                    reply.first_stamp = float(stamp.group(1))
            reply.ttlt = now - started
            reply.tokens += 1
            reply.latencies += [(wall - float(s)) * 1000 for s in c.STAMP.findall(content)]
        reply.done = time.perf_counter() - started
    except Exception as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
    return reply


async def relay_reply(ws: Any, text: str, sender: Any = None) -> Reply:
    """The reply as ``ws`` receives it; the message is sent on ``sender`` (default: ``ws``)."""
    reply = Reply(sent_at=time.time())
    started = time.perf_counter()
    try:
        seen: set[str] = set()
        await (sender or ws).send(json.dumps({"message": text, "otid": str(uuid.uuid4())}))
        while True:
            frame = await asyncio.wait_for(ws.recv(), timeout=c.FRAME_TIMEOUT)
            now, wall = time.perf_counter(), time.time()
            if c.TOKEN_FRAME.search(frame):
                if reply.tokens == 0:
                    reply.ttft = now - started
                reply.ttlt = now - started
                stamps, tokens = c.new_stamps(frame, seen)
                reply.received.append(now)
                if reply.tokens == 0 and stamps:
                    reply.first_stamp = float(stamps[0])
                reply.tokens += tokens
                reply.latencies += [(wall - float(s)) * 1000 for s in stamps]
            elif ERROR_FRAME.search(frame):
                reply.error = "error shown: " + re.sub(r"<[^>]+>", " ", frame)[:200].strip()
                if REFUSED_FRAME.search(frame):
                    return reply
            if c.idle(frame):
                reply.done = now - started
                return reply
    except TimeoutError:
        reply.error = f"no frame for {c.FRAME_TIMEOUT:g} s, and the reply was not over"
        return reply
    except Exception as exc:
        reply.error = f"{type(exc).__name__}: {exc}"
        return reply


# --- A run ---------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One way of reading, at one concurrency, for a while."""

    replies: list[Reply] = field(default_factory=list)  # those measured
    tokens: int = 0  # all tokens received, measured or not
    window_tokens: int = 0  # tokens received during the measured window, of any reply
    all_errors: int = 0
    wall: float = 0.0
    daphne_cpu: float = 0.0
    client_cpu: float = 0.0


@dataclass
class Level:
    n: int
    direct: list[Phase] = field(default_factory=list)
    relay: list[Phase] = field(default_factory=list)
    burst_direct: list[Reply] = field(default_factory=list)
    burst_relay: list[Reply] = field(default_factory=list)

    @property
    def direct_replies(self) -> list[Reply]:
        return [r for p in self.direct for r in p.replies]

    @property
    def relay_replies(self) -> list[Reply]:
        return [r for p in self.relay for r in p.replies]

    @property
    def relay_cpu(self) -> float:
        return sum(p.daphne_cpu for p in self.relay)

    @property
    def relay_wall(self) -> float:
        return sum(p.wall for p in self.relay)

    @property
    def relay_tokens(self) -> int:
        return sum(p.tokens for p in self.relay)

    @property
    def client_cpu(self) -> float:
        return sum(p.client_cpu for p in self.relay)

    @property
    def errors(self) -> int:
        return sum(p.all_errors for p in self.direct + self.relay)


def summary(replies: list[Reply], attr: str) -> tuple[float, float]:
    values = [getattr(r, attr) for r in replies if not r.error and not math.isnan(getattr(r, attr))]
    return c.median(values), c.percentile(values, 95)


def to_upstream_ms(replies: list[Reply], first_token: float) -> float:
    values = [r.to_upstream(first_token) * 1000 for r in replies if not r.error]
    return c.median([v for v in values if not math.isnan(v)])


def latencies(replies: list[Reply], *, skip_first: int = 0) -> list[float]:
    return [x for r in replies for x in r.latencies[skip_first:]]


async def measure(args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    import httpx
    from letta_client import AsyncLetta  # noqa: TID251 - the direct read is the SDK itself

    base_urls, cookies, daphne_pids = setup["base_urls"], setup["cookies"], setup["daphne_pids"]
    daphne_pid = daphne_pids[0]  # the one profiled

    def daphne_cpu() -> float:
        return sum(c.cpu_seconds(pid) for pid in daphne_pids)

    client = AsyncLetta(
        base_url=setup["letta_url"],
        max_retries=0,
        http_client=httpx.AsyncClient(
            limits=httpx.Limits(max_connections=2000, max_keepalive_connections=2000),
            timeout=httpx.Timeout(120, connect=10),
        ),
    )
    from django.conf import settings

    client.api_key = settings.LETTA_API_KEY or None  # the local server's key (secure mode)
    levels = [int(x) for x in args.levels.split(",")]
    top = max(levels)
    print(f"opening {top} sockets…", flush=True)
    sockets: list[Any] = []
    senders: list[Any] = []  # --watch-elsewhere: the socket each message is sent on
    n_proc = len(base_urls)
    conversations = setup["relay_conversations"]
    for i in range(0, top, 50):  # a page load's worth at a time
        batch = range(i, min(i + 50, top))
        sockets += await asyncio.gather(
            *(c.open_page(base_urls[j % n_proc], conversations[j], cookies[j]) for j in batch)
        )
        if args.watch_elsewhere:
            senders += await asyncio.gather(
                *(
                    c.open_page(base_urls[(j + 1) % n_proc], conversations[j], cookies[j])
                    for j in batch
                )
            )

    async def drain(ws: Any) -> None:
        """A sender's own frames (the reply shows in its page too): read, not measured."""
        try:
            async for _ in ws:
                pass
        except Exception:
            pass

    drains = [asyncio.create_task(drain(ws)) for ws in senders]
    direct_ids = setup["direct_conversations"]
    counter = 0

    def text(extra: str = "") -> str:
        nonlocal counter
        counter += 1
        return f"bench {counter} {args.message}{extra}"

    async def one(kind: str, i: int, extra: str = "") -> Reply:
        if kind == "direct":
            return await direct_reply(client, direct_ids[i], text(extra))
        return await relay_reply(sockets[i], text(extra), senders[i] if senders else None)

    async def phase(kind: str, n: int, period: float, window: float, extra: str = "") -> Phase:
        """``n`` replies always in flight (each worker sends again when its reply ends), their
        starts spread over one ``period``; the replies sent during ``window`` after that ramp
        are measured."""
        result = Phase()
        t0 = time.perf_counter()
        measured_from, measured_to = t0 + period, t0 + period + window
        cpu0, mine0 = daphne_cpu(), time.process_time()

        async def worker(i: int) -> None:
            await asyncio.sleep(i * period / n)
            measured = 0
            # Each worker's replies sent in the window, and at least one sent after the ramp
            # (when replies take far longer than expected, the window would see none).
            while (start := time.perf_counter()) <= measured_to or not measured:
                reply = await one(kind, i, extra)
                result.tokens += reply.tokens
                result.window_tokens += sum(
                    1 for t in reply.received if measured_from <= t <= measured_to
                )
                result.all_errors += bool(reply.error)
                if start >= measured_from:
                    result.replies.append(reply)
                    measured += 1

        await asyncio.gather(*(worker(i) for i in range(n)))
        result.wall = time.perf_counter() - t0
        result.daphne_cpu = daphne_cpu() - cpu0
        result.client_cpu = time.process_time() - mine0
        return result

    # Warm both paths (connections, templates, imports) before measuring, and time a reply.
    await one("direct", 0)
    await one("relay", 0)
    period = c.median([(await one("direct", 0)).done for _ in range(3)])
    print(f"one reply takes {period:.2f} s", flush=True)

    results: list[Level] = []
    profile: Path | None = None
    for n in levels:
        level = Level(n)
        # Enough replies each way: each way runs twice (ABBA), ``window`` long each time.
        window = period * max(2.0, math.ceil(args.min_samples / (2 * n)))
        print(f"\n{n} concurrent replies (ABBA, {window:.0f} s measured per phase)…", flush=True)
        spy = c.py_spy(daphne_pid, f"relay-{args.upstream}-{args.layer}-{n}") if (
            args.profile and n == top
        ) else None  # fmt: skip
        if spy is not None:
            profile = spy.__enter__()
        try:
            for kind in ("direct", "relay", "relay", "direct"):
                done = await phase(kind, n, period, window)
                getattr(level, kind).append(done)
        finally:
            if spy is not None:
                spy.__exit__(None, None, None)
        if args.burst and n == top:
            print(f"  and {n} sent in the same instant, each way…", flush=True)
            level.burst_direct = await asyncio.gather(*(one("direct", i) for i in range(n)))
            level.burst_relay = await asyncio.gather(*(one("relay", i) for i in range(n)))
        d, rl = summary(level.direct_replies, "ttft"), summary(level.relay_replies, "ttft")
        print(f"  first token: direct {d[0] * 1000:.0f} ms, lettachat {rl[0] * 1000:.0f} ms "
              f"(x{rl[0] / d[0]:.3f}); p95 x{rl[1] / d[1]:.3f}", flush=True)  # fmt: skip
        if args.upstream == "scripted":
            print(f"  send -> upstream request: direct "
                  f"{to_upstream_ms(level.direct_replies, args.first_token):.1f} ms, lettachat "
                  f"{to_upstream_ms(level.relay_replies, args.first_token):.1f} ms; per token "
                  f"p99 {c.percentile(latencies(level.relay_replies), 99):.1f} ms, after the "
                  f"first 5 {c.percentile(latencies(level.relay_replies, skip_first=5), 99):.1f}"
                  " ms",
                  flush=True)  # fmt: skip
        results.append(level)

    sweep = []
    sweep_profile: Path | None = None
    if args.sweep and args.upstream == "scripted":
        rates = [float(x) for x in args.sweep.split(",")]
        for rate in rates:
            tokens = int(rate * args.sweep_seconds)
            plan = f" [[bench tokens={tokens} rate={rate:g}]]"
            span = args.first_token + args.sweep_seconds
            print(f"\nsweep: {top} replies in flight at {rate:g} tokens/s each…", flush=True)
            spy = c.py_spy(daphne_pid, f"relay-sweep-{args.layer}-{top}x{rate:g}") if (
                args.profile and rate == rates[-1]
            ) else None  # fmt: skip
            if spy is not None:
                sweep_profile = spy.__enter__()
            try:
                done = await phase("relay", top, span, span * 2, plan)
            finally:
                if spy is not None:
                    spy.__exit__(None, None, None)
            lat = latencies(done.replies)
            sweep.append(
                {
                    "rate_per_reply": rate,
                    "offered_tokens_per_s": top * rate,
                    "tokens": sum(r.tokens for r in done.replies),
                    "expected_tokens": len(done.replies) * tokens,
                    "delivered_tokens_per_s": done.window_tokens / (span * 2),
                    "p50_ms": c.median(lat),
                    "p99_ms": c.percentile(lat, 99),
                    "daphne_cpu_share": done.daphne_cpu / done.wall,
                    "tokens_per_cpu_s": done.tokens / done.daphne_cpu,
                    "client_cpu_share": done.client_cpu / done.wall,
                    "errors": done.all_errors,
                }
            )
            s = sweep[-1]
            print(f"  {s['delivered_tokens_per_s']:.0f} tokens/s relayed; p99 {s['p99_ms']:.0f} "
                  f"ms; daphne CPU {s['daphne_cpu_share']:.2f}", flush=True)  # fmt: skip

    for ws in sockets + senders:
        await ws.close()
    for task in drains:
        task.cancel()
    await client.close()
    return {
        "levels": results,
        "sweep": sweep,
        "profile": profile,
        "sweep_profile": sweep_profile,
        "period": period,
    }


# --- Setup ---------------------------------------------------------------------------------------


def prepare(args: argparse.Namespace, database_url: str, var_dir: Path, letta_url: str) -> dict:
    c.setup_django(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
    from conversations.models import Conversation

    top = max(int(x) for x in args.levels.split(","))
    # A person per reply in flight, as in life: one person may have only a few replies running
    # at once (LETTACHAT_MAX_RUNNING_REPLIES), and their sends queue on a lock of their own.
    people = [c.bench_user(f"bench-{i}") for i in range(top)]
    if args.upstream == "scripted":
        from scripted_upstream import AGENT_ID

        agent = c.bench_agent(AGENT_ID)
        relay_ids = [f"conv-relay-{uuid.uuid4()}" for _ in range(top)]
        Conversation.objects.bulk_create(
            Conversation(letta_id=cid, agent=agent, owner=person)
            for cid, person in zip(relay_ids, people, strict=True)
        )
        direct_ids = [f"conv-direct-{uuid.uuid4()}" for _ in range(top)]
    else:
        from conversations import services
        from devtools.local_letta import harness
        from letta_gateway.client import LettaGateway

        gateway = LettaGateway(base_url=letta_url)  # the key from the settings
        info = next((a for a in gateway.list_agents() if a.name == "lettachat-bench"), None)
        if info is None:
            info = gateway.create_agent(
                name="lettachat-bench",
                model=harness.MODEL_HANDLE,
                description="Used by lettachat's benchmarks.",
                blocks={"human": "A benchmark.", "persona": "A quick agent."},
            )
        agent = c.bench_agent(info.letta_id, info.name)
        relay_ids = [
            services.conversation_create(gateway=gateway, user=person, agent=agent).letta_id
            for person in people
        ]
        direct_ids = [
            gateway.create_conversation(agent_id=info.letta_id).letta_id for _ in range(top)
        ]
    return {
        "cookies": [c.session_cookie(person) for person in people],
        "relay_conversations": relay_ids,
        "direct_conversations": direct_ids,
    }


def trace_summary(path: Path) -> str:
    """The traced daphne's view (``bench/_daphne.py``): database calls, and socket -> Letta."""
    if not path.exists():
        return ""
    db: dict[str, list[dict]] = {}
    received: dict[str, list[float]] = {}
    to_letta: list[float] = []
    steps: dict[str, list[float]] = {}  # each step's time since the frame's arrival (ms)
    framed: dict[str, list[float]] = {}
    pauses: dict[int, list[float]] = {}  # the garbage collector's, by generation (ms)
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event["kind"] == "db":
            db.setdefault(event["name"], []).append(event)
        elif event["kind"] == "receive":
            received.setdefault(event["conversation"], []).append(event["at"])
            if framed.get(event["conversation"]):
                frame_at = framed[event["conversation"]].pop(0)
                steps.setdefault("(channels' dispatch before it)", []).append(
                    (event["at"] - frame_at) * 1000
                )
        elif event["kind"] == "gc":
            pauses.setdefault(event["generation"], []).append(event["ms"])
        elif event["kind"] == "frame":
            framed.setdefault(event["conversation"], []).append(event["at"])
        elif event["kind"] == "step" and received.get(event["conversation"]):
            since = (event["at"] - received[event["conversation"]][0]) * 1000
            steps.setdefault(event["name"], []).append(since)
        elif event["kind"] == "letta_send" and received.get(event["conversation"]):
            to_letta.append((event["at"] - received[event["conversation"]].pop(0)) * 1000)
    on_the_way = ", ".join(
        f"{name} {c.median(times):.1f} ms" for name, times in steps.items() if times
    )
    lines = [
        f"Inside daphne (`--trace`): a message frame's arrival -> the request to Letta, median "
        f"{c.median(to_letta):.1f} ms, p95 {c.percentile(to_letta, 95):.1f} ms, max "
        f"{max(to_letta, default=math.nan):.1f} ms"
        + (f" (on the way, medians since the arrival: {on_the_way})" if on_the_way else "")
        + ". Every database call of the socket and "
        "the relay (`lettachat.aio.db`, a pool of threads): the wait for a thread, the "
        "run, the hop back to the event loop (ms):\n",
        "| function | calls | wait median | wait p95 | run median | run p95 | back median |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, events in sorted(db.items(), key=lambda kv: -len(kv[1])):
        q, r, b = ([e[k] for e in events] for k in ("queue", "run", "back"))
        lines.append(
            f"| `{name}` | {len(events)} | {c.median(q):.1f} | {c.percentile(q, 95):.1f} | "
            f"{c.median(r):.1f} | {c.percentile(r, 95):.1f} | {c.median(b):.1f} |"
        )
    if pauses:
        lines.append(
            "\nThe garbage collector's pauses (the whole process stops): "
            + "; ".join(
                f"generation {g}: {len(ms)}, {sum(ms):.0f} ms in all, longest {max(ms):.1f} ms"
                for g, ms in sorted(pauses.items())
            )
            + "."
        )
    return "\n".join(lines)


def level_figures(level: Level, first_token: float) -> dict[str, Any]:
    direct, relay = level.direct_replies, level.relay_replies
    df, rf = summary(direct, "ttft"), summary(relay, "ttft")
    dl, rl = summary(direct, "ttlt"), summary(relay, "ttlt")
    return {
        "concurrent": level.n,
        "replies_each": [len(direct), len(relay)],
        "ttft_direct_ms": [df[0] * 1000, df[1] * 1000],
        "ttft_relay_ms": [rf[0] * 1000, rf[1] * 1000],
        "ttlt_direct_ms": [dl[0] * 1000, dl[1] * 1000],
        "ttlt_relay_ms": [rl[0] * 1000, rl[1] * 1000],
        "ratios": {
            "ttft_median": rf[0] / df[0],
            "ttft_p95": rf[1] / df[1],
            "ttlt_median": rl[0] / dl[0],
            "ttlt_p95": rl[1] / dl[1],
        },
        "errors": level.errors,
        "first_errors": [r.error for r in direct + relay if r.error][:3],
        "relay_tokens": level.relay_tokens,
        "daphne_cpu_s": level.relay_cpu,
        "relay_wall_s": level.relay_wall,
        "client_cpu_s": level.client_cpu,
        "latency_relay_ms": [c.median(latencies(relay)), c.percentile(latencies(relay), 99)],
        "latency_direct_ms": [c.median(latencies(direct)), c.percentile(latencies(direct), 99)],
        "to_upstream_ms": [to_upstream_ms(direct, first_token), to_upstream_ms(relay, first_token)],
    }


def report(
    args: argparse.Namespace, m: dict, out: dict, errors_logged: list[str], trace: str = ""
) -> bool:
    name = (
        f"relay-{args.upstream}-{args.layer}{processes_tag(args)}"
        + (f"-{args.server}" if args.server != "daphne" else "")
        + (f"-{args.name}" if args.name else "")
    )
    upstream = (
        f"scripted upstream (`bench/scripted_upstream.py`): {args.tokens} tokens per reply at "
        f"{args.rate:g} tokens/s, first token {args.first_token:g} s after the request"
        if args.upstream == "scripted"
        else f"the real Letta server ({args.letta_url}), demo model, replies of `{args.message}`"
    )
    layer = "in-memory" if args.layer == "memory" else "Redis"
    settings = ", ".join(f"`{k}={v}`" for k, v in c.SERVER_LIMITS.items())
    title = (
        f"1-2. Relay overhead: {args.upstream} upstream, {layer} layer"
        + (f", {args.server}" if args.server != "daphne" else "")
        + (f", {args.processes} processes" if args.processes > 1 else "")
        + (f" ({args.name})" if args.name else "")
    )
    servers = (
        f"One {args.server} process"
        if args.processes == 1
        else f"{args.processes} {args.server} processes (conversation i's socket on process i mod "
        f"{args.processes}"
        + (
            "; each message sent on a second socket of the conversation, on the next process, "
            "so every token crosses processes"
            if args.watch_elsewhere
            else ""
        )
        + "; CPU figures are their sum, the profile the first's)"
    )
    lines = [
        c.section_head(title, m),
        c.server_changes(args),
        f"{servers}, {layer} channel layer, PostgreSQL; {upstream}; {settings}. A "
        "bench person per concurrent reply, each with one conversation and one open socket. "
        "*Direct* = the letta-client SDK reading the upstream itself (the limit); "
        "*lettachat* = the websocket frames a page receives. N replies are kept in flight (a "
        "reply is sent again as soon as one ends, starts spread over one reply's time "
        f"({out['period']:.2f} s)); replies sent after that ramp are measured; phases run direct, "
        "lettachat, lettachat, direct. Times from the send to the first and to the last token.\n",
        "| in flight | replies measured (direct, lettachat) | first token direct / lettachat "
        "(median) | ratio median | ratio p95 | last token direct / lettachat (median) | ratio "
        "median | ratio p95 | errors |",
        "|---:|---:|---|---:|---:|---|---:|---:|---:|",
    ]
    ok = True
    figures: dict[str, Any] = {
        "machine": m, "command": c.command_line(), "reply_seconds": out["period"], "levels": [],
    }  # fmt: skip
    for level in out["levels"]:
        f = level_figures(level, args.first_token)
        if args.upstream == "scripted":
            f["errors"] += sum(
                1 for r in level.relay_replies if r.tokens != args.tokens and not r.error
            )
        r = f["ratios"]
        level_ok = all(x <= 1.05 for x in r.values()) and f["errors"] == 0
        ok = ok and level_ok
        df, rf = f["ttft_direct_ms"], f["ttft_relay_ms"]
        dl, rl = f["ttlt_direct_ms"], f["ttlt_relay_ms"]
        lines.append(
            f"| {level.n} | {f['replies_each'][0]}, {f['replies_each'][1]} | {df[0]:.0f} / "
            f"{rf[0]:.0f} ms | {r['ttft_median']:.3f} | {r['ttft_p95']:.3f} | {dl[0]:.0f} / "
            f"{rl[0]:.0f} ms | {r['ttlt_median']:.3f} | {r['ttlt_p95']:.3f} | {f['errors']} |"
        )
        if level.burst_relay:
            bd, br = summary(level.burst_direct, "ttft"), summary(level.burst_relay, "ttft")
            bdl, brl = summary(level.burst_direct, "ttlt"), summary(level.burst_relay, "ttlt")
            f["burst"] = {
                "ttft_direct_ms": [bd[0] * 1000, bd[1] * 1000],
                "ttft_relay_ms": [br[0] * 1000, br[1] * 1000],
                "ttlt_direct_ms": [bdl[0] * 1000, bdl[1] * 1000],
                "ttlt_relay_ms": [brl[0] * 1000, brl[1] * 1000],
            }
        figures["levels"].append(f)
    lines.append(
        f"\nTarget ratio <= 1.05 at the median and p95, at every concurrency, no errors: "
        f"{c.verdict(ok)}.\n"
    )
    bursts = [f for f in figures["levels"] if "burst" in f]
    for f in bursts:
        b = f["burst"]
        bd, br = b["ttft_direct_ms"], b["ttft_relay_ms"]
        lines.append(
            f"Burst (not a target: the worst case): {f['concurrent']} messages sent in the same "
            f"instant, each way once. First token direct / lettachat median {bd[0]:.0f} / "
            f"{br[0]:.0f} ms (x{br[0] / bd[0]:.2f}), p95 {bd[1]:.0f} / {br[1]:.0f} ms; last "
            f"token median {b['ttlt_direct_ms'][0]:.0f} / {b['ttlt_relay_ms'][0]:.0f} ms.\n"
        )
    if args.upstream == "scripted":
        lines += [
            "Per token, upstream write -> receive (the send time travels in the token's text; "
            "same clock); the time from the send to the upstream's receiving the request; "
            "daphne's CPU per relayed token:\n",
            "| in flight | lettachat p50 | lettachat p99 | direct p50 | direct p99 | send -> "
            "upstream request, direct / lettachat (median) | tokens relayed | daphne CPU | tokens "
            "per daphne CPU-second | bench client CPU (lettachat phases) |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for f in figures["levels"]:
            lr, ld, tu = f["latency_relay_ms"], f["latency_direct_ms"], f["to_upstream_ms"]
            share = f["daphne_cpu_s"] / f["relay_wall_s"] if f["relay_wall_s"] else math.nan
            lines.append(
                f"| {f['concurrent']} | {lr[0]:.1f} ms | {lr[1]:.1f} ms | {ld[0]:.1f} ms | "
                f"{ld[1]:.1f} ms | {tu[0]:.1f} / {tu[1]:.1f} ms | {f['relay_tokens']} | "
                f"{f['daphne_cpu_s']:.1f} s ({share:.0%} of a core) | "
                f"{f['relay_tokens'] / f['daphne_cpu_s']:.0f} | {f['client_cpu_s']:.1f} s |"
            )
        at_top = figures["levels"][-1]
        p99_ok = at_top["latency_relay_ms"][1] <= 20
        ok = ok and p99_ok
        lines.append(
            f"\nTarget per-token p99 <= 20 ms at {at_top['concurrent']} concurrent replies: "
            f"{c.verdict(p99_ok)} ({at_top['latency_relay_ms'][1]:.1f} ms).\n"
        )
    if out["sweep"]:
        top = max(int(x) for x in args.levels.split(","))
        lines += [
            f"Saturation sweep (lettachat only): {top} replies in flight, "
            f"{args.sweep_seconds:g} s of tokens each, faster and faster:\n",
            "| tokens/s per reply | offered tokens/s | relayed tokens/s | p50 | p99 | daphne "
            "CPU | tokens per daphne CPU-second | bench client CPU | tokens measured / sent "
            "| errors |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in out["sweep"]:
            lines.append(
                f"| {s['rate_per_reply']:g} | {s['offered_tokens_per_s']:.0f} | "
                f"{s['delivered_tokens_per_s']:.0f} | {s['p50_ms']:.0f} ms | {s['p99_ms']:.0f} ms "
                f"| {s['daphne_cpu_share']:.0%} | {s['tokens_per_cpu_s']:.0f} | "
                f"{s['client_cpu_share']:.0%} | {s['tokens']} / {s['expected_tokens']} | "
                f"{s['errors']} |"
            )
        figures["sweep"] = out["sweep"]
    if errors_logged:
        lines.append(
            f"\ndaphne logged {c.error_count(errors_logged)} errors, e.g. `{errors_logged[0]}` "
            f"{errors_logged[-1]}"
        )
        figures["daphne_errors"] = errors_logged[:20]
    if trace:
        lines += ["", trace]
    if out["profile"] is not None:
        lines += [
            f"\nProfile of daphne at {max(int(x) for x in args.levels.split(','))} replies in "
            f"flight (py-spy, samples of the thread holding the GIL; "
            f"`{out['profile'].relative_to(c.ROOT)}`):\n",
            c.profile_table(out["profile"]),
        ]
    if out["sweep_profile"] is not None:
        lines += [
            f"\nProfile of daphne in the last sweep step (py-spy, samples of the thread holding "
            f"the GIL; "
            f"`{out['sweep_profile'].relative_to(c.ROOT)}`):\n",
            c.profile_table(out["sweep_profile"]),
        ]
    figures["ok"] = ok
    c.write_section(name, "\n".join(lines), figures)
    return ok


def processes_tag(args: argparse.Namespace) -> str:
    """How a report names a run on several processes: "-2proc", "-2proc-elsewhere"."""
    if args.processes == 1 and not args.watch_elsewhere:
        return ""
    return f"-{args.processes}proc" + ("-elsewhere" if args.watch_elsewhere else "")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", choices=["scripted", "letta"], default="scripted")
    parser.add_argument("--layer", choices=["memory", "redis"], default="memory")
    parser.add_argument("--levels", help="concurrent replies (default 1,50,200; letta: 1,5)")
    parser.add_argument("--min-samples", type=int, default=10, help="replies each way, at least")
    parser.add_argument("--burst", action="store_true", help="also send N at once, each way")
    parser.add_argument("--tokens", type=int, default=40, help="scripted: tokens per reply")
    parser.add_argument("--rate", type=float, default=20, help="scripted: tokens/s per reply")
    parser.add_argument("--first-token", type=float, default=0.3, help="scripted: s to 1st token")
    parser.add_argument("--sweep", default="", help="scripted: tokens/s per reply, e.g. 50,100")
    parser.add_argument("--sweep-seconds", type=float, default=2.0)
    parser.add_argument("--profile", action="store_true", help="py-spy daphne at the top level")
    parser.add_argument("--trace", action="store_true", help="time the send path in daphne")
    parser.add_argument("--processes", type=int, default=1, help="daphnes (Redis layer)")
    parser.add_argument(
        "--watch-elsewhere",
        action="store_true",
        help="send on a socket on another process than the one measured",
    )
    c.add_server_options(parser)
    c.add_server_choice(parser)
    args = parser.parse_args()
    args.levels = args.levels or ("1,50,200" if args.upstream == "scripted" else "1,5")
    args.message = "[[long:30]]" if args.upstream == "letta" else ""
    if (args.processes > 1 or args.watch_elsewhere) and args.layer != "redis":
        parser.error("--processes and --watch-elsewhere need --layer redis")
    c.raise_open_files()
    m = c.machine()

    with tempfile.TemporaryDirectory(prefix="lettachat-bench-relay-") as tmp:
        var_dir = Path(tmp)
        upstream = None
        if args.upstream == "scripted":
            port = c.free_port()
            upstream = c.start_upstream(
                port, var_dir / "upstream.log", tokens=args.tokens, rate=args.rate,
                first=args.first_token,
            )  # fmt: skip
            args.letta_url = f"http://127.0.0.1:{port}"
        else:
            from devtools.local_letta import harness

            args.letta_url = os.environ.get("LETTA_BASE_URL") or harness.start()
        daphnes: list[Any] = []
        try:
            with c.bench_database(f"relay_{args.upstream}_{args.layer}") as database_url:
                setup = prepare(args, database_url, var_dir, args.letta_url)
                port = c.free_port()
                extra = c.server_extra(args)
                trace = var_dir / "trace.jsonl"
                if args.trace:
                    extra["BENCH_TRACE"] = str(trace)
                env = c.server_env(
                    database_url=database_url, var_dir=var_dir, letta_url=args.letta_url,
                    layer=args.layer, **extra,
                )  # fmt: skip
                logs = [var_dir / f"daphne-{k}.log" for k in range(args.processes)]
                ports = [port] + [c.free_port() for _ in logs[1:]]
                daphnes = [
                    c.start_daphne(p, env, log, server=args.server)
                    for p, log in zip(ports, logs, strict=True)
                ]
                setup.update(
                    base_urls=[f"http://127.0.0.1:{p}" for p in ports],
                    daphne_pids=[d.pid for d in daphnes],
                    letta_url=args.letta_url,
                )
                out = asyncio.run(measure(args, setup))
                for daphne in daphnes:
                    c.stop(daphne)
                log = var_dir / "daphne.log"
                log.write_text("".join(k.read_text() for k in logs))
                ok = report(
                    args,
                    m,
                    out,
                    c.log_errors(
                        log,
                        f"relay-{args.upstream}-{args.layer}{processes_tag(args)}"
                        + (f"-{args.server}" if args.server != "daphne" else "")
                        + (f"-{args.name}" if args.name else ""),
                    ),
                    trace_summary(trace),
                )
        finally:
            for daphne in daphnes:
                c.stop(daphne)
            c.stop(upstream)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
