"""HTTP throughput: requests per second for the chat page under a load tool, and the median
latency.

    uv run python bench/http_throughput.py [--seconds 15] [--connections 32] [--messages 40]

Serves lettachat with one daphne process (as ``bin/run`` does; PostgreSQL ``bench_http``, the
scripted upstream as Letta) and loads, logged in (the session cookie in a header):

- the chat page of a conversation with ``--messages`` messages (its last 100 at most) and a
  sidebar of 60 conversations (its first 50),
- the same conversation switched to with htmx (the thread and the sidebar, no page chrome),
- the agent page (sidebar only),

each with ``wrk`` (``apt-get install wrk``; a small asyncio load generator when it is missing:
``--tool python``) for ``--seconds`` with ``--connections`` open connections. Reported:
requests per second, median and p99 latency, non-2xx answers. ``wrk`` runs on the same 2 cores
as the server: its own CPU is part of the picture.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c


def seed(messages: int) -> tuple[Any, Any, Any]:
    import random

    from long_history import assistant_text, user_text
    from scripted_upstream import AGENT_ID

    from conversations.models import Conversation, Message

    rng = random.Random(1)
    user, agent = c.bench_user(), c.bench_agent(AGENT_ID)
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    Conversation.objects.bulk_create(
        Conversation(
            letta_id=f"conv-http-{i}",
            agent=agent,
            owner=user,
            summary=f"A conversation about item {i}",
            last_message_at=t0 + timedelta(minutes=i),
        )
        for i in range(59)
    )
    thread = Conversation.objects.create(
        letta_id="conv-http-thread",
        agent=agent,
        owner=user,
        summary="The thread under load",
        last_message_at=t0 + timedelta(days=1),
    )
    Message.objects.bulk_create(
        Message(
            conversation=thread,
            letta_id=f"message-{i}",
            message_type=Message.Type.USER if i % 2 == 0 else Message.Type.ASSISTANT,
            content=user_text(rng) if i % 2 == 0 else assistant_text(rng, i),
            created_at=t0 + timedelta(seconds=30 * i),
        )
        for i in range(messages)
    )
    return user, agent, thread


def parse_ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(
    url: str, cookie: str, args: argparse.Namespace, headers: dict[str, str], connections: int
) -> dict:
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{args.seconds}s", "--latency",
               "-H", f"Cookie: {cookie}"]  # fmt: skip
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, check=True, timeout=args.seconds + 60
    ).stdout
    latency = dict(re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.M))
    if "99" not in latency:
        raise SystemExit(f"could not read wrk's output:\n{output}")
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)$", output, re.M)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": parse_ms(latency["50"]),
        "p99_ms": parse_ms(latency["99"]),
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
        "tool": "wrk",
    }


async def run_python(
    url: str, cookie: str, args: argparse.Namespace, headers: dict, connections: int
) -> dict:
    """A closed-loop load generator: ``connections`` keep-alive clients, as fast as answered."""
    import httpx

    times: list[float] = []
    bad = 0
    deadline = time.perf_counter() + args.seconds
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, headers={"Cookie": cookie, **headers}) as client:

        async def worker() -> None:
            nonlocal bad
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = await client.get(url)
                times.append((time.perf_counter() - t0) * 1000)
                bad += response.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        wall = time.perf_counter() - started
    return {
        "rps": len(times) / wall,
        "p50_ms": c.median(times),
        "p99_ms": c.percentile(times, 99),
        "requests": len(times),
        "non_2xx": bad,
        "socket_errors": "",
        "tool": "python (httpx)",
    }


def section_name(args: argparse.Namespace) -> str:
    return (
        "http-throughput"
        + (f"-{args.server}" if args.server != "daphne" else "")
        + (f"-{args.name}" if args.name else "")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument(
        "--connections", default="1,32", help="open connections: one run for each number"
    )
    parser.add_argument("--messages", type=int, default=40)
    parser.add_argument("--tool", choices=["wrk", "python"], default="wrk")
    parser.add_argument(
        "--profile", action="store_true",
        help="py-spy daphne while the chat page is loaded with the most connections",
    )  # fmt: skip
    c.add_server_options(parser)
    c.add_server_choice(parser)
    args = parser.parse_args()
    if args.tool == "wrk" and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk): using the Python load generator")
        args.tool = "python"
    c.raise_open_files()
    m = c.machine()
    results = []
    profile: Path | None = None
    with tempfile.TemporaryDirectory(prefix="lettachat-bench-http-") as tmp:
        var_dir = Path(tmp)
        port = c.free_port()
        upstream = c.start_upstream(port, var_dir / "upstream.log")
        letta_url = f"http://127.0.0.1:{port}"
        daphne = None
        try:
            with c.bench_database("http") as database_url:
                c.setup_django(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
                user, agent, thread = seed(args.messages)
                cookie = c.session_cookie(user)
                daphne_port = c.free_port()
                env = c.server_env(
                    database_url=database_url, var_dir=var_dir, letta_url=letta_url,
                    **c.server_extra(args),
                )  # fmt: skip
                log = var_dir / "daphne.log"
                daphne = c.start_daphne(daphne_port, env, log, server=args.server)
                base = f"http://127.0.0.1:{daphne_port}"
                targets = [
                    (f"chat page ({args.messages} messages, sidebar of 60)",
                     f"{base}/c/{thread.letta_id}/", {}),
                    ("the same, switched to with htmx", f"{base}/c/{thread.letta_id}/",
                     {"HX-Request": "true"}),
                    ("agent page (sidebar only)", f"{base}/a/{agent.letta_id}/", {}),
                ]  # fmt: skip
                import httpx

                levels = [int(n) for n in args.connections.split(",")]
                for label, url, headers in targets:
                    first = httpx.get(url, headers={"Cookie": cookie, **headers})
                    assert first.status_code == 200, (url, first.status_code)
                    for connections in levels:
                        cpu0 = c.cpu_seconds(daphne.pid)
                        t0 = time.perf_counter()
                        spy = (
                            c.py_spy(daphne.pid, f"{section_name(args)}-chat-page")
                            if args.profile and label == targets[0][0] and connections == levels[-1]
                            else contextlib.nullcontext(None)
                        )
                        with spy as sampled:
                            if args.tool == "wrk":
                                result = run_wrk(url, cookie, args, headers, connections)
                            else:
                                result = asyncio.run(
                                    run_python(url, cookie, args, headers, connections)
                                )
                        if sampled is not None:
                            profile = sampled
                        result["daphne_cpu_share"] = (c.cpu_seconds(daphne.pid) - cpu0) / (
                            time.perf_counter() - t0
                        )
                        result.update(page=label, bytes=len(first.content), connections=connections)
                        results.append(result)
                        print(f"{label}, {connections} connections: {result['rps']:.0f} "
                              f"requests/s, median {result['p50_ms']:.1f} ms, p99 "
                              f"{result['p99_ms']:.1f} ms", flush=True)  # fmt: skip
                c.stop(daphne)
                logged = c.log_errors(log, section_name(args))
        finally:
            c.stop(daphne)
            c.stop(upstream)
    lines = [
        c.section_head(
            "5. HTTP throughput"
            + (f", {args.server}" if args.server != "daphne" else "")
            + (f" ({args.name})" if args.name else ""),
            m,
        ),
        c.server_changes(args),
        f"One {args.server} process"
        + (" (as `bin/run` serves)" if args.server == "daphne" else " (uvloop, httptools)")
        + ", PostgreSQL, shipped settings; logged in "
        f"with a session cookie; {results[0]['tool']} for {args.seconds} s per page and number "
        "of connections (1: the latency of one person's request; more: throughput, where the "
        "median is mostly queueing), on the same 2 cores as the server. No target in the issue: "
        "these are the figures to compare later runs with.\n",
        "| page | bytes | connections | requests/s | median | p99 | requests | non-2xx | daphne "
        "CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['page']} | {r['bytes'] / 1000:.1f} KB | {r['connections']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.1f} ms"
            f" | {r['p99_ms']:.1f} ms | {r['requests']:,} | {r['non_2xx']} | "
            f"{r['daphne_cpu_share']:.0%} |"
        )
    if profile is not None:
        lines += [
            f"\nWhere daphne's CPU went while the chat page was loaded with {levels[-1]} "
            f"connections (py-spy, `{profile.relative_to(c.ROOT)}`):\n",
            c.profile_table(profile),
        ]
    if any(r["socket_errors"] for r in results) or logged:
        lines.append(
            f"\nSocket errors: {[r['socket_errors'] for r in results]}; daphne error lines: "
            f"{c.error_count(logged)} {logged[-1] if logged else ''}"
        )
    c.write_section(
        section_name(args),
        "\n".join(lines),
        {"machine": m, "command": c.command_line(), "pages": results, "daphne_errors": logged},
    )
    return 0 if all(r["non_2xx"] == 0 for r in results) and not logged else 1


if __name__ == "__main__":
    raise SystemExit(main())
