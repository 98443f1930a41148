"""The same long histories in Open WebUI 0.12.4 and in lettachat, side by side in Chromium.

    uv run python bench/peer_openwebui.py [--messages 10000] [--conversations 5000]
                                          [--browser-repeat 5] [--repeat 5] [--no-write]

Optional, and not part of ``run_all.py``: it installs Open WebUI (PyPI ``open-webui==0.12.4``)
into its own virtualenv outside the repository (``/tmp/lettachat-peer/openwebui-venv``, or
``--peer-dir``; reused when that version is there; first ``torch==2.13.0``, the CPU wheel on this
machine's disk, then open-webui, with pip: 2.9 GB, about 100 s here), and starts it offline on
a loopback port with a throwaway ``DATA_DIR`` (SQLite): ``OFFLINE_MODE``, the Hugging Face hub
offline, no embedding, reranking or speech model, the Ollama and OpenAI connections off. It signs
up an admin through its API (and marks this version's changelog as seen, as a returning admin
has it) and imports, through its own ``/api/v1/chats/import``, the same data that
``long_history.py`` seeds into lettachat: the same random draws make the same titles and the
same message texts (asserted against lettachat's database). One chat of ``--messages`` messages
(user and assistant turns; lettachat's reasoning and tool-call messages become assistant turns
holding Open WebUI's ``<details type="reasoning">`` and ``<details type="tool_calls">`` blocks),
stored as Open WebUI's frontend stores a chat (``history`` and the ``messages`` list), and
``--conversations`` chats in all for the sidebar, the long one the most recent. lettachat is
seeded by ``long_history.seed`` in a throwaway PostgreSQL database (``bench_peer_openwebui``) and
served by daphne. Then, for both apps in the same run:

- server: the thread's main response (lettachat's conversation page; Open WebUI's
  ``GET /api/v1/chats/<id>``, the JSON its page renders) and the sidebar's (lettachat's agent
  page; ``GET /api/v1/chats/?page=1``), over loopback HTTP without compression, median of
  ``--repeat`` requests after 2 warm-ups, and bytes;
- headless Chromium (launched as ``long_history.py`` launches it): from navigation start until
  the thread's last message is on screen with its text (lettachat's ``/c/<id>/``, Open WebUI's
  ``/c/<id>``), and until the sidebar's first title is on screen (lettachat's agent page, Open
  WebUI's home page with its sidebar open), polled in requestAnimationFrame with
  ``performance.now()`` as ``long_history.py`` does; first byte, DOMContentLoaded, and the bytes
  of every response the page loaded (Resource Timing: on the wire and decoded) when the element
  showed and when the page settled (no request started or ended for 1 s; a request pending for
  over 5 s counts as stuck, not in flight), the main response's among them, and websocket frames
  received. Median of ``--browser-repeat`` cold loads, each in a fresh browser context, after one
  warm-up round; the two apps alternate load by load.

Writes the section ``peer-openwebui`` of RESULTS.md (unless ``--no-write``). Needs PostgreSQL on
its standard local port, Chromium at /usr/bin/chromium, and PyPI for the first install.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common as c
import long_history as lh

VERSION = "0.12.4"
MODEL = "bench-model"  # no such model: the chats name one, as chats made in Open WebUI do
START = datetime(2026, 1, 1, tzinfo=UTC)  # long_history.seed's clock
LONG_TITLE = "The long one: ten thousand messages"
NAMESPACE = uuid.UUID("5b0e8c1e-3f4d-4c0a-9d8e-1a2b3c4d5e6f")

# Open WebUI with nothing to reach: every model download and outside service off.
OFFLINE_ENV = {
    "OFFLINE_MODE": "true",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAG_EMBEDDING_MODEL": "",  # no sentence-transformers model is loaded
    "RAG_RERANKING_MODEL": "",
    "BYPASS_EMBEDDING_AND_RETRIEVAL": "true",
    "WHISPER_MODEL": "",
    "ENABLE_OLLAMA_API": "false",
    "ENABLE_OPENAI_API": "false",
    "OLLAMA_BASE_URL": "http://127.0.0.1:9",  # closed ports, were they used
    "OPENAI_API_BASE_URL": "http://127.0.0.1:9/v1",
    "ENABLE_VERSION_UPDATE_CHECK": "false",
    "SCARF_NO_ANALYTICS": "true",
    "DO_NOT_TRACK": "true",
    "ANONYMIZED_TELEMETRY": "false",
    "WEBUI_AUTH": "true",
    "WEBUI_SECRET_KEY": "bGV0dGFjaGF0LWJlbmNoLXBlZXItbm90LXNlY3JldCE=",  # a Fernet key: 32 bytes
    "GLOBAL_LOG_LEVEL": "WARNING",
}
ADMIN = {"name": "bench", "email": "bench@example.com", "password": "bench-password"}


# --- Install and start ---------------------------------------------------------------------------


def installed_version(venv: Path) -> str:
    python = venv / "bin" / "python"
    if not python.exists():
        return ""
    done = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('open-webui'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def default_python() -> str:
    for name in ("python3.11", "/usr/bin/python3"):
        found = shutil.which(name)
        if found:
            return found
    return "python3"


def install(venv: Path, python: str, log: Path) -> float:
    """Open WebUI in its own virtualenv; the seconds it took (0 when it was there)."""
    if installed_version(venv) == VERSION:
        print(f"Open WebUI {VERSION} is installed in {venv}", flush=True)
        return 0.0
    print(f"installing Open WebUI {VERSION} into {venv} (log: {log})", flush=True)
    t0 = time.perf_counter()
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    with log.open("a") as out:
        if not (venv / "bin" / "python").exists():
            subprocess.run([python, "-m", "venv", str(venv)], stdout=out, stderr=out, check=True)
        # The CPU wheel on this machine's disk first, so that open-webui does not pull CUDA's.
        subprocess.run([*pip, "torch==2.13.0"], stdout=out, stderr=out, check=False)
        done = subprocess.run([*pip, f"open-webui=={VERSION}"], stdout=out, stderr=out)
    if done.returncode or installed_version(venv) != VERSION:
        raise SystemExit(f"pip could not install open-webui=={VERSION}; see {log}")
    seconds = time.perf_counter() - t0
    print(f"  installed in {seconds:.0f} s", flush=True)
    return seconds


def start_openwebui(venv: Path, port: int, data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    env.update(OFFLINE_ENV, DATA_DIR=str(data_dir))
    return subprocess.Popen(
        [str(venv / "bin" / "open-webui"), "serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=data_dir, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def wait_healthy(base_url: str, process: subprocess.Popen[bytes], log: Path, seconds: float):
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            c.stop(process)
            raise SystemExit(f"Open WebUI did not start; the end of {log}:\n{tail}")
        time.sleep(0.5)  # polling a starting server against a deadline


def api(base_url: str, method: str, path: str, body: Any = None, token: str = "", timeout=600):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{base_url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise SystemExit(f"{method} {path}: {error.code} {error.read()[:500]!r}") from error


# --- The data ------------------------------------------------------------------------------------


def history_shape(args: argparse.Namespace) -> dict[str, Any]:
    """The titles and messages ``long_history.seed`` makes: the same random draws in its order."""
    rng = random.Random(1)
    titles = [
        f"{lh.sentence(rng, rng.randint(3, 7))[:-1]} #{i}" for i in range(args.conversations - 1)
    ]
    messages = []
    for i in range(args.messages):
        turn = i % 2 == 0
        kind = "user" if turn else "assistant"
        content = lh.user_text(rng) if turn else lh.assistant_text(rng, i)
        if not turn and i % 20 == 1:
            kind, content = "reasoning", lh.sentence(rng, 20)
        elif not turn and i % 20 == 11:
            kind, content = "tool_call", '{"query": "memory"}'
        messages.append((kind, content))
    return {"titles": titles, "messages": messages}


def openwebui_content(kind: str, content: str, i: int) -> str:
    """A lettachat message as the content of an Open WebUI message."""
    if kind == "reasoning":
        return (
            '<details type="reasoning" done="true" duration="2">\n'
            f"<summary>Thought for 2 seconds</summary>\n> {content}\n</details>"
        )
    if kind == "tool_call":
        arguments = html.escape(json.dumps(content), quote=True)
        return (
            f'<details type="tool_calls" done="true" id="call-{i:06d}" name="archival_search" '
            f'arguments="{arguments}" result="&quot;&quot;" files="">\n'
            "<summary>Tool Executed</summary>\n</details>"
        )
    return content


def openwebui_chat(shape: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The long chat as Open WebUI's frontend saves one; its last message's id and text."""
    by_id: dict[str, dict[str, Any]] = {}
    parent = None
    for i, (kind, content) in enumerate(shape["messages"]):
        message_id = str(uuid.uuid5(NAMESPACE, f"message-{i:06d}"))
        at = int((START + timedelta(seconds=30 * (i + 1))).timestamp())
        message: dict[str, Any] = {
            "id": message_id,
            "parentId": parent,
            "childrenIds": [],
            "role": "user" if kind == "user" else "assistant",
            "content": openwebui_content(kind, content, i),
            "timestamp": at,
        }
        if kind == "user":
            message["models"] = [MODEL]
        else:
            message.update(model=MODEL, modelName=MODEL, modelIdx=0, done=True)
        if parent:
            by_id[parent]["childrenIds"].append(message_id)
        by_id[message_id] = message
        parent = message_id
    chat = {
        "id": "",
        "title": LONG_TITLE,
        "models": [MODEL],
        "params": {},
        "history": {"messages": by_id, "currentId": parent},
        "messages": list(by_id.values()),
        "tags": [],
        "timestamp": int(START.timestamp() * 1000),
        "files": [],
    }
    kind, last = shape["messages"][-1] if shape["messages"] else ("", "")
    return chat, parent or "", last if kind in ("user", "assistant") else ""


def seed_openwebui(base_url: str, args: argparse.Namespace, shape: dict[str, Any]) -> dict:
    t0 = time.perf_counter()
    token = api(base_url, "POST", "/api/v1/auths/signup", ADMIN, timeout=120)["token"]
    # A returning admin has seen this version's changelog (else a modal covers the first page).
    api(base_url, "POST", "/api/v1/users/user/settings/update", {"ui": {"version": VERSION}},
        token)  # fmt: skip
    started = int(START.timestamp())
    batch: list[dict[str, Any]] = []
    for i, title in enumerate(shape["titles"]):
        at = started + 60 * i
        empty = {"title": title, "models": [MODEL], "params": {}, "tags": [], "files": [],
                 "history": {"messages": {}, "currentId": None}, "messages": [],
                 "timestamp": at * 1000}  # fmt: skip
        batch.append({"chat": empty, "meta": {}, "created_at": at, "updated_at": at})
        if len(batch) == 500 or i == len(shape["titles"]) - 1:
            api(base_url, "POST", "/api/v1/chats/import", {"chats": batch}, token)
            batch = []
    short_seconds = time.perf_counter() - t0
    chat, last_id, last_text = openwebui_chat(shape)
    body = json.dumps(chat)
    t1 = time.perf_counter()
    at = int((START + timedelta(days=365)).timestamp())
    imported = api(base_url, "POST", "/api/v1/chats/import",
                   {"chats": [{"chat": chat, "meta": {}, "created_at": at, "updated_at": at}]},
                   token)  # fmt: skip
    long_seconds = time.perf_counter() - t1
    chat_id = imported[0]["id"]
    first = api(base_url, "GET", "/api/v1/chats/?page=1", token=token)
    assert first and first[0]["id"] == chat_id, "the long chat is not the sidebar's first"
    print(f"  Open WebUI seeded: {len(shape['titles'])} short chats in {short_seconds:.1f} s, "
          f"the long chat ({len(body) / 1e6:.1f} MB of JSON) in {long_seconds:.1f} s",
          flush=True)  # fmt: skip
    return {
        "token": token,
        "chat_id": chat_id,
        "last_id": last_id,
        "last_text": last_text,
        "chat_json_mb": len(body) / 1e6,
        "seconds_short": short_seconds,
        "seconds_long": long_seconds,
    }


def check_same_data(seeded: dict[str, Any], shape: dict[str, Any]) -> None:
    """The texts imported into Open WebUI are those long_history.seed put in lettachat."""
    from conversations.models import Conversation, Message

    contents = list(
        Message.objects.filter(conversation=seeded["long"])
        .order_by("created_at", "id")
        .values_list("content", flat=True)
    )
    assert contents == [content for _, content in shape["messages"]], "messages differ"
    titles = set(
        Conversation.objects.filter(owner=seeded["user"])
        .exclude(pk=seeded["long"].pk)
        .values_list("summary", flat=True)
    )
    assert titles == set(shape["titles"]), "titles differ"


# --- Server --------------------------------------------------------------------------------------


def server_time(url: str, headers: dict[str, str], repeat: int) -> dict[str, float]:
    request = urllib.request.Request(url, headers={**headers, "Accept-Encoding": "identity"})
    times, size = [], 0
    for i in range(repeat + 2):  # two warm-ups
        t0 = time.perf_counter()
        with urllib.request.urlopen(request, timeout=300) as response:
            size = len(response.read())
        if i >= 2:
            times.append((time.perf_counter() - t0) * 1000)
    return {"median_ms": c.median(times), "p95_ms": c.percentile(times, 95), "bytes": size}


# --- Chromium ------------------------------------------------------------------------------------

# long_history.LAST_ON_SCREEN, with a selector, the element's text and a horizontal check (a
# closed sidebar's items are laid out off screen): the same test for both apps.
ON_SCREEN = """([selector, within, text]) => {
  const el = document.querySelector(selector);
  if (!el) return false;
  const box = el.getBoundingClientRect();
  if (box.height === 0 || box.width === 0) return false;
  if (text && !el.textContent.includes(text)) return false;
  const area = within ? document.querySelector(within) : null;
  const view = area ? area.getBoundingClientRect()
                    : {top: 0, bottom: innerHeight};
  const shown = box.bottom > view.top && box.top < view.bottom
             && box.top < innerHeight && box.bottom > 0
             && box.left < innerWidth && box.right > 0;
  return shown ? performance.now() : false;
}"""

# What the page has loaded so far (Resource Timing, same origin: sizes are exposed).
LOADED = """(main) => {
  const nav = performance.getEntriesByType('navigation')[0];
  const all = [nav, ...performance.getEntriesByType('resource')];
  const sum = (list, key) => list.reduce((s, e) => s + (e[key] || 0), 0);
  const mains = main ? all.filter(e => new URL(e.name).pathname === main) : [nav];
  return {ttfb: nav.responseStart, dcl: nav.domContentLoadedEventEnd,
          last_end: Math.max(...all.map(e => e.responseEnd)),
          html_bytes: nav.encodedBodySize, requests: all.length,
          wire: sum(all, 'encodedBodySize'), decoded: sum(all, 'decodedBodySize'),
          main_count: mains.length, main_wire: mains.length ? mains[0].encodedBodySize : 0,
          main_decoded: mains.length ? mains[0].decodedBodySize : 0};
}"""

KEYS = (
    *("shown_ms", "ttfb", "dcl", "html_bytes", "shown_wire", "shown_decoded", "requests", "wire"),
    *("decoded", "main_count", "main_wire", "main_decoded", "ws_bytes", "last_end", "stuck"),
    "items",
)


def snippet(text: str) -> str:
    """The first words of a message, as they read on screen (before any markdown)."""
    words = text.split("\n", 1)[0].split()[:4]
    plain = " ".join(words)
    return plain if plain.replace(" ", "").replace(".", "").isalpha() else ""


def settle(page, events: dict[str, Any], quiet: float = 1.0, stuck: float = 5.0) -> int:
    """Wait until no request has started or ended for ``quiet`` seconds and none is in flight
    but those pending for over ``stuck`` seconds (at most 20 s); how many are stuck.

    Playwright's "networkidle" never comes for Open WebUI: its page leaves one request
    (``POST /api/v1/auths/update/timezone``) pending in Chromium for good."""
    deadline = time.monotonic() + 20
    while True:
        page.wait_for_timeout(100)  # lets Playwright deliver the page's events
        now = time.monotonic()
        in_flight = [t for t in events["pending"].values() if now - t < stuck]
        if (not in_flight and now - events["last"] >= quiet) or now > deadline:
            return len(events["pending"]) - len(in_flight)


def load(browser, target: dict[str, Any], shot: Path | None = None) -> dict[str, float]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script("performance.setResourceTimingBufferSize(100000);")
    if target.get("cookie"):
        name, value = target["cookie"].split("=", 1)
        context.add_cookies([{"name": name, "value": value, "url": target["base_url"]}])
    if target.get("init"):
        context.add_init_script(target["init"])
    page = context.new_page()
    events: dict[str, Any] = {"pending": {}, "last": time.monotonic(), "ws": 0}

    def started(request) -> None:
        events["pending"][id(request)] = events["last"] = time.monotonic()

    def ended(request) -> None:
        events["pending"].pop(id(request), None)
        events["last"] = time.monotonic()

    def frame(payload: str | bytes) -> None:
        events["ws"] += len(payload if isinstance(payload, bytes) else payload.encode())

    page.on("request", started)
    page.on("requestfinished", ended)
    page.on("requestfailed", ended)
    page.on("websocket", lambda socket: socket.on("framereceived", frame))
    page.goto(target["url"], wait_until="commit")
    shown = page.wait_for_function(
        ON_SCREEN, arg=[target["selector"], target["within"], target["text"]], polling="raf",
        timeout=120_000,
    ).json_value()  # fmt: skip
    at_shown = page.evaluate(LOADED, target.get("main"))
    items = page.evaluate("(s) => document.querySelectorAll(s).length", target["items"])
    if shot:
        page.screenshot(path=shot)
    stuck = settle(page, events)
    settled = page.evaluate(LOADED, target.get("main"))
    context.close()
    return {**settled, "shown_ms": shown,  # ttfb and dcl: the navigation's, as it ended
            "shown_wire": at_shown["wire"], "shown_decoded": at_shown["decoded"],
            "ws_bytes": events["ws"], "stuck": stuck, "items": items}  # fmt: skip


def browser_times(args: argparse.Namespace, targets: dict[str, dict]) -> dict[str, dict]:
    """``targets``: "<app> <thread|sidebar>" -> what to load; the loads alternate between them."""
    from playwright.sync_api import sync_playwright

    runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=lh.CHROMIUM, args=lh.CHROMIUM_ARGS, headless=True
        )
        try:
            for i in range(args.browser_repeat + 1):  # the first round warms the servers
                for name, target in targets.items():
                    shot = None
                    if args.screenshots and i == 1:
                        shot = args.screenshots / f"{name.replace(' ', '-').lower()}.png"
                    result = load(browser, target, shot)
                    if i:
                        runs[name].append(result)
        finally:
            browser.close()
    summary = {}
    for name, values in runs.items():
        summary[name] = {key: c.median([v[key] for v in values]) for key in KEYS}
        summary[name]["max_shown_ms"] = max(v["shown_ms"] for v in values)
        s = summary[name]
        print(f"  Chromium, {name}: on screen after {s['shown_ms']:.0f} ms (median; max "
              f"{s['max_shown_ms']:.0f}), first byte {s['ttfb']:.0f} ms, "
              f"{s['wire'] / 1e6:.2f} MB on the wire ({s['decoded'] / 1e6:.2f} MB decoded)",
              flush=True)  # fmt: skip
    return summary


# --- Report --------------------------------------------------------------------------------------


def kb(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} MB"
    return f"{value / 1000:.0f} KB" if value >= 10_000 else f"{value / 1000:.1f} KB"


def report(args, m, timing, servers, browser, peer) -> str:
    n, k = f"{args.messages:,}", f"{args.conversations:,}"
    lines = [
        c.section_head("Peer: Open WebUI 0.12.4 and lettachat, side by side", m),
        f"The same data in both, made by `long_history.py`'s generators with the same random "
        f"draws: one person with {k} conversations, one of them with {n} messages "
        f"({peer['chat_json_mb']:.1f} MB as Open WebUI's chat JSON, which holds each message "
        "twice, in `history` and in `messages`, as its frontend saves a chat). lettachat: "
        "PostgreSQL, daphne. Open WebUI: `pip install open-webui==0.12.4` in its own "
        "virtualenv, `open-webui serve` (uvicorn, one worker) offline with SQLite, seeded "
        "through its `/api/v1/chats/import`. Both on loopback, idle but for the loads.\n",
        f"Install {timing['install_s']:.0f} s (0: reused), Open WebUI's start "
        f"{timing['openwebui_start_s']:.0f} s; seeding lettachat {timing['lettachat_seed_s']:.1f} "
        f"s (bulk_create, while Open WebUI started), Open WebUI "
        f"{peer['seconds_short'] + peer['seconds_long']:.1f} s (its API; the long chat "
        f"{peer['seconds_long']:.1f} s).\n",
        f"Server, over loopback HTTP without compression, median of {args.repeat} requests "
        "after 2 warm-ups:\n",
        "| response | lettachat | bytes | Open WebUI | bytes |",
        "|---|---:|---:|---:|---:|",
    ]
    for kind, label in (("thread", f"the thread of {n}"), ("sidebar", f"the sidebar of {k}")):
        mine, theirs = servers[f"lettachat {kind}"], servers[f"Open WebUI {kind}"]
        lines.append(
            f"| {label} ({mine['what']}; {theirs['what']}) | {mine['median_ms']:.1f} ms | "
            f"{kb(mine['bytes'])} | {theirs['median_ms']:.1f} ms | {kb(theirs['bytes'])} |"
        )
    lines += [
        "",
        f"Headless Chromium, {args.browser_repeat} cold loads each in a fresh context (the apps "
        "alternating), 1280x800; from navigation start until the element is on screen with its "
        "text (`performance.now()` in a requestAnimationFrame poll); bytes from Resource Timing "
        "(on the wire, as sent: Open WebUI compresses its responses, lettachat does not; and "
        "decoded), when the element showed and when the page settled (no request started or "
        "ended for 1 s; one pending for over 5 s counts as stuck); websocket frames received "
        "until then:\n",
        "| what | lettachat | Open WebUI |",
        "|---|---:|---:|",
    ]
    for kind, label in (("thread", f"thread of {n}: its last message"),
                        ("sidebar", f"sidebar of {k}: its first title")):  # fmt: skip
        a, b = browser[f"lettachat {kind}"], browser[f"Open WebUI {kind}"]
        rows = [
            (f"{label} on screen, median", lambda s: f"{s['shown_ms']:.0f} ms"),
            ("max", lambda s: f"{s['max_shown_ms']:.0f} ms"),
            ("messages or titles in the page when shown", lambda s: f"{s['items']:.0f}"),
            ("first byte", lambda s: f"{s['ttfb']:.0f} ms"),
            ("DOMContentLoaded", lambda s: f"{s['dcl']:.0f} ms"),
            ("HTML document (wire)", lambda s: kb(s["html_bytes"])),
            ("main response (wire / decoded)",
             lambda s: f"{kb(s['main_wire'])} / {kb(s['main_decoded'])} (x{s['main_count']:.0f})"),
            ("loaded when shown (wire / decoded)",
             lambda s: f"{kb(s['shown_wire'])} / {kb(s['shown_decoded'])}"),
            ("loaded when settled (wire / decoded)",
             lambda s: f"{kb(s['wire'])} / {kb(s['decoded'])}"),
            ("last response ended", lambda s: f"{s['last_end']:.0f} ms"),
            ("responses when settled (and requests stuck)",
             lambda s: f"{s['requests']:.0f} ({s['stuck']:.0f})"),
            ("websocket frames received", lambda s: kb(s["ws_bytes"])),
        ]  # fmt: skip
        for name, show in rows:
            lines.append(f"| {name} | {show(a)} | {show(b)} |")
    lines += [
        "",
        "The main response: lettachat's page itself; Open WebUI's `GET /api/v1/chats/<id>` "
        "(the thread; x2 when its page fetches it twice) or `GET /api/v1/chats/?page=1` (the "
        "sidebar), within the `wire` figures. Open WebUI's page is a single-page app: a static "
        "shell (hence its early first byte), then its scripts, then its API (the user, models, "
        "tools, folders, the chat); lettachat's page comes rendered (the last 100 messages and "
        "the sidebar's first 50), with its own CSS and scripts. Open WebUI gets the whole "
        "chat and renders its last few messages, more on scrolling up.",
    ]
    return "\n".join(lines)


# --- Main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--conversations", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5, help="server requests per response")
    parser.add_argument("--browser-repeat", type=int, default=5)
    parser.add_argument("--peer-dir", type=Path, default=Path("/tmp/lettachat-peer"))
    parser.add_argument("--python", default=default_python(), help="makes Open WebUI's venv")
    parser.add_argument("--screenshots", type=Path, help="a PNG of each page when shown")
    parser.add_argument("--no-write", action="store_true", help="print, leave RESULTS.md")
    args = parser.parse_args()
    m = c.machine()
    args.peer_dir.mkdir(parents=True, exist_ok=True)
    if args.screenshots:
        args.screenshots.mkdir(parents=True, exist_ok=True)
    venv = args.peer_dir / "openwebui-venv"
    timing = {"install_s": install(venv, args.python, args.peer_dir / "install.log")}
    shape = history_shape(args)
    peer_process = upstream = daphne = None
    with tempfile.TemporaryDirectory(prefix="openwebui-data-", dir=args.peer_dir) as data, \
            tempfile.TemporaryDirectory(prefix="lettachat-bench-peer-") as tmp:  # fmt: skip
        var_dir = Path(tmp)
        peer_port = c.free_port()
        peer_url = f"http://127.0.0.1:{peer_port}"
        peer_log = args.peer_dir / "openwebui.log"
        try:
            t0 = time.perf_counter()
            peer_process = start_openwebui(venv, peer_port, Path(data), peer_log)
            port = c.free_port()
            upstream = c.start_upstream(port, var_dir / "upstream.log")  # the Letta status check
            letta_url = f"http://127.0.0.1:{port}"
            with c.bench_database("peer_openwebui") as database_url:
                c.setup_django(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
                from scripted_upstream import AGENT_ID

                t1 = time.perf_counter()
                seeded = lh.seed(args, AGENT_ID)  # while Open WebUI starts
                timing["lettachat_seed_s"] = time.perf_counter() - t1
                print(f"  lettachat seeded in {timing['lettachat_seed_s']:.1f} s", flush=True)
                check_same_data(seeded, shape)
                wait_healthy(peer_url, peer_process, peer_log, 300)
                timing["openwebui_start_s"] = time.perf_counter() - t0
                print(f"  Open WebUI up after {timing['openwebui_start_s']:.0f} s", flush=True)
                peer = seed_openwebui(peer_url, args, shape)

                os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # sync Playwright's loop
                daphne_port = c.free_port()
                env = c.server_env(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
                daphne = c.start_daphne(daphne_port, env, var_dir / "daphne.log")
                base_url = f"http://127.0.0.1:{daphne_port}"
                cookie = c.session_cookie(seeded["user"])
                long, agent = seeded["long"], seeded["agent"]
                last, first = lh.on_screen_targets(seeded)
                last_text = last.content if last.message_type in ("user", "assistant") else ""
                bearer = {"Authorization": f"Bearer {peer['token']}"}
                print("server:", flush=True)
                servers = {}
                for name, url, headers, what in (
                    ("lettachat thread", f"{base_url}/c/{long.letta_id}/", {"Cookie": cookie},
                     "`/c/<id>/`"),
                    ("Open WebUI thread", f"{peer_url}/api/v1/chats/{peer['chat_id']}", bearer,
                     "`/api/v1/chats/<id>`"),
                    ("lettachat sidebar", f"{base_url}/a/{agent.letta_id}/", {"Cookie": cookie},
                     "`/a/<id>/`"),
                    ("Open WebUI sidebar", f"{peer_url}/api/v1/chats/?page=1", bearer,
                     "`/api/v1/chats/?page=1`"),
                ):  # fmt: skip
                    servers[name] = {**server_time(url, headers, args.repeat), "what": what}
                    s = servers[name]
                    print(f"  {name}: {s['median_ms']:.1f} ms, {kb(s['bytes'])}", flush=True)
                init = (
                    f"localStorage.setItem('token', {json.dumps(peer['token'])});"
                    "localStorage.setItem('sidebar', 'true');"
                    f"localStorage.setItem('version', {json.dumps(VERSION)});"
                )
                mine = {"base_url": base_url, "cookie": cookie}
                theirs = {"base_url": peer_url, "init": init}
                targets = {
                    "lettachat thread": {
                        **mine, "url": f"{base_url}/c/{long.letta_id}/",
                        "selector": f"#msg-{last.pk}", "within": "#messages",
                        "text": snippet(last_text), "items": "#messages article.msg"},
                    "Open WebUI thread": {
                        **theirs, "url": f"{peer_url}/c/{peer['chat_id']}",
                        "selector": f"[id='message-{peer['last_id']}']",
                        "within": "#messages-container", "text": snippet(peer["last_text"]),
                        "main": f"/api/v1/chats/{peer['chat_id']}",
                        "items": "#messages-container [id^='message-']"},
                    "lettachat sidebar": {
                        **mine, "url": f"{base_url}/a/{agent.letta_id}/",
                        "selector": f"#conv-{first.letta_id}", "within": "#conversation-list",
                        "text": first.title[:20], "items": "#conversation-list li"},
                    "Open WebUI sidebar": {
                        **theirs, "url": f"{peer_url}/",
                        "selector": f"#sidebar a[href='/c/{peer['chat_id']}']", "within": "",
                        "text": LONG_TITLE[:20], "main": "/api/v1/chats/",
                        "items": "#sidebar a[href^='/c/']"},
                }  # fmt: skip
                print("Chromium:", flush=True)
                browser = browser_times(args, targets)
                c.stop(daphne)
        finally:
            c.stop(daphne)
            c.stop(upstream)
            c.stop(peer_process)
    markdown = report(args, m, timing, servers, browser, peer)
    figures = {
        "machine": m,
        "command": c.command_line(),
        "timing": timing,
        "servers": servers,
        "browser": browser,
        "openwebui": {k: v for k, v in peer.items() if k != "token"},
    }
    if args.no_write:
        print("\n" + markdown)
    else:
        c.write_section("peer-openwebui", markdown, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
