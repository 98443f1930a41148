"""Connections: memory per idle websocket, and one process holding 1,000 idle sockets while 200
replies stream.

    uv run python bench/connections.py [--idle 1000] [--streaming 200] [--layer memory|redis]
                                       [--tokens 100] [--rate 20] [--rounds 2]

Serves lettachat with one daphne process (PostgreSQL ``bench_connections``; the scripted upstream
``bench/scripted_upstream.py`` as Letta; ``LETTACHAT_MAX_SOCKETS_PER_USER=5000`` and
``LETTACHAT_SEND_RATE=100000/1`` because one bench person holds the idle sockets; each streaming
socket is a person's own, as in life). Each socket is opened
as a page opens it (connect with the session cookie and Origin, then ``resume``) on a
conversation of its own. Measured, from /proc/<pid>/status:

1. RSS after a warm-up (one page, one reply), then with ``--idle`` sockets open: memory per idle
   socket = the difference / ``--idle``;
2. with those still open, ``--streaming`` more sockets each get a reply (``--rounds`` rounds of
   ``--tokens`` tokens at ``--rate`` tokens/s): peak RSS (sampled every 100 ms), every reply
   complete, every idle socket still answering a ping, and no error anywhere (frames, closes,
   daphne's log). Target: no error, RSS <= 250 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import _common as c
from relay_overhead import ERROR_FRAME


async def stream_reply(ws: Any, expected: int) -> dict[str, Any]:
    tokens, latencies, error = 0, [], ""
    seen: set[str] = set()
    try:
        await ws.send(json.dumps({"message": "connections", "otid": str(uuid.uuid4())}))
        while True:
            frame = await asyncio.wait_for(ws.recv(), timeout=c.FRAME_TIMEOUT)
            wall = time.time()
            if c.TOKEN_FRAME.search(frame):
                stamps, brought = c.new_stamps(frame, seen)
                tokens += brought
                latencies += [(wall - float(s)) * 1000 for s in stamps]
            elif ERROR_FRAME.search(frame):
                error = "error shown"
            if c.idle(frame):
                break
    except TimeoutError:
        error = f"no frame for {c.FRAME_TIMEOUT:g} s, and the reply was not over"
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    if not error and tokens != expected:
        error = f"{tokens} of {expected} tokens"
    return {"tokens": tokens, "latencies": latencies, "error": error}


async def measure(args: argparse.Namespace, setup: dict[str, Any]) -> dict[str, Any]:
    base_url, cookie, pid = setup["base_url"], setup["cookie"], setup["daphne_pid"]
    idle_ids, streaming_ids = setup["idle"], setup["streaming"]
    out: dict[str, Any] = {}

    # Warm-up: a socket, a reply, and back to an idle process.
    warm = await c.open_page(base_url, streaming_ids[0], setup["streaming_cookies"][0])
    await stream_reply(warm, args.tokens)
    await warm.close()
    await asyncio.sleep(2)  # let the closed socket's state go
    out["rss_before_kb"] = c.rss_kb(pid)
    print(f"RSS after warm-up: {out['rss_before_kb'] / 1024:.1f} MB", flush=True)

    t0 = time.perf_counter()
    idle_sockets: list[Any] = []
    open_errors: list[str] = []
    for i in range(0, len(idle_ids), 100):
        batch = await asyncio.gather(
            *(c.open_page(base_url, cid, cookie) for cid in idle_ids[i : i + 100]),
            return_exceptions=True,
        )
        for result in batch:
            if isinstance(result, BaseException):
                open_errors.append(f"{type(result).__name__}: {result}")
            else:
                idle_sockets.append(result)
    out["open_seconds"] = time.perf_counter() - t0
    await asyncio.sleep(2)
    out["rss_idle_kb"] = c.rss_kb(pid)
    out["idle_open"] = len(idle_sockets)
    out["per_idle_socket_kb"] = (out["rss_idle_kb"] - out["rss_before_kb"]) / max(
        1, len(idle_sockets)
    )
    print(f"{len(idle_sockets)} idle sockets open in {out['open_seconds']:.1f} s; RSS "
          f"{out['rss_idle_kb'] / 1024:.1f} MB: {out['per_idle_socket_kb']:.1f} KB per socket",
          flush=True)  # fmt: skip

    streaming = []
    pages = list(zip(streaming_ids, setup["streaming_cookies"], strict=True))
    for i in range(0, len(pages), 100):
        batch = await asyncio.gather(
            *(c.open_page(base_url, cid, person) for cid, person in pages[i : i + 100]),
            return_exceptions=True,
        )
        for result in batch:
            if isinstance(result, BaseException):
                open_errors.append(f"{type(result).__name__}: {result}")
            else:
                streaming.append(result)
    peak = [c.rss_kb(pid)]
    sampling = True

    async def sample() -> None:
        while sampling:
            peak.append(c.rss_kb(pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    cpu0, t1 = c.cpu_seconds(pid), time.perf_counter()
    replies: list[dict[str, Any]] = []
    for r in range(args.rounds):
        print(f"round {r + 1}: {len(streaming)} replies streaming…", flush=True)
        replies += await asyncio.gather(*(stream_reply(ws, args.tokens) for ws in streaming))
    wall = time.perf_counter() - t1
    cpu = c.cpu_seconds(pid) - cpu0
    sampling = False
    await sampler
    out["rss_peak_kb"] = max(peak)
    out["rss_after_kb"] = c.rss_kb(pid)

    # Are the idle sockets still served?
    async def alive(ws: Any) -> bool:
        try:
            await asyncio.wait_for(await ws.ping(), timeout=10)
            return True
        except Exception:
            return False

    alive_count = sum(await asyncio.gather(*(alive(ws) for ws in idle_sockets)))
    latencies = [x for r in replies for x in r["latencies"]]
    errors = [r["error"] for r in replies if r["error"]]
    out.update(
        streaming_open=len(streaming),
        replies=len(replies),
        reply_errors=len(errors),
        first_reply_errors=errors[:3],
        open_errors=len(open_errors),
        first_open_errors=open_errors[:3],
        idle_alive=alive_count,
        tokens=sum(r["tokens"] for r in replies),
        token_p50_ms=c.median(latencies),
        token_p99_ms=c.percentile(latencies, 99),
        daphne_cpu_share=cpu / wall,
        stream_seconds=wall,
        hwm_kb=_hwm(pid),
    )
    for ws in idle_sockets + streaming:
        await ws.close()
    return out


def _hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def report(args: argparse.Namespace, m: dict, out: dict, logged: list[str]) -> bool:
    layer = "in-memory" if args.layer == "memory" else "Redis"
    errors = out["reply_errors"] + out["open_errors"] + (out["idle_open"] - out["idle_alive"])
    errors += c.error_count(logged)
    all_open = out["idle_open"] == args.idle and out["streaming_open"] == args.streaming
    no_errors = errors == 0 and all_open
    rss_ok = out["rss_peak_kb"] <= 250 * 1024
    mb = 1024
    lines = [
        c.section_head(
            f"4. Connections: {layer} layer" + (f" ({args.name})" if args.name else ""), m
        ),
        c.server_changes(args),
        f"One daphne process, {layer} channel layer, PostgreSQL, the scripted upstream; "
        + ", ".join(f"`{k}={v}`" for k, v in c.SERVER_LIMITS.items())
        + " (one bench person holds the idle sockets, and each streaming socket is a person's "
        "own; every socket on a conversation of its own, opened as a page opens it). "
        f"Streaming: {args.rounds} rounds of {args.streaming} replies of {args.tokens} tokens at "
        f"{args.rate:g} tokens/s, while the idle sockets stay open.\n",
        "| figure | value |",
        "|---|---:|",
        f"| RSS after warm-up | {out['rss_before_kb'] / mb:.1f} MB |",
        f"| RSS with {out['idle_open']:,} idle sockets | {out['rss_idle_kb'] / mb:.1f} MB |",
        f"| **memory per idle socket** | **{out['per_idle_socket_kb']:.1f} KB** |",
        f"| time to open {out['idle_open']:,} sockets (100 at a time) | "
        f"{out['open_seconds']:.1f} s |",
        f"| peak RSS, {out['idle_open']:,} idle + {out['streaming_open']} streaming "
        f"(sampled every 100 ms) | {out['rss_peak_kb'] / mb:.1f} MB |",
        f"| RSS high-water mark of the process (VmHWM) | {out['hwm_kb'] / mb:.1f} MB |",
        f"| replies complete | {out['replies'] - out['reply_errors']} of {out['replies']} |",
        f"| idle sockets still answering a ping after | {out['idle_alive']:,} of "
        f"{out['idle_open']:,} |",
        f"| sockets refused or failed to open | {out['open_errors']} |",
        f"| errors in daphne's log | {c.error_count(logged)} |",
        f"| per-token latency while streaming, p50 / p99 | {out['token_p50_ms']:.1f} / "
        f"{out['token_p99_ms']:.1f} ms |",
        f"| daphne CPU while streaming | {out['daphne_cpu_share']:.0%} of a core |",
        "",
        f"Target: {args.idle:,} idle and {args.streaming} streaming sockets without an error: "
        f"{c.verdict(no_errors)}; RSS <= 250 MB under that load: {c.verdict(rss_ok)} "
        f"({out['rss_peak_kb'] / mb:.0f} MB).",
    ]
    if out["first_reply_errors"] or out["first_open_errors"] or logged:
        lines.append(
            f"\nFirst errors: {out['first_reply_errors'] + out['first_open_errors'] + logged[:3]}"
            + (f"; {logged[-1]}" if logged else "")
        )
    ok = no_errors and rss_ok
    c.write_section(
        f"connections-{args.layer}" + (f"-{args.name}" if args.name else ""),
        "\n".join(lines),
        {"machine": m, "command": c.command_line(), **out, "daphne_errors": logged[:20], "ok": ok},
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--streaming", type=int, default=200)
    parser.add_argument("--layer", choices=["memory", "redis"], default="memory")
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--rate", type=float, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    c.add_server_options(parser)
    args = parser.parse_args()
    c.raise_open_files()
    m = c.machine()
    with tempfile.TemporaryDirectory(prefix="lettachat-bench-connections-") as tmp:
        var_dir = Path(tmp)
        port = c.free_port()
        upstream = c.start_upstream(
            port, var_dir / "upstream.log", tokens=args.tokens, rate=args.rate
        )
        letta_url = f"http://127.0.0.1:{port}"
        daphne = None
        try:
            with c.bench_database(f"connections_{args.layer}") as database_url:
                c.setup_django(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
                from scripted_upstream import AGENT_ID

                from conversations.models import Conversation

                user, agent = c.bench_user(), c.bench_agent(AGENT_ID)
                # The idle pages are one person's; each streaming page is a person's own, as in
                # life (one person may have only a few replies running at once, and their sends
                # queue on a lock of their own: one person for all would measure that queue).
                people = [c.bench_user(f"bench-stream-{i}") for i in range(args.streaming)]
                ids = [f"conv-conn-{uuid.uuid4()}" for _ in range(args.idle + args.streaming)]
                owners = [user] * args.idle + people
                Conversation.objects.bulk_create(
                    Conversation(letta_id=cid, agent=agent, owner=owner)
                    for cid, owner in zip(ids, owners, strict=True)
                )
                daphne_port = c.free_port()
                env = c.server_env(
                    database_url=database_url, var_dir=var_dir, letta_url=letta_url,
                    layer=args.layer, **c.server_extra(args),
                )  # fmt: skip
                log = var_dir / "daphne.log"
                daphne = c.start_daphne(daphne_port, env, log)
                setup = {
                    "base_url": f"http://127.0.0.1:{daphne_port}",
                    "cookie": c.session_cookie(user),
                    "streaming_cookies": [c.session_cookie(person) for person in people],
                    "daphne_pid": daphne.pid,
                    "idle": ids[: args.idle],
                    "streaming": ids[args.idle :],
                }
                out = asyncio.run(measure(args, setup))
                c.stop(daphne)
                ok = report(
                    args,
                    m,
                    out,
                    c.log_errors(
                        log, f"connections-{args.layer}" + (f"-{args.name}" if args.name else "")
                    ),
                )
        finally:
            c.stop(daphne)
            c.stop(upstream)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
