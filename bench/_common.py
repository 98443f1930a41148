"""What the bench commands share: a throwaway database, Django, a logged-in session, daphne and
the scripted upstream in subprocesses, websocket helpers, statistics, and ``RESULTS.md``.

Each command writes its own section of ``bench/RESULTS.md`` (between ``<!-- BEGIN name -->`` and
``<!-- END name -->``; the text around the sections is kept) and its raw figures to
``bench/results/<name>.json``.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import shlex
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "RESULTS.md"
RAW = BENCH / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# The server under test may take as many frames and sockets as a load generator sends.
# One bench user sends every message and holds every socket: the limits per person are lifted.
SERVER_LIMITS = {
    "LETTACHAT_SEND_RATE": "100000/1",
    "LETTACHAT_MAX_SOCKETS_PER_USER": "5000",
    "LETTACHAT_MAX_RUNNING_REPLIES": "5000",
}
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")


def command_line() -> str:
    """How this command was run, as a person would type it."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    return shlex.join(["uv", "run", "python", str(shown), *sys.argv[1:]])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path, seconds: float = 30):
    deadline = time.monotonic() + seconds
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise SystemExit(f"{process.args[:4]} did not start; see {log}")
        time.sleep(0.05)  # polling a port against a deadline


def raise_open_files() -> None:
    """Thousands of sockets: lift the soft limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- The machine ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def machine_line(m: dict[str, Any] | None = None) -> str:
    m = m or machine()
    return (
        f"{m['date']}; {m['nproc']} cores ({m['cpu']}), {m['memory_gb']} GB; "
        f"Python {m['python']}; load average at start {m['load_1m']}"
    )


def rss_kb(pid: int) -> int:
    """Resident memory of a process, from /proc (kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- Statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), linear between closest ranks; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


# --- Database and Django -------------------------------------------------------------------------


@contextmanager
def bench_database(name: str, *, keep: bool = False) -> Iterator[str]:
    """A fresh PostgreSQL database ``bench_<name>`` (dropped after unless ``keep``); its URL.

    Falls back to SQLite in a temporary directory when PostgreSQL does not answer.
    """
    import psycopg

    db = f"bench_{name}"
    base = POSTGRES.rsplit("/", 1)[0]
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        import tempfile

        print("PostgreSQL does not answer: using SQLite", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"lettachat-bench-{name}-") as tmp:
            yield f"sqlite:///{tmp}/db.sqlite3"
        return
    with admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{db}"')
    try:
        yield f"{base}/{db}"
    finally:
        if not keep:
            with psycopg.connect(POSTGRES, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def setup_django(*, database_url: str, var_dir: Path, letta_url: str) -> None:
    """Configure this process's Django for the bench database, and migrate it."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "lettachat.settings"
    os.environ["DATABASE_URL"] = database_url
    os.environ["LETTACHAT_VAR_DIR"] = str(var_dir)
    os.environ["LETTA_BASE_URL"] = letta_url
    # No key given: the settings use the local server's own key when letta_url is that server.
    os.environ.pop("LETTA_API_KEY", None)
    os.environ.pop("REDIS_URL", None)  # this process only seeds and logs in
    # Not a line per request of this process's own (servers under test still log theirs).
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def bench_user(username: str = "bench"):
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=username)
    return user


def session_cookie(user) -> str:
    """``sessionid=…`` for ``user``, as a logged-in browser would send it."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}"


def bench_agent(letta_id: str, name: str = "bench agent"):
    from conversations.models import Agent

    # Shared: the bench's conversations are on this agent itself (a personal agent's own
    # conversations go to a person's copy, made in Letta, which the scripted upstream has not).
    agent, _ = Agent.objects.update_or_create(
        letta_id=letta_id,
        defaults={"name": name, "visible_to_users": True, "sharing": Agent.Sharing.SHARED},
    )
    return agent


# --- Processes -----------------------------------------------------------------------------------


def server_env(
    *, database_url: str, var_dir: Path, letta_url: str, layer: str = "memory", **extra: str
) -> dict[str, str]:
    """The environment of the daphne under test: ``layer`` is "memory" or "redis"."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "lettachat.settings",
        "DATABASE_URL": database_url,
        "LETTACHAT_VAR_DIR": str(var_dir),
        "LETTA_BASE_URL": letta_url,
        "LETTA_API_KEY": "",
        "LOG_LEVEL": "WARNING",
        **SERVER_LIMITS,
        **extra,
    }
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    if layer == "redis":
        env["REDIS_URL"] = REDIS
        env["CHANNEL_LAYER_PREFIX"] = f"bench-{uuid.uuid4().hex[:8]}"
        # Page fragments over Redis pub/sub, the default (said here too, whatever the caller's
        # environment says); `--without pubsub` measures the list layer.
        env.setdefault("LETTACHAT_FRAGMENTS_PUBSUB", "true")
    else:
        env.pop("REDIS_URL", None)
    return env


WITHOUT = {
    "pool": "no PostgreSQL connection pool (`DATABASE_POOL=false`: a new connection for every "
    "request and every database call)",
    "threads": "the websocket side's database calls all on asgiref's one thread",
    "dispatch": "channels' hop to the database thread before every relayed fragment",
    "sweep": "channels' own in-memory layer (a sweep of every channel on every receive and "
    "group send)",
    "merge": "every piece relayed as its own fragment, even when pieces queue up",
    "pubsub": "page fragments over channels_redis's own layer (lists in Redis, round trips per "
    "message) rather than its pub/sub layer",
}


def add_server_options(parser: Any) -> None:
    """Options that change the server under test (see _daphne.py)."""
    parser.add_argument(
        "--without",
        default="",
        help=f"comma-separated shipped fixes to take out, to measure them: {', '.join(WITHOUT)}",
    )
    parser.add_argument("--name", default="", help="a label for this run's RESULTS.md section")


def server_extra(args: Any) -> dict[str, str]:
    fixes = {f for f in args.without.split(",") if f}
    if unknown := fixes - set(WITHOUT):
        raise SystemExit(f"unknown --without: {unknown}")
    extra = {"BENCH_WITHOUT": ",".join(sorted(fixes))} if fixes else {}
    if "pool" in fixes:
        extra["DATABASE_POOL"] = "false"
    return extra


def server_changes(args: Any) -> str:
    """How the server differs from the shipped one, for a report ("" when it does not)."""
    changes = [WITHOUT[f] for f in args.without.split(",") if f]
    if not changes:
        return ""
    return (
        "**Without some of the shipped fixes** (not the shipped server; to measure what they "
        "are worth, `bench/_daphne.py` takes them out): " + "; ".join(changes) + ".\n"
    )


def start_daphne(
    port: int, env: dict[str, str], log: Path, *, server: str = "daphne"
) -> subprocess.Popen[bytes]:
    """The app served on ``port``: by daphne (through ``_daphne.py``, which can take shipped fixes
    out and trace), or by ``server="uvicorn"`` (uvloop and httptools, as gunicorn's uvicorn
    workers serve it in production: ``uv sync --extra uvicorn``)."""
    if server == "uvicorn":
        command = [sys.executable, "-m", "uvicorn", "lettachat.asgi:application", "--host",
                   "127.0.0.1", "--port", str(port), "--loop", "uvloop", "--http", "httptools",
                   "--ws", "websockets", "--no-access-log", "--log-level", "warning"]  # fmt: skip
        if env.get("BENCH_WITHOUT") or env.get("BENCH_TRACE"):
            raise SystemExit("--without and --trace work with daphne only")
    else:
        command = [sys.executable, str(BENCH / "_daphne.py"), "-b", "127.0.0.1", "-p", str(port),
                   "lettachat.asgi:application"]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    wait_for_port(port, process, log)
    return process


def add_server_choice(parser: Any) -> None:
    parser.add_argument(
        "--server",
        choices=["daphne", "uvicorn"],
        default="daphne",
        help="what serves the app (uvicorn: uv sync --extra uvicorn)",
    )


def start_upstream(
    port: int, log: Path, *, tokens: int = 30, rate: float = 20, first: float = 0.3
) -> subprocess.Popen[bytes]:
    upstream = subprocess.Popen(
        [sys.executable, str(BENCH / "scripted_upstream.py"), "--port", str(port),
         "--tokens", str(tokens), "--rate", str(rate), "--first-token", str(first)],
        cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    wait_for_port(port, upstream, log)
    return upstream


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def log_errors(log: Path, keep_as: str = "") -> list[str]:
    """What a server logged as errors: each ERROR line and each traceback's exception line.

    With ``keep_as`` and any error, the log is kept as ``bench/logs/<keep_as>.log`` (its end).
    """
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    found: list[str] = []
    in_traceback = False
    for line in lines:
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line[0].isspace() and not line.startswith("During"):
            found.append(line)  # the exception that ended the traceback
            in_traceback = False
        elif " ERROR " in line or line.startswith("ERROR"):
            found.append(line)
    if found and keep_as:
        kept = BENCH / "logs" / f"{keep_as}.log"
        kept.parent.mkdir(exist_ok=True)
        kept.write_text("\n".join(lines[-3000:]) + "\n")
        found.append(f"(log kept in {kept.relative_to(ROOT)})")
    return found


def error_count(logged: list[str]) -> int:
    return sum(1 for line in logged if not line.startswith("(log kept"))


@contextmanager
def py_spy(pid: int, name: str, *, seconds: float | None = None) -> Iterator[Path]:
    """Sample ``pid`` with py-spy while the block runs; a collapsed-stack file in bench/profiles.

    Only the thread that holds the GIL is sampled (``--gil``): where the process's Python CPU
    goes. Without it every thread is sampled, so the database threads waiting on PostgreSQL's
    answers came out as "psycopg 45 %" of a profile that was mostly waiting (2026-12-04).
    """
    out = BENCH / "profiles" / f"{name}.txt"
    out.parent.mkdir(exist_ok=True)
    spy = ROOT / ".venv" / "bin" / "py-spy"
    command = [str(spy), "record", "--pid", str(pid), "--format", "raw", "--output", str(out),
               "--rate", "200", "--nonblocking", "--gil"]  # fmt: skip
    if seconds:
        command += ["--duration", str(int(seconds))]
    recorder = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attaches
    try:
        yield out
    finally:
        recorder.send_signal(2)  # SIGINT: py-spy writes what it has
        try:
            recorder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            recorder.kill()


def profile_summary(path: Path, top: int = 12) -> list[tuple[str, float, float]]:
    """(function, % of samples anywhere on the stack, % as the innermost frame) from a py-spy
    collapsed-stack file, the heaviest first (by inclusive share)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_name(f) for f in stack.split(";") if f]
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + n
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n
    if not total:
        return []
    ranked = sorted(own, key=own.get, reverse=True)[:top]  # type: ignore[arg-type]
    return [(f, 100 * inclusive[f] / total, 100 * own[f] / total) for f in ranked]


def _frame_name(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    found = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame.strip())
    if not found:
        return frame.strip()
    module = found.group(2).split("site-packages/")[-1].split("/work/main/")[-1]
    return f"{found.group(1)} ({module})"


COMPONENTS = [
    ("psycopg", "PostgreSQL driver (psycopg: connect, send, wait)"),
    ("django/db", "Django ORM"),
    ("django/template", "templates"),
    ("template_partials", "templates"),
    ("markdown_it", "markdown and sanitising"),
    ("nh3", "markdown and sanitising"),
    ("pygments", "markdown and sanitising"),
    ("channels/layers", "channel layer (in-memory)"),
    ("channels_redis", "channel layer (Redis)"),
    ("redis/", "channel layer (Redis)"),
    ("channels/", "channels (consumers, database_sync_to_async)"),
    ("asgiref", "asgiref (sync_to_async thread hops)"),
    ("concurrent/futures", "asgiref (sync_to_async thread hops)"),
    ("letta_client", "letta-client SDK and pydantic (parsing the SSE stream)"),
    ("pydantic", "letta-client SDK and pydantic (parsing the SSE stream)"),
    ("httpx", "httpx/httpcore/h11 (reading the upstream)"),
    ("httpcore", "httpx/httpcore/h11 (reading the upstream)"),
    ("h11", "httpx/httpcore/h11 (reading the upstream)"),
    ("anyio", "httpx/httpcore/h11 (reading the upstream)"),
    ("autobahn", "daphne/twisted/autobahn (websocket and HTTP I/O)"),
    ("twisted", "daphne/twisted/autobahn (websocket and HTTP I/O)"),
    ("daphne", "daphne/twisted/autobahn (websocket and HTTP I/O)"),
    ("conversations/", "lettachat's own code"),
    ("django/", "Django (other)"),
    ("selectors.py", "event loop (select, waiting)"),
    ("asyncio", "asyncio event loop"),
    ("threading.py", "threads"),
]


def _component(frame: str) -> str:
    for key, name in COMPONENTS:
        if key in frame:
            return name
    return "other"


def _stacks(path: Path) -> Iterator[tuple[list[str], int]]:
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit() and stack:
            yield [f for f in stack.split(";") if f], int(count)


def profile_table(path: Path, top: int = 12) -> str:
    """Where daphne's CPU samples fall: by component (the innermost frame's library), and the
    share of samples under a few functions that matter to the relay."""
    if not path.exists():
        return "(no samples)"
    components: dict[str, int] = {}
    under: dict[str, int] = {}
    total = 0
    for frames, n in _stacks(path):
        total += n
        own = _component(frames[-1])
        components[own] = components.get(own, 0) + n
        names = {_frame_name(f).split(" (")[0] for f in frames}
        for watched in WATCHED:
            if watched in names:
                under[watched] = under.get(watched, 0) + n
    if not total:
        return "(no samples)"
    lines = [f"{total:,} samples. By component (the innermost frame):\n",
             "| component | share |", "|---|---:|"]  # fmt: skip
    for name, n in sorted(components.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| {name} | {100 * n / total:.1f}% |")
    lines += ["", "Under these functions (anywhere on the stack):\n", "| function | share |",
              "|---|---:|"]  # fmt: skip
    for name, n in sorted(under.items(), key=lambda kv: -kv[1]):
        lines.append(f"| `{name}` | {100 * n / total:.1f}% |")
    return "\n".join(lines)


WATCHED = [
    "ReplyRelay._read_letta",
    "LettaGateway._events",
    "ReplyRelay._loop",
    "ReplyRelay._piece",
    "publish",
    "ConversationConsumer.conversation_html",
    "aclose_old_connections",
    "DatabaseSyncToAsync.thread_handler",
    "InMemoryChannelLayer._clean_expired",
    "InMemoryChannelLayer.group_send",
    "BaseConnection._connect_gen",
    "ConversationConsumer.connect",
    "ReplyRelay._finish",
    "render_to_string",
]


# --- Websocket pages -----------------------------------------------------------------------------

# A page that waits this long for the next frame of a reply has lost one (the reply never ends).
FRAME_TIMEOUT = 90.0
# A frame that streams a draft: its start, a piece appended, or a reply's block being written
# (formatted: that block is sent whole with each piece, so a stamp can come again).
TOKEN_FRAME = re.compile(r'(?:id="stream-[^"]*-text"|(?:beforeend|innerHTML):#stream-[^"]*")>')
# The scripted upstream's token: "t=<time, 6 decimals> ". Not its trailing space: a formatted
# reply's last word has none (markdown trims a paragraph), and a stamp then counted a token late.
STAMP = re.compile(r"t=(\d+\.\d{6})")


def new_stamps(frame: str, seen: set[str]) -> tuple[list[str], int]:
    """The upstream's stamps in the frame not seen before in this reply (now seen), and the
    tokens it brings: one per new stamp (one for a frame with no stamp at all)."""
    stamps = STAMP.findall(frame)
    new = [s for s in dict.fromkeys(stamps) if s not in seen]
    seen.update(new)
    return new, len(new) if stamps else 1


def idle(frame: str | bytes) -> bool:
    text = frame if isinstance(frame, str) else frame.decode(errors="replace")
    return 'id="reply-status"' in text and 'data-busy="false"' in text


async def open_page(base_url: str, conversation_id: str, cookie: str):
    """A socket as a page opens it: connect, say it shows nothing yet, read the catch-up."""
    import websockets

    ws = await websockets.connect(
        base_url.replace("http://", "ws://") + f"/ws/c/{conversation_id}/",
        additional_headers={"Cookie": cookie, "Origin": base_url},
        max_size=None,
        open_timeout=60,
        ping_interval=None,
    )
    await ws.send(json.dumps({"type": "resume", "after": 0, "drafts": 0}))
    while not idle(await ws.recv()):
        pass
    return ws


# --- RESULTS.md ----------------------------------------------------------------------------------

RESULTS_HEAD = """# Benchmark results

Made by the commands in `bench/` (see the README's "Benchmarks"); `uv run python bench/run_all.py`
runs them all and rewrites every section below. Each section says when and how it was made. The
machine is shared and noisy: figures are medians and ratios measured side by side in one run.
"""


def write_section(name: str, markdown: str, figures: dict[str, Any]) -> None:
    """Put ``markdown`` in RESULTS.md as section ``name`` (replacing the old one) and keep the raw
    figures in bench/results/<name>.json."""
    RAW.mkdir(exist_ok=True)
    (RAW / f"{name}.json").write_text(json.dumps(figures, indent=2, default=str) + "\n")
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = RESULTS.read_text() if RESULTS.exists() else RESULTS_HEAD
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    print(f"\nwrote section {name!r} of {RESULTS.relative_to(ROOT)}")


def section_head(title: str, m: dict[str, Any]) -> str:
    return f"## {title}\n\n`{command_line()}`\n\n{machine_line(m)}.\n"
