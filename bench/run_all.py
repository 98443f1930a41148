"""Run every benchmark and rewrite bench/RESULTS.md.

    uv run python bench/run_all.py [--only NAME[,NAME…]] [--skip NAME[,NAME…]] [--list]

Runs the commands below one after another (about 30 minutes in all; each writes its own section
of RESULTS.md and its raw figures to bench/results/), then puts a summary of every target at the
top of RESULTS.md. ``bench/peer_openwebui.py`` (Open WebUI side by side; it installs Open WebUI
in a virtualenv of its own) is not among them: run it by itself; its section is kept.
Hand-written notes between ``<!-- BEGIN findings -->`` and ``<!-- END findings -->`` are kept.
Needs PostgreSQL and Redis on their standard local ports, the local Letta server (started
through the project's harness if it is not running), Chromium at /usr/bin/chromium, wrk (or
http_throughput.py's own load generator) and npm (lighthouse.py installs Lighthouse into
bench/node_modules).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import _common as c

PY = "bench/"
UNFIXED = "pool,threads,dispatch,sweep,merge"  # the server as it was before these fixes
RUNS: list[tuple[str, list[str]]] = [
    ("relay-scripted-memory", ["relay_overhead.py", "--burst", "--trace", "--profile"]),
    ("relay-scripted-memory-sweep", ["relay_overhead.py", "--levels", "50", "--min-samples",
                                     "1", "--sweep", "20,50,100", "--sweep-seconds", "6",
                                     "--profile", "--name", "sweep"]),
    ("relay-scripted-memory-unfixed", ["relay_overhead.py", "--without", UNFIXED, "--name",
                                       "unfixed"]),
    ("relay-scripted-redis", ["relay_overhead.py", "--layer", "redis", "--profile"]),
    ("relay-scripted-redis-2proc-elsewhere", ["relay_overhead.py", "--layer", "redis",
                                              "--processes", "2", "--watch-elsewhere",
                                              "--profile"]),
    ("relay-scripted-redis-uvicorn", ["relay_overhead.py", "--layer", "redis", "--levels",
                                      "1,50", "--server", "uvicorn"]),
    ("relay-letta-memory", ["relay_overhead.py", "--upstream", "letta", "--min-samples", "20",
                            "--profile"]),
    ("long-history", ["long_history.py"]),
    ("staff-transcript", ["staff_transcript.py"]),
    ("connections-memory", ["connections.py"]),
    ("connections-redis", ["connections.py", "--layer", "redis"]),
    ("http-throughput", ["http_throughput.py"]),
    ("http-throughput-uvicorn", ["http_throughput.py", "--server", "uvicorn"]),
    ("http-throughput-unpooled", ["http_throughput.py", "--without", "pool", "--name",
                                  "unpooled"]),
    ("soak", ["soak_resume.py", "--processes", "2", "--redis"]),
    ("soak-faults", ["soak_faults.py"]),
    ("lighthouse", ["lighthouse.py"]),
]  # fmt: skip
SOAKS = {  # name: (title, what it does, target, summary row)
    "soak": (
        "Replies are never lost: the resume soak",
        "Against the real Letta server, with two daphne processes on PostgreSQL and Redis: the "
        "websocket is aborted at random points during replies (no close handshake), the page "
        "reconnects to the other process and resumes; what the page shows is compared with what "
        "Letta stored",
        "nothing lost, nothing duplicated",
        "replies never lost (soak)",
    ),
    "soak-faults": (
        "Never stuck, never twice: the fault soak",
        "PostgreSQL, Redis, two daphne processes and the real Letta server; each round a reply "
        "meets one fault at a random moment, in turn: Stop, Stop before the first token, a "
        "dropped connection, Letta hung (SIGSTOP 2-6 s), Letta killed (SIGKILL) and started "
        "again, the server process running the reply killed (SIGKILL; its page reconnects to the "
        "other, whose reaper takes the run over). Two pages (one on each process) are compared "
        "with what lettachat stored, and, once everything settled, the mirror with Letta's own "
        "message list",
        "nothing lost, duplicated, stuck, sent twice, or different from what Letta kept",
        "never stuck, never twice (fault soak)",
    ),
}
ORDER = ["summary"] + [name for name, _ in RUNS] + ["peer-openwebui", "findings"]


def run_soak(name: str, command: list[str]) -> bool:
    """A soak prints its figures and exits 1 on a loss: keep its last line as a section."""
    title, what, target, _ = SOAKS[name]
    started = time.perf_counter()
    m = c.machine()
    done = subprocess.run(
        [sys.executable, *command], cwd=c.ROOT, capture_output=True, text=True, check=False
    )
    minutes = (time.perf_counter() - started) / 60
    tail = [line for line in done.stdout.splitlines() if line.strip()][-1:]
    ok = done.returncode == 0
    lines = [
        f"## {title}",
        "",
        f"`uv run python {' '.join(command)}`",
        "",
        f"{c.machine_line(m)}.",
        "",
        f"{what} ({minutes:.1f} minutes).",
        "",
        "```",
        *(tail or [done.stderr[-2000:]]),
        "```",
        "",
        f"Target: {target}: {c.verdict(ok)}.",
    ]
    c.write_section(name, "\n".join(lines), {"machine": m, "output": tail, "ok": ok})
    return ok


def summary() -> str:
    """Every target, met or not, from the raw figures of the last runs."""
    raw = {p.stem: json.loads(p.read_text()) for p in c.RAW.glob("*.json")}
    rows: list[tuple[str, str, str]] = []

    def relay_rows(name: str, label: str) -> None:
        figures = raw.get(name)
        if not figures:
            return
        for level in figures["levels"]:
            r = level["ratios"]
            worst = max(r.values())
            rows.append(
                (
                    f"1. relay / direct <= 1.05 at the median and p95, {level['concurrent']} in "
                    f"flight ({label})",
                    f"first token x{r['ttft_median']:.2f} / x{r['ttft_p95']:.2f}, last token "
                    f"x{r['ttlt_median']:.2f} / x{r['ttlt_p95']:.2f}",
                    c.verdict(worst <= 1.05 and level["errors"] == 0),
                )
            )
        top = figures["levels"][-1]
        if "scripted" in name and top["latency_relay_ms"][0] == top["latency_relay_ms"][0]:
            p99 = top["latency_relay_ms"][1]
            rows.append(
                (
                    f"2. per-token p99 <= 20 ms at {top['concurrent']} in flight ({label})",
                    f"{p99:.1f} ms (p50 {top['latency_relay_ms'][0]:.1f} ms)",
                    c.verdict(p99 <= 20),
                )
            )

    relay_rows("relay-scripted-memory", "scripted upstream, in-memory layer")
    relay_rows("relay-scripted-redis", "scripted upstream, Redis layer")
    relay_rows(
        "relay-scripted-redis-2proc-elsewhere",
        "scripted upstream, Redis layer, 2 processes, each reply read on the other",
    )
    relay_rows("relay-scripted-redis-uvicorn", "scripted upstream, Redis layer, uvicorn")
    relay_rows("relay-letta-memory", "real Letta server")
    sweep = raw.get("relay-scripted-memory-sweep", {}).get("sweep", [])
    if sweep:
        best = max(sweep, key=lambda s: s["delivered_tokens_per_s"])
        rows.append(
            (
                "1. where the relay saturates (tokens/s per core)",
                f"at most {best['delivered_tokens_per_s']:,.0f} tokens/s relayed, daphne at "
                f"{best['daphne_cpu_share']:.0%} of a core ({best['tokens_per_cpu_s']:,.0f} "
                "tokens per CPU-second)",
                "measured",
            )
        )
    history = raw.get("long-history")
    if history:
        for target, ok in history["verdicts"].items():
            rows.append(
                (f"3. {target.split(' (')[0]}", target.split(" (", 1)[-1][:-1], c.verdict(ok))
            )
    peer = raw.get("peer-openwebui", {}).get("browser")
    if peer:
        for what, label in (("thread", "last message of 10,000"), ("sidebar", "first title")):
            ours, theirs = peer[f"lettachat {what}"], peer[f"Open WebUI {what}"]
            rows.append(
                (
                    f"3. peer run: {label} on screen, lettachat / Open WebUI 0.12.4",
                    f"{ours['shown_ms']:.0f} ms / {theirs['shown_ms']:.0f} ms; "
                    f"{ours['shown_wire'] / 1e6:.2f} MB / {theirs['shown_wire'] / 1e6:.2f} MB "
                    "on the wire",
                    "measured",
                )
            )
    for layer in ("memory", "redis"):
        conn = raw.get(f"connections-{layer}")
        if conn:
            rows.append(
                (
                    f"4. memory per idle websocket ({layer} layer)",
                    f"{conn['per_idle_socket_kb']:.1f} KB",
                    "measured",
                )
            )
            errors = (
                conn["reply_errors"]
                + conn["open_errors"]
                + c.error_count(conn["daphne_errors"])
                + (conn["idle_open"] - conn["idle_alive"])
            )
            rows.append(
                (
                    f"4. 1,000 idle + 200 streaming sockets, no error ({layer} layer)",
                    f"{errors} errors; per-token p99 {conn['token_p99_ms'] / 1000:.1f} s",
                    c.verdict(errors == 0),
                )
            )
            rows.append(
                (
                    f"4. RSS <= 250 MB under that load ({layer} layer)",
                    f"{conn['rss_peak_kb'] / 1024:.0f} MB",
                    c.verdict(conn["rss_peak_kb"] <= 250 * 1024),
                )
            )
    for server in ("", "-uvicorn"):
        for page in raw.get(f"http-throughput{server}", {}).get("pages", []):
            if page["page"].startswith("chat page"):
                rows.append(
                    (
                        f"5. chat page, {page['connections']} connection(s)"
                        + (f" ({server[1:]})" if server else " (daphne)"),
                        f"{page['rps']:.0f} requests/s, median {page['p50_ms']:.1f} ms",
                        "measured",
                    )
                )
    staff = raw.get("staff-transcript")
    if staff:
        for target, ok in staff["verdicts"].items():
            rows.append(
                (f"6. {target.split(' (')[0]}", target.split(" (", 1)[-1][:-1], c.verdict(ok))
            )
    lighthouse = raw.get("lighthouse")
    if lighthouse and lighthouse["pages"]:
        lowest = {
            k: min(p["scores"][k] for p in lighthouse["pages"])
            for k in ("accessibility", "best-practices")
        }
        rows.append(
            (
                "Lighthouse accessibility and best practices >= 98 on every page, desktop and "
                "mobile",
                f"lowest: accessibility {lowest['accessibility']}, best practices "
                f"{lowest['best-practices']} ({len(lighthouse['pages'])} runs)",
                c.verdict(lighthouse["ok"]),
            )
        )
    for name, (_, _, _, row) in SOAKS.items():
        if soak := raw.get(name):
            rows.append((row, _clip(" ".join(soak["output"]), 260), c.verdict(soak["ok"])))
    lines = [
        "## Summary: every target",
        "",
        "From the sections below (each names its command and time). Findings, causes and "
        "profiles for the targets not met are at the end.",
        "",
        "| target | figure | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {t} | {f} | {v} |" for t, f, v in rows]
    return "\n".join(lines)


def _clip(text: str, most: int) -> str:
    """The text, cut after its last whole clause that fits in ``most`` characters."""
    if len(text) <= most:
        return text
    cut = text[: most + 1]  # a clause ending right at the limit still counts as whole
    return cut[: max(cut.rfind(", "), cut.rfind("; "))]


def reorder() -> None:
    """RESULTS.md: the head, the summary, then the sections in ORDER, then any others."""
    text = c.RESULTS.read_text()
    found = {
        name: block
        for block, name in re.findall(r"(<!-- BEGIN (\S+) -->.*?<!-- END \2 -->)", text, re.S)
    }
    ordered = [found[name] for name in ORDER if name in found]
    ordered += [block for name, block in found.items() if name not in ORDER]
    c.RESULTS.write_text(c.RESULTS_HEAD + "\n" + "\n\n".join(ordered) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="", help="run only these (comma-separated names)")
    parser.add_argument("--skip", default="", help="skip these (comma-separated names)")
    parser.add_argument("--list", action="store_true", help="list the runs and exit")
    args = parser.parse_args()
    if args.list:
        for name, command in RUNS:
            print(f"{name:32} uv run python {PY}{' '.join(command)}")
        return 0
    only = set(filter(None, args.only.split(",")))
    skip = set(filter(None, args.skip.split(",")))
    failed = []
    for name, command in RUNS:
        if (only and name not in only) or name in skip:
            continue
        print(f"\n=== {name}: uv run python {PY}{' '.join(command)}", flush=True)
        started = time.perf_counter()
        if name in SOAKS:
            ok = run_soak(name, [PY + command[0], *command[1:]])
        else:
            ok = (
                subprocess.run(
                    [sys.executable, PY + command[0], *command[1:]], cwd=c.ROOT
                ).returncode
                == 0
            )
        print(f"=== {name}: {'targets met' if ok else 'a target missed or an error'} "
              f"({(time.perf_counter() - started) / 60:.1f} min)", flush=True)  # fmt: skip
        if not ok:
            failed.append(name)
    c.write_section("summary", summary(), {"machine": c.machine(), "missed": failed})
    reorder()
    print(f"\nRESULTS.md rewritten; targets missed or errors in: {', '.join(failed) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
