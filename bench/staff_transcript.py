"""The staff console's transcript of a 10,000-message thread: server time, bytes and queries.

    uv run python bench/staff_transcript.py [--messages 10000] [--repeat 20] [--runs 3]

Seeds a throwaway PostgreSQL database (``bench_staff``) the way ``bench/long_history.py`` does
(one person, one thread of ``--messages`` messages with markdown, code, reasoning and tool calls,
and a few other conversations), then asks for a conversation's admin page, which shows its
transcript 100 messages at a time, at the first, middle and last page, as a superuser through
Django's test client (the whole middleware stack and the admin, no network). Each page: median
and p95 of ``--repeat`` requests after 3 warm-ups, in each of ``--runs`` runs; the spread is the
smallest and largest of the runs' medians. Every request also writes its audit event (as in
production). The conversations list (the admin's changelist, with message counts) is measured
the same way for scale, and the owner's own chat page of the same thread (section 3's figure)
for reference: the machine is shared, and that page shows how loaded it was.

Target: the transcript page in < 100 ms server time at any depth, under 200 KB, with as many
queries at the last page as at the first (``tests/test_staff_conversation_admin.py`` holds the
size and the query count).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as c
import long_history

# The person's own page of the same thread (its last 100 messages), measured in the same runs:
# how loaded the machine was (section 3 has it alone).
REFERENCE = "for reference: the chat page of the same thread (its owner, last 100 messages)"


def measure(client: Any, url: str, repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    for _ in range(3):
        client.get(url)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        response = client.get(url)
        times.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, (url, response.status_code)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    return {
        "median_ms": c.median(times),
        "p95_ms": c.percentile(times, 95),
        "bytes": len(response.content),
        "queries": len(queries),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    m = c.machine()
    with (
        tempfile.TemporaryDirectory(prefix="lettachat-bench-staff-") as tmp,
        c.bench_database("staff") as database_url,
    ):
        # Nothing here reaches Letta: the admin reads the mirror.
        c.setup_django(
            database_url=database_url,
            var_dir=Path(tmp),
            letta_url=f"http://127.0.0.1:{c.free_port()}",
        )
        seeded = long_history.seed(args, "agent-bench-staff")
        labels, runs = measure_pages(args, seeded)
    return report(args, m, seeded, labels, runs)


def measure_pages(
    args: argparse.Namespace, seeded: dict[str, Any]
) -> tuple[list[str], list[dict[str, dict[str, Any]]]]:
    from django.contrib.auth import get_user_model
    from django.test import Client

    boss = get_user_model().objects.create_superuser("boss", password="x" * 20)
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(boss)
    owner = Client(HTTP_HOST="127.0.0.1")
    owner.force_login(seeded["user"])
    base = f"/admin/conversations/conversation/{seeded['long'].pk}/change/"
    last = -(-args.messages // 100)
    pages = {
        "transcript, page 1 (oldest 100)": f"{base}?page=1",
        f"transcript, page {last // 2} (the middle)": f"{base}?page={last // 2}",
        f"transcript, page {last} (the newest)": f"{base}?page={last}",
        f"conversations list ({args.conversations:,}, with message counts)":
            "/admin/conversations/conversation/",
        REFERENCE: f"/c/{seeded['long'].letta_id}/",
    }  # fmt: skip
    runs: list[dict[str, dict[str, Any]]] = []
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}:", flush=True)
        figures = {
            label: measure(owner if label == REFERENCE else client, url, args.repeat)
            for label, url in pages.items()
        }
        for label, f in figures.items():
            print(
                f"  {label}: {f['median_ms']:.1f} ms (p95 {f['p95_ms']:.1f}), "
                f"{f['bytes'] / 1000:.1f} KB, {f['queries']} queries",
                flush=True,
            )
        runs.append(figures)
    return list(pages), runs


def report(args, m, seeded, labels: list[str], runs: list[dict[str, dict[str, Any]]]) -> int:
    rows, summary = [], {}
    for label in labels:
        medians = [run[label]["median_ms"] for run in runs]
        p95s = [run[label]["p95_ms"] for run in runs]
        sizes = {run[label]["bytes"] for run in runs}
        queries = sorted({run[label]["queries"] for run in runs})
        summary[label] = {
            "median_ms": c.median(medians), "min_median_ms": min(medians),
            "max_median_ms": max(medians), "p95_ms": max(p95s), "bytes": max(sizes),
            "queries": queries,
        }  # fmt: skip
        s = summary[label]
        rows.append(
            f"| {label} | {s['median_ms']:.1f} ms | {s['min_median_ms']:.1f} to "
            f"{s['max_median_ms']:.1f} ms | {s['p95_ms']:.1f} ms | {s['bytes'] / 1000:.0f} KB | "
            f"{', '.join(map(str, queries))} |"
        )
    transcripts = [s for label, s in summary.items() if label.startswith("transcript")]
    slowest = max(s["max_median_ms"] for s in transcripts)
    largest = max(s["bytes"] for s in transcripts)
    query_counts = sorted({q for s in transcripts for q in s["queries"]})
    verdicts = {
        f"staff transcript page < 100 ms at any depth (slowest run's median {slowest:.0f} ms)":
            slowest < 100,
        f"staff transcript page < 200 KB ({largest / 1000:.0f} KB)": largest < 200_000,
        f"staff transcript queries independent of depth ({query_counts})":
            len(query_counts) == 1,
    }  # fmt: skip
    lines = [
        c.section_head("6. The staff console: a 10,000-message transcript", m),
        f"PostgreSQL, seeded like section 3: one thread of {args.messages:,} messages "
        f"({seeded['content_chars_mean']:.0f} characters on average) among "
        f"{args.conversations:,} conversations. A superuser through Django's test client in this "
        "process (the admin and the whole middleware stack; each request also writes its audit "
        f"event); median and p95 of {args.repeat} requests after 3 warm-ups, in each of "
        f"{len(runs)} runs: the median of the runs' medians, their spread (smallest to largest), "
        "the largest p95.\n",
        "| page | median | spread of the runs | p95 | bytes | queries |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
        "",
        "Targets:",
        "",
        *[f"- {target}: {c.verdict(ok)}" for target, ok in verdicts.items()],
    ]
    c.write_section(
        "staff-transcript",
        "\n".join(lines),
        {"machine": m, "pages": summary, "runs": runs, "verdicts": verdicts},
    )
    return 0 if all(verdicts.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
