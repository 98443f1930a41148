"""Lighthouse on the app's pages: accessibility and best practices, desktop and mobile.

    uv run python bench/lighthouse.py

Starts the local Letta server (the project's harness) if it is not running, seeds a throwaway
SQLite database in a temporary directory (a person with a session, the demo agent, a
conversation with a few real replies sent over the websocket, one with markdown and code),
serves lettachat with daphne on a free loopback port, and runs Lighthouse (npm's ``lighthouse``,
installed into ``bench/node_modules`` on first use, which git ignores) with Debian's Chromium
(``CHROME_PATH``, default ``/usr/bin/chromium``) on the login page, the agent page, the
conversation and "Your data", at the desktop and mobile form factors. Logged-in pages run in a
Chromium whose profile holds the session cookie (Lighthouse's ``--port``; ``logged_in_chromium``
says why not ``--extra-headers``). Full reports go to ``bench/results/lighthouse/`` (JSON,
git-ignored); RESULTS.md gets the scores and every audit that did not pass.

Target: accessibility and best practices >= 98 on every page and form factor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import _common as c

TARGET = 98
CATEGORIES = ("accessibility", "best-practices")
NODE = c.BENCH / "node_modules"
LIGHTHOUSE = NODE / ".bin" / "lighthouse"
REPORTS = c.RAW / "lighthouse"
CHROME = os.environ.get("CHROME_PATH", "/usr/bin/chromium")
MESSAGES = ["Hello there", "[[markdown]] Show me some formatting", "Thank you, that helps"]


def ensure_lighthouse() -> Path:
    if not LIGHTHOUSE.exists():
        print("installing lighthouse into bench/node_modules…", flush=True)
        subprocess.run(
            ["npm", "install", "--prefix", str(c.BENCH), "--no-save", "--no-package-lock",
             "--no-audit", "--no-fund", "lighthouse@13"],
            check=True,
        )  # fmt: skip
    return LIGHTHOUSE


def seed(letta_url: str) -> dict[str, str]:
    """A person with a session, the demo agent and an empty conversation (its id)."""
    from conversations import services
    from conversations.models import Agent
    from devtools.local_letta import harness
    from letta_gateway import get_gateway

    gateway = get_gateway()
    agent = services.agent_ensure_demo(gateway=gateway, model=harness.MODEL_HANDLE)
    if agent is None:
        agent = Agent.objects.filter(visible_to_users=True).first()
    assert agent is not None, "no agent visible to users"
    user = c.bench_user("lighthouse")
    conversation = services.conversation_create(gateway=gateway, user=user, agent=agent)
    return {
        "cookie": c.session_cookie(user),
        "agent": agent.letta_id,
        "conversation": conversation.letta_id,
    }


async def converse(base_url: str, conversation_id: str, cookie: str) -> None:
    """Send MESSAGES as a page does and wait for each reply to end."""
    ws = await c.open_page(base_url, conversation_id, cookie)
    try:
        for text in MESSAGES:
            await ws.send(json.dumps({"message": text, "otid": str(uuid.uuid4())}))
            busy = False
            while True:
                frame = await asyncio.wait_for(ws.recv(), c.FRAME_TIMEOUT)
                text_frame = frame if isinstance(frame, str) else frame.decode()
                if 'id="reply-status"' in text_frame and 'data-busy="true"' in text_frame:
                    busy = True
                if busy and c.idle(text_frame):
                    break
    finally:
        await ws.close()


@contextmanager
def logged_in_chromium(base_url: str, cookie: str) -> Iterator[int]:
    """Chromium with the session cookie in its profile; its DevTools port for ``--port``.

    Lighthouse's ``--extra-headers`` puts the cookie on the page's own request but not on the
    page's background requests (htmx's status poll went out logged out, and the page then went
    to the login page, as it does when a session expires), so the cookie goes into the profile.
    """
    from playwright.sync_api import sync_playwright

    port = c.free_port()
    with tempfile.TemporaryDirectory(prefix="lettachat-lighthouse-profile-") as profile:
        chromium = subprocess.Popen(
            [CHROME, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            c.wait_for_port(port, chromium, Path(profile))
            name, _, value = cookie.partition("=")
            with sync_playwright() as p:
                browser = p.chromium.connect_over_cdp(f"http://127.0.0.1:{port}")
                browser.contexts[0].add_cookies([{"name": name, "value": value, "url": base_url}])
            yield port
        finally:
            c.stop(chromium)


def lighthouse(url: str, form: str, out: Path, port: int | None = None) -> dict[str, Any]:
    """One Lighthouse run; in the Chromium at DevTools ``port`` if given (its cookies kept)."""
    command = [
        str(LIGHTHOUSE), url, "--quiet", "--output=json", f"--output-path={out}",
        f"--only-categories={','.join(CATEGORIES)}",
    ]  # fmt: skip
    if port:
        command += [f"--port={port}", "--disable-storage-reset"]
    else:
        command.append("--chrome-flags=--headless=new --no-sandbox --disable-gpu")
    if form == "desktop":
        command.append("--preset=desktop")
    subprocess.run(command, check=True, env={**os.environ, "CHROME_PATH": CHROME}, timeout=300)
    report = json.loads(out.read_text())
    scores = {k: round(report["categories"][k]["score"] * 100) for k in CATEGORIES}
    failing = []
    for key in CATEGORIES:
        for ref in report["categories"][key]["auditRefs"]:
            audit = report["audits"][ref["id"]]
            if ref["weight"] and audit["score"] is not None and audit["score"] < 1:
                items = (audit.get("details") or {}).get("items") or []
                failing.append(
                    {"category": key, "id": ref["id"], "title": audit["title"],
                     "weight": ref["weight"], "items": len(items)}
                )  # fmt: skip
    return {"final_url": report.get("finalDisplayedUrl") or report.get("finalUrl"),
            "scores": scores, "failing": failing,
            "lighthouse": report.get("lighthouseVersion"),
            "chrome": report.get("environment", {}).get("hostUserAgent", "")}  # fmt: skip


def report(m: dict[str, Any], results: list[dict[str, Any]], errors: list[str]) -> bool:
    ok = (
        bool(results)
        and all(min(r["scores"].values()) >= TARGET for r in results)
        and not c.error_count(errors)
    )
    version = results[0]["lighthouse"] if results else "?"
    lines = [
        c.section_head("Lighthouse: accessibility and best practices", m),
        f"Lighthouse {version} (npm) in Debian's Chromium (headless), against daphne on loopback "
        "with a throwaway SQLite database and the real local Letta server (demo agent); the "
        "conversation has three exchanges, one with markdown and code. Logged-in pages run in "
        "a Chromium whose profile holds the session cookie. Mobile is Lighthouse's default "
        "emulation (a Moto G-sized screen), desktop its `--preset=desktop`.\n",
        "| page | form factor | accessibility | best practices |",
        "|---|---|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['page']} | {r['form']} | {r['scores']['accessibility']} | "
            f"{r['scores']['best-practices']} |"
        )
    failing = [(r, f) for r in results for f in r["failing"]]
    if failing:
        lines += ["", "Audits that did not pass:", ""]
        for r, f in failing:
            lines.append(
                f"- {r['page']} ({r['form']}), {f['category']}: {f['title']} (`{f['id']}`, "
                f"weight {f['weight']}, {f['items']} item(s))"
            )
    if errors:
        lines += ["", "daphne logged errors:", "", "```", *errors[:20], "```"]
    lines += ["", f"Target: accessibility and best practices >= {TARGET} everywhere: "
              f"{c.verdict(ok)}."]  # fmt: skip
    c.write_section("lighthouse", "\n".join(lines), {"machine": m, "pages": results, "ok": ok})
    return ok


def run_one(base: str, name: str, path: str, form: str, port: int | None) -> dict[str, Any]:
    out = REPORTS / f"{name.replace(' ', '-')}-{form}.json"
    print(f"lighthouse: {name} ({form})", flush=True)
    r = lighthouse(base + path, form, out, port)
    if port and "/login/" in (r["final_url"] or ""):
        raise SystemExit(f"{name}: sent to the login page, not logged in")
    print(f"  {r['scores']}", flush=True)
    return {"page": name, "form": form, **r}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args()
    ensure_lighthouse()
    m = c.machine()
    from devtools.local_letta import harness

    letta_url = os.environ.get("LETTA_BASE_URL") or harness.start()
    REPORTS.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    daphne = None
    with tempfile.TemporaryDirectory(prefix="lettachat-bench-lighthouse-") as tmp:
        var_dir = Path(tmp)
        database_url = f"sqlite:///{var_dir}/db.sqlite3"
        c.setup_django(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
        seeded = seed(letta_url)
        port = c.free_port()
        base = f"http://127.0.0.1:{port}"
        env = c.server_env(database_url=database_url, var_dir=var_dir, letta_url=letta_url)
        log = var_dir / "daphne.log"
        try:
            daphne = c.start_daphne(port, env, log)
            asyncio.run(converse(base, seeded["conversation"], seeded["cookie"]))
            pages = [
                ("agent page", f"/a/{seeded['agent']}/"),
                ("conversation", f"/c/{seeded['conversation']}/"),
                ("your data", "/me/data/"),
            ]
            for form in ("desktop", "mobile"):
                results.append(run_one(base, "login", "/login/", form, None))
                with logged_in_chromium(base, seeded["cookie"]) as port:
                    for name, path in pages:
                        results.append(run_one(base, name, path, form, port))
        finally:
            c.stop(daphne)
        errors = c.log_errors(log, "lighthouse")
    return 0 if report(m, results, errors) else 1


if __name__ == "__main__":
    raise SystemExit(main())
