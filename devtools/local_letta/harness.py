"""Install (once) and run a REAL Letta server offline on 127.0.0.1 for lettachat's tests and dev.

What runs (all detached, so they outlive the caller; pid files in ``<dir>/run``, logs in
``<dir>/logs``):

* ``letta server`` from ``letta==0.16.8`` (the last Letta *server* release on PyPI), installed
  into ``<dir>/venv`` with every dependency pinned from the ``uv.lock`` in the letta sdist (an
  unpinned install imports-fails today) together with ``pgserver==0.1.4``;
* PostgreSQL 16 + pgvector from the ``pgserver`` wheel (Letta has no SQLite backend). PostgreSQL
  refuses to run as root, so when root it runs as ``nobody`` - hence ``<dir>`` must be
  traversable by ``nobody`` (the default under /tmp is).  Migrations: ``alembic upgrade head``
  from the sdist (the wheel lacks them).  Letta keeps a pool of connections to it
  (``LETTA_DISABLE_SQLALCHEMY_POOLING=false``; Letta's default is a new connection per query);
* a private ``redis-server`` from the OS (bound to 127.0.0.1, no persistence).  Without it Letta
  answers 503 for ``background=True`` runs and stream resumption; foreground streaming works;
* the scripted OpenAI-compatible model ``devtools.local_letta.fake_model`` (run with
  ``sys.executable``), unless ``LOCAL_LETTA_MODEL_URL`` points Letta at a real model.

Python API::

    from devtools.local_letta import harness
    url = harness.start()          # "http://127.0.0.1:8283"; returns at once if already healthy
    harness.MODEL_HANDLE           # "openai-proxy/lettachat-demo": the model handle for agents
    harness.restart_letta()        # stop + start only the Letta server (db, redis, model stay up)
    harness.stop()                 # stop everything

    harness.api_key()              # the key Letta is started with (made once, kept in <dir>)
    harness.letta_errors_since(n)  # the errors in Letta's log after byte n (letta_log_size())

CLI: ``python -m devtools.local_letta CMD`` with CMD one of install, start (default), stop,
status, url, key, restart-letta, stop-letta, start-letta.

The server runs in Letta's secure mode (``LETTA_SERVER_SECURE=true`` with
``LETTA_SERVER_PASSWORD``): every request but the health check needs ``Authorization: Bearer
<key>`` (or ``X-BARE-PASSWORD: password <key>``), so nothing else on the host can use it. The key
is generated once into ``<dir>/letta-api-key`` (mode 0600); lettachat's settings read it when
``LETTA_BASE_URL`` is unset or is this server's URL.

Environment (all optional; read when the functions are called, except MODEL_HANDLE at import):
    LETTACHAT_LOCAL_DIR         state dir: venv, db, logs, pids  (default /tmp/lettachat-local)
    LOCAL_LETTA_PORT            Letta server port                        (default 8283)
    LOCAL_LETTA_PG_PORT         PostgreSQL port                          (default 55432)
    LOCAL_LETTA_REDIS_PORT      redis port                               (default 56379)
    LOCAL_LETTA_MODEL_PORT      scripted model port                      (default 8399)
    LOCAL_LETTA_START_TIMEOUT   seconds to wait for Letta to be healthy  (default 180)
    LOCAL_LETTA_PYTHON          interpreter for the Letta venv (3.11-3.13; default sys.executable)
    FAKE_MODEL_ID               scripted model id                         (default lettachat-demo)
    FAKE_MODEL_DELAY, FAKE_MODEL_SLOW_DELAY   token pacing of the scripted model (see fake_model)
    FAKE_MODEL_LOG              request log (jsonl)     (default <dir>/logs/model_requests.jsonl)

  Using a real model instead of the scripted one:
    LOCAL_LETTA_MODEL_URL       an OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1 or
                                https://api.openai.com/v1.  When set, no scripted model is started
                                and Letta's OPENAI_BASE_URL is this URL.
    LOCAL_LETTA_MODEL_API_KEY   its API key (default "sk-local")
    LOCAL_LETTA_MODEL_ID        the model id to build MODEL_HANDLE from (default FAKE_MODEL_ID)
    LOCAL_LETTA_MODEL_HANDLE    the full handle, if the rule below does not fit
  Letta lists the endpoint's models at start-up and names them ``openai-proxy/<id>``, or
  ``openai/<id>`` when the URL is exactly https://api.openai.com/v1.

Embeddings: none needed for chat (agents are created with just ``model=MODEL_HANDLE``), hence
``EMBEDDING = None``.  The scripted model still answers ``/v1/embeddings``.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .fake_model import DEFAULT_MODEL_ID, FORBIDDEN_PREFIXES

LETTA_VERSION = "0.16.8"
PGSERVER_VERSION = "0.1.4"
PROJECT_ROOT = Path(__file__).resolve().parents[2]
OPENAI_URL = "https://api.openai.com/v1"


def _model_id() -> str:
    return (
        os.environ.get("LOCAL_LETTA_MODEL_ID")
        or os.environ.get("FAKE_MODEL_ID")
        or DEFAULT_MODEL_ID
    )


def model_handle() -> str:
    """The handle to pass as ``model`` when creating an agent on the local server."""
    if os.environ.get("LOCAL_LETTA_MODEL_HANDLE"):
        return os.environ["LOCAL_LETTA_MODEL_HANDLE"]
    url = (os.environ.get("LOCAL_LETTA_MODEL_URL") or "").rstrip("/")
    prefix = "openai" if url == OPENAI_URL else "openai-proxy"
    return f"{prefix}/{_model_id()}"


MODEL_ID = _model_id()
MODEL_HANDLE = model_handle()
# No embedding model is needed to create agents and chat (Letta 0.16.8 accepts agents without one).
EMBEDDING = None


class HarnessError(RuntimeError):
    """Install or start-up of the local Letta stack failed; the message names the log file."""


@dataclass(frozen=True)
class Config:
    root: Path
    letta_port: int
    pg_port: int
    redis_port: int
    model_port: int
    model_url: str | None
    model_api_key: str
    start_timeout: float
    python: str

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        return cls(
            root=Path(env.get("LETTACHAT_LOCAL_DIR", "/tmp/lettachat-local")).absolute(),
            letta_port=int(env.get("LOCAL_LETTA_PORT", "8283")),
            pg_port=int(env.get("LOCAL_LETTA_PG_PORT", "55432")),
            redis_port=int(env.get("LOCAL_LETTA_REDIS_PORT", "56379")),
            model_port=int(env.get("LOCAL_LETTA_MODEL_PORT", "8399")),
            model_url=(env.get("LOCAL_LETTA_MODEL_URL") or "").rstrip("/") or None,
            model_api_key=env.get("LOCAL_LETTA_MODEL_API_KEY") or "sk-local",
            start_timeout=float(env.get("LOCAL_LETTA_START_TIMEOUT", "180")),
            python=env.get("LOCAL_LETTA_PYTHON") or sys.executable,
        )

    venv = property(lambda self: self.root / "venv")
    logs = property(lambda self: self.root / "logs")
    run = property(lambda self: self.root / "run")
    home = property(lambda self: self.root / "home")
    pgdata = property(lambda self: self.root / "pgdata")
    sdist = property(lambda self: self.root / "sdist")
    src = property(lambda self: self.root / "sdist" / f"letta-{LETTA_VERSION}")
    marker = property(lambda self: self.root / f".installed-letta-{LETTA_VERSION}")
    key_file = property(lambda self: self.root / "letta-api-key")
    base_url = property(lambda self: f"http://127.0.0.1:{self.letta_port}")
    pg_uri = property(lambda self: f"postgresql://letta@127.0.0.1:{self.pg_port}/letta")

    @property
    def openai_base_url(self) -> str:
        return self.model_url or f"http://127.0.0.1:{self.model_port}/v1"


def config() -> Config:
    return Config.from_env()


# --------------------------------------------------------------------------- small helpers


def _say(msg: str) -> None:
    print(f"[local_letta {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _opener():
    # never route loopback requests through an HTTP proxy from the environment
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with _opener().open(url, timeout=timeout) as r:
            r.read()
            return 200 <= r.status < 300
    except (OSError, ValueError, http.client.HTTPException):
        return False


def is_healthy(url: str | None = None, timeout: float = 2.0) -> bool:
    """True if the Letta server at ``url`` (default: the configured one) answers GET /v1/health/."""
    url = (url or config().base_url).rstrip("/")
    return _http_ok(url + "/v1/health/", timeout)


def api_key(cfg: Config | None = None) -> str:
    """The key the local Letta server is started with: made once, then read from its file."""
    cfg = cfg or config()
    try:
        key = cfg.key_file.read_text().strip()
    except OSError:
        key = ""
    if key:
        return key
    cfg.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(cfg.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return cfg.key_file.read_text().strip()


def existing_api_key(cfg: Config | None = None) -> str:
    """The key if one was made, else "" (never creates one: for settings, read at start-up)."""
    cfg = cfg or config()
    try:
        return cfg.key_file.read_text().strip()
    except OSError:
        return ""


def refuses_anonymous(url: str | None = None, timeout: float = 5.0) -> bool:
    """True if the Letta server at ``url`` answers 401 to a request without the key."""
    url = (url or config().base_url).rstrip("/")
    try:
        with _opener().open(url + "/v1/agents/?limit=1", timeout=timeout) as r:
            r.read()
            return False
    except urllib.error.HTTPError as e:
        return e.code == 401
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _read_log(path: Path, start: int = 0) -> str | None:
    """A log's text from byte ``start`` on (None: no such log)."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _tail(path: Path, n: int = 40, start: int = 0) -> str:
    text = _read_log(path, start)
    if text is None:
        return "(no log)"
    return "\n".join(text.splitlines()[-n:])


# A line that begins a record in Letta's log (Letta's loggers, uvicorn's, asyncio's, httpx's), as
# against the lines of a traceback or a warning's source line under it.
_LOG_RECORD = re.compile(r"^(?:[\w.-]+ - [A-Z]+ - |(?:ERROR|WARNING|INFO|DEBUG):\s)")
_SITE_PACKAGES = re.compile(r'File "[^"]*/site-packages/')


def letta_log_size(cfg: Config | None = None) -> int | None:
    """How long the Letta server's log is now (None: no log, as with a server of another's)."""
    return _log_size(cfg or config(), "letta")


def letta_errors_since(offset: int, cfg: Config | None = None) -> list[str]:
    """The errors Letta logged after ``offset`` in its log (see ``errors_in_log``)."""
    text = _read_log((cfg or config()).logs / "letta.log", offset)
    return [] if text is None else errors_in_log(text)


def errors_in_log(text: str) -> list[str]:
    """Each error record in a stretch of Letta's log, and of its traceback the exception lines,
    Letta's own frames and the innermost frame (where it failed); the web framework's frames and
    the source lines are left out."""
    shown: list[str] = []
    in_error = False
    last_frame = ""
    for line in text.splitlines():
        line = _SITE_PACKAGES.sub('File "', line)
        if _LOG_RECORD.match(line):
            in_error = " - ERROR - " in line or line.startswith("ERROR:")
            if in_error:
                shown.append(line)
            last_frame = ""
        elif not in_error or line.startswith("    ") or not line.strip():
            continue
        elif line.startswith('  File "'):
            last_frame = line
            if line.startswith('  File "letta/'):
                shown.append(line)
        else:  # an exception, or a traceback's heading
            if last_frame and last_frame != shown[-1]:
                shown.append(last_frame)
            last_frame = ""
            shown.append(line)
    return shown


def _pid_running(pid: int) -> bool:
    try:  # reap it if it is our own exited child
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    except OSError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline")
            .read_bytes()
            .replace(b"\0", b" ")
            .decode("utf-8", "replace")
        )
    except OSError:
        return ""


# name -> a substring of the command line, to tell our process from a recycled pid
_CMD_MARK = {"letta": "letta", "model": "fake_model", "redis": "redis"}


def _read_pid(cfg: Config, name: str) -> int | None:
    try:
        pid = int((cfg.run / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_running(pid):
        return None
    cmd = _cmdline(pid)
    if cmd and _CMD_MARK.get(name, "") not in cmd:
        return None
    return pid


def _spawn(cfg: Config, name: str, argv: list[str], env: dict, cwd: Path) -> subprocess.Popen:
    """Start a detached child (own session) logging to <logs>/<name>.log; write its pid file."""
    log_path = cfg.logs / f"{name}.log"
    with open(log_path, "ab") as log:
        log.write(
            f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode()
        )
        log.flush()
        proc = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    (cfg.run / f"{name}.pid").write_text(str(proc.pid))
    return proc


def _log_size(cfg: Config, name: str) -> int | None:
    try:
        return (cfg.logs / f"{name}.log").stat().st_size
    except OSError:
        return None


def _log_offset(cfg: Config, name: str) -> int:
    return _log_size(cfg, name) or 0


def _kill(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the process group of ``pid`` (each child leads its own session), then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except OSError:
            try:
                os.kill(pid, sig)
            except OSError:
                return
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 5)
        while time.monotonic() < deadline:
            if not _pid_running(pid):
                return
            time.sleep(0.1)


def _child_env(cfg: Config, **extra: str) -> dict:
    env = dict(os.environ)
    for k in ("PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(k, None)
    no_proxy = ",".join(
        x for x in ("127.0.0.1", "localhost", env.get("NO_PROXY") or env.get("no_proxy")) if x
    )
    env.update(NO_PROXY=no_proxy, no_proxy=no_proxy, HOME=str(cfg.home), PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


@contextmanager
def _lock(cfg: Config):
    """Serialise install/start/stop between processes (e.g. parallel test workers)."""
    _ensure_dirs(cfg)
    with open(cfg.root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ensure_dirs(cfg: Config) -> None:
    new = not cfg.root.exists()
    cfg.root.mkdir(parents=True, exist_ok=True)
    if new:
        os.chmod(cfg.root, 0o755)  # postgres (as nobody) must traverse it
    for d in (cfg.logs, cfg.run, cfg.home, cfg.sdist):
        d.mkdir(exist_ok=True)


def _is_root() -> bool:
    return os.geteuid() == 0


def _pg_user_kwargs() -> dict:
    """Popen kwargs that run a PostgreSQL binary as `nobody` when we are root."""
    if not _is_root():
        return {}
    pw = pwd.getpwnam("nobody")
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


# --------------------------------------------------------------------------- install


def is_installed(cfg: Config | None = None) -> bool:
    cfg = cfg or config()
    return (
        cfg.marker.exists()
        and (cfg.venv / "bin" / "letta").exists()
        and (cfg.src / "alembic.ini").exists()
    )


def install(cfg: Config | None = None) -> None:
    """Create <dir>/venv with letta[postgres,server,redis]==0.16.8 + pgserver.

    Idempotent (a marker file records success); the first install takes about a minute.
    """
    cfg = cfg or config()
    if is_installed(cfg):
        return
    with _lock(cfg):
        if is_installed(cfg):
            return
        _install_locked(cfg)


def _run_logged(argv: list[str], log_path: Path, what: str, **kw) -> None:
    with open(log_path, "ab") as log:
        log.write(f"\n===== {time.strftime('%H:%M:%S')} $ {' '.join(map(str, argv))}\n".encode())
        log.flush()
        rc = subprocess.run(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw
        ).returncode
    if rc != 0:
        raise HarnessError(f"{what} failed (exit {rc}); see {log_path}:\n{_tail(log_path, 25)}")


def _install_locked(cfg: Config) -> None:
    t0 = time.monotonic()
    log = cfg.logs / "install.log"
    py = cfg.python
    ver = subprocess.run(
        [py, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if ver not in ("3.11", "3.12", "3.13"):
        raise HarnessError(
            f"{py} is Python {ver or '?'}; letta {LETTA_VERSION} needs 3.11-3.13 "
            "(set LOCAL_LETTA_PYTHON)"
        )
    _say(f"installing letta {LETTA_VERSION} into {cfg.venv} (first time only, ~75 s; log: {log})")
    vpy = cfg.venv / "bin" / "python"
    if not vpy.exists():
        _say(f"creating venv with {py} (Python {ver})")
        _run_logged([py, "-m", "venv", str(cfg.venv)], log, "creating the venv")
    pip = [str(vpy), "-m", "pip", "--disable-pip-version-check"]
    try:
        _run_logged([*pip, "install", "-q", "--upgrade", "pip"], log, "upgrading pip")
    except HarnessError:
        _say("(could not upgrade pip; going on with the bundled one)")

    # The sdist carries uv.lock (the exact dependency set Letta's own image uses) and the alembic
    # migrations, which the wheel does not ship.
    tarball = cfg.sdist / f"letta-{LETTA_VERSION}.tar.gz"
    if not tarball.exists():
        _say(f"downloading the letta {LETTA_VERSION} sdist (uv.lock + alembic migrations)")
        _run_logged(
            [
                *pip,
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                "letta",
                "-d",
                str(cfg.sdist),
                f"letta=={LETTA_VERSION}",
            ],
            log,
            "downloading the letta sdist",
        )
    prefix = f"letta-{LETTA_VERSION}/"
    with tarfile.open(tarball) as tf:
        members = [
            m
            for m in tf.getmembers()
            if m.name in (prefix + "uv.lock", prefix + "alembic.ini")
            or m.name.startswith(prefix + "alembic/")
        ]
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tf.extractall(cfg.sdist, members=members, **kw)
    if not (cfg.src / "uv.lock").exists() or not (cfg.src / "alembic.ini").exists():
        raise HarnessError(f"{tarball} lacks uv.lock or alembic.ini")

    constraints = cfg.root / "constraints.txt"
    import tomllib  # 3.11+

    with open(cfg.src / "uv.lock", "rb") as f:
        lock = tomllib.load(f)
    pins = sorted(
        {
            f"{p['name']}=={p['version']}"
            for p in lock.get("package", [])
            if p.get("name") != "letta"
            and "registry" in (p.get("source") or {})
            and p.get("version")
        }
    )
    constraints.write_text("\n".join(pins) + "\n")
    _say(f"{len(pins)} pins from uv.lock -> {constraints}")

    _say(
        f"pip install letta[postgres,server,redis]=={LETTA_VERSION} "
        f"pgserver=={PGSERVER_VERSION} (pinned; ~60 s)"
    )
    _run_logged(
        [
            *pip,
            "install",
            "-q",
            "-c",
            str(constraints),
            f"letta[postgres,server,redis]=={LETTA_VERSION}",
            f"pgserver=={PGSERVER_VERSION}",
        ],
        log,
        "pip install letta",
    )
    _run_logged(
        [str(vpy), "-c", "import letta, pgserver, alembic; print('letta', letta.__version__)"],
        log,
        "importing the installed letta",
    )
    cfg.marker.write_text(
        json.dumps(
            {
                "letta": LETTA_VERSION,
                "pgserver": PGSERVER_VERSION,
                "python": ver,
                "installed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
        )
        + "\n"
    )
    _say(f"install done in {time.monotonic() - t0:.1f}s")


# --------------------------------------------------------------------------- postgres


def _pgbin(cfg: Config) -> Path:
    found = sorted(cfg.venv.glob("lib/python3*/site-packages/pgserver/pginstall/bin"))
    if not found:
        raise HarnessError(
            f"pgserver binaries not found under {cfg.venv}; delete {cfg.marker} and start again"
        )
    return found[0]


def _postmaster_pid(cfg: Config) -> int | None:
    try:
        pid = int((cfg.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None
    return pid if _pid_running(pid) else None


def _pg(
    cfg: Config, *argv: str, as_pg_user: bool = False, check: bool = True, what: str = ""
) -> subprocess.CompletedProcess:
    env = _child_env(cfg, PGOPTIONS="-c client_min_messages=warning")
    env.pop("PGPASSWORD", None)
    kw = _pg_user_kwargs() if as_pg_user else {}
    r = subprocess.run(
        [str(_pgbin(cfg) / argv[0]), *argv[1:]],
        env=env,
        cwd=str(cfg.root),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        **kw,
    )
    if check and r.returncode != 0:
        with open(cfg.logs / "postgres-admin.log", "a") as f:
            f.write(f"$ {' '.join(argv)}\n{r.stdout}{r.stderr}\n")
        raise HarnessError(
            f"{what or argv[0]} failed (exit {r.returncode}): "
            f"{r.stderr.strip() or r.stdout.strip()} "
            f"(see {cfg.logs / 'postgres-admin.log'}, {cfg.logs / 'postgres.log'})"
        )
    return r


def _start_postgres(cfg: Config) -> None:
    pgbin = _pgbin(cfg)
    fresh = False
    if not (cfg.pgdata / "PG_VERSION").exists():
        _say(f"initdb {cfg.pgdata} (PostgreSQL 16 + pgvector from pgserver)")
        if cfg.pgdata.exists():
            shutil.rmtree(cfg.pgdata)
        cfg.pgdata.mkdir(mode=0o700)
        if _is_root():
            pw = pwd.getpwnam("nobody")
            os.chown(cfg.pgdata, pw.pw_uid, pw.pw_gid)
            probe = subprocess.run(
                [str(pgbin / "postgres"), "--version"],
                capture_output=True,
                cwd="/",
                **_pg_user_kwargs(),
            )
            if probe.returncode != 0:
                raise HarnessError(
                    f"user nobody cannot run {pgbin}/postgres; put LETTACHAT_LOCAL_DIR under a "
                    "world-traversable path such as /tmp"
                )
        _pg(
            cfg,
            "initdb",
            "-D",
            str(cfg.pgdata),
            "--auth=trust",
            "-U",
            "letta",
            "-E",
            "UTF8",
            "--no-locale",
            as_pg_user=True,
            what="initdb",
        )
        fresh = True
    pglog = cfg.logs / "postgres.log"
    if _postmaster_pid(cfg) is None:
        if _port_open(cfg.pg_port):
            raise HarnessError(
                f"port {cfg.pg_port} is taken by another program; set LOCAL_LETTA_PG_PORT"
            )
        if not pglog.exists():
            pglog.touch()
        if _is_root():
            pw = pwd.getpwnam("nobody")
            os.chown(pglog, pw.pw_uid, pw.pw_gid)
        _pg(
            cfg,
            "pg_ctl",
            "-D",
            str(cfg.pgdata),
            "-l",
            str(pglog),
            "-w",
            "-t",
            "60",
            "-o",
            f"-h 127.0.0.1 -p {cfg.pg_port} -k {cfg.pgdata}",
            "start",
            as_pg_user=True,
            what="pg_ctl start",
        )
    conn = ["-h", "127.0.0.1", "-p", str(cfg.pg_port), "-U", "letta"]
    have_db = (
        _pg(
            cfg,
            "psql",
            "-q",
            *conn,
            "-d",
            "postgres",
            "-tAc",
            "select 1 from pg_database where datname='letta'",
            what="psql",
        ).stdout.strip()
        == "1"
    )
    if not have_db:
        _pg(cfg, "createdb", *conn, "letta", what="createdb")
        fresh = True
    migrated = cfg.run / f".migrated-{LETTA_VERSION}"
    if fresh:
        migrated.unlink(missing_ok=True)
    if not migrated.exists():
        _pg(
            cfg,
            "psql",
            "-q",
            *conn,
            "-d",
            "letta",
            "-c",
            "create extension if not exists vector",
            what="create extension vector",
        )
        _say("alembic upgrade head")
        _run_logged(
            [str(cfg.venv / "bin" / "alembic"), "upgrade", "head"],
            cfg.logs / "alembic.log",
            "alembic upgrade head",
            cwd=str(cfg.src),
            env={
                k: v
                for k, v in _child_env(cfg, LETTA_PG_URI=cfg.pg_uri).items()
                if k != "PYTHONPATH"
            },
        )
        migrated.write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def _stop_postgres(cfg: Config) -> bool:
    if _postmaster_pid(cfg) is None:
        return False
    _pg(
        cfg,
        "pg_ctl",
        "-D",
        str(cfg.pgdata),
        "-m",
        "fast",
        "-w",
        "-t",
        "60",
        "stop",
        as_pg_user=True,
        check=False,
    )
    return True


# --------------------------------------------------------------------------- redis / model / letta


def _redis_server() -> str | None:
    return (
        os.environ.get("LOCAL_LETTA_REDIS_SERVER")
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    )


def _wait(
    check, deadline: float, proc_pid: int | None, name: str, cfg: Config, offset: int, what: str
) -> None:
    while True:
        if check():
            return
        if proc_pid is not None and not _pid_running(proc_pid):
            raise HarnessError(
                f"{name} exited while starting; see {cfg.logs / (name + '.log')}:\n"
                f"{_tail(cfg.logs / (name + '.log'), 40, offset)}"
            )
        if time.monotonic() > deadline:
            raise HarnessError(
                f"{what} not ready in time; see {cfg.logs / (name + '.log')}:\n"
                f"{_tail(cfg.logs / (name + '.log'), 40, offset)}"
            )
        time.sleep(0.1)


def _start_redis(cfg: Config) -> bool:
    """Start the private redis; False if redis-server is missing (Letta then runs without it)."""
    exe = _redis_server()
    if not exe:
        _say(
            "WARNING: redis-server not found; background runs and stream resumption will answer 503"
        )
        return False
    pid = _read_pid(cfg, "redis")
    if pid is None:
        if _port_open(cfg.redis_port):
            raise HarnessError(
                f"port {cfg.redis_port} is taken by another program; set LOCAL_LETTA_REDIS_PORT"
            )
        off = _log_offset(cfg, "redis")
        proc = _spawn(
            cfg,
            "redis",
            [
                exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(cfg.redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(cfg.run),
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            _child_env(cfg),
            cfg.run,
        )
        pid = proc.pid
        _wait(
            lambda: _port_open(cfg.redis_port),
            time.monotonic() + 15,
            pid,
            "redis",
            cfg,
            off,
            "redis",
        )
    return True


def _model_ok(cfg: Config) -> bool:
    try:
        with _opener().open(f"http://127.0.0.1:{cfg.model_port}/v1/models", timeout=2) as r:
            ids = [m.get("id") for m in json.loads(r.read()).get("data", [])]
    except (OSError, ValueError, AttributeError, http.client.HTTPException):
        return False
    return _model_id() in ids


def _start_model(cfg: Config) -> None:
    if cfg.model_url:
        return
    mid = _model_id()
    if mid.lower().startswith(FORBIDDEN_PREFIXES):
        raise HarnessError(f"FAKE_MODEL_ID={mid!r} must not start with {FORBIDDEN_PREFIXES}")
    pid = _read_pid(cfg, "model")
    if pid is not None:
        if f"--port {cfg.model_port}" in _cmdline(pid):
            off = _log_offset(cfg, "model")
            _wait(
                lambda: _model_ok(cfg),
                time.monotonic() + 15,
                pid,
                "model",
                cfg,
                off,
                "scripted model",
            )
            return
        _kill(pid)  # ours, but started for another port: replace it
    if _port_open(cfg.model_port):
        if _model_ok(cfg):
            return  # a scripted model we no longer have a pid for
        raise HarnessError(
            f"port {cfg.model_port} is taken by another program; set LOCAL_LETTA_MODEL_PORT"
        )
    pypath = os.pathsep.join(x for x in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if x)
    env = _child_env(
        cfg,
        PYTHONPATH=pypath,
        FAKE_MODEL_ID=mid,
        FAKE_MODEL_LOG=os.environ.get("FAKE_MODEL_LOG") or str(cfg.logs / "model_requests.jsonl"),
    )
    off = _log_offset(cfg, "model")
    proc = _spawn(
        cfg,
        "model",
        [
            sys.executable,
            "-m",
            "devtools.local_letta.fake_model",
            "--host",
            "127.0.0.1",
            "--port",
            str(cfg.model_port),
        ],
        env,
        PROJECT_ROOT,
    )
    _wait(
        lambda: _model_ok(cfg), time.monotonic() + 15, proc.pid, "model", cfg, off, "scripted model"
    )


def _start_letta_process(cfg: Config, have_redis: bool) -> None:
    if is_healthy(cfg.base_url):
        return
    pid = _read_pid(cfg, "letta")
    if pid is None and _port_open(cfg.letta_port):
        raise HarnessError(
            f"port {cfg.letta_port} is taken by a program that is not a healthy Letta; "
            "set LOCAL_LETTA_PORT"
        )
    t0 = time.monotonic()
    if pid is None:
        extra = {
            # Letta's secure mode: every request but the health check needs the key.
            "LETTA_SERVER_SECURE": "true",
            "LETTA_SERVER_PASSWORD": api_key(cfg),
            # A pool of reused connections, not Letta's default of a new connection per query
            # (NullPool): each query's connect costs ~10 ms, and once, near the end of a CI run,
            # one connect hung for asyncpg's 60 s and a cancel request failed with a 500. The
            # pooled engine asks for TLS unless the URI says otherwise; this postgres has none.
            "LETTA_PG_URI": cfg.pg_uri + "?sslmode=disable",
            "LETTA_DISABLE_SQLALCHEMY_POOLING": "false",
            "OPENAI_API_KEY": cfg.model_api_key,
            "OPENAI_BASE_URL": cfg.openai_base_url,
        }
        if have_redis:
            extra.update(LETTA_REDIS_HOST="127.0.0.1", LETTA_REDIS_PORT=str(cfg.redis_port))
        env = _child_env(cfg, **extra)
        # Keep the server offline and self-contained: drop other providers' keys/URLs from the
        # caller's environment (Letta would list their models at start-up) and the caller's
        # PYTHONPATH (the server runs from its own venv).
        for k in list(env):
            if (
                k.endswith(("_API_KEY", "_BASE_URL", "_API_BASE")) and not k.startswith("OPENAI_")
            ) or k == "PYTHONPATH":
                env.pop(k)
        if not have_redis:
            env.pop("LETTA_REDIS_HOST", None)
            env.pop("LETTA_REDIS_PORT", None)
        # cwd = run/ because `letta server` writes openapi_letta.json (1.7 MB) into its cwd.
        off = _log_offset(cfg, "letta")
        proc = _spawn(
            cfg,
            "letta",
            [
                str(cfg.venv / "bin" / "letta"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(cfg.letta_port),
            ],
            env,
            cfg.run,
        )
        pid = proc.pid
        _say(f"letta server starting (pid {pid}, log {cfg.logs / 'letta.log'})")
    else:
        off = _log_offset(cfg, "letta")
        _say(f"letta server already running (pid {pid}); waiting for health")
    _wait(
        lambda: is_healthy(cfg.base_url),
        time.monotonic() + cfg.start_timeout,
        pid,
        "letta",
        cfg,
        off,
        f"letta on {cfg.base_url}",
    )
    _say(f"letta {LETTA_VERSION} healthy on {cfg.base_url} after {time.monotonic() - t0:.1f}s")


def _start_all(cfg: Config) -> str:
    _start_postgres(cfg)
    have_redis = _start_redis(cfg)
    # the model must be up first: Letta lists the provider's models at start-up
    _start_model(cfg)
    _start_letta_process(cfg, have_redis)
    return cfg.base_url


# --------------------------------------------------------------------------- public API


def base_url() -> str:
    """The configured Letta URL (whether or not it is running)."""
    return config().base_url


def start() -> str:
    """Install if needed, start postgres, redis, the model and Letta; return the Letta base URL.

    Returns at once if Letta is already healthy.  Everything is detached and keeps running after
    the caller exits; call stop() to end it.
    """
    cfg = config()
    if is_healthy(cfg.base_url) and not refuses_anonymous(cfg.base_url):
        if _read_pid(cfg, "letta") is None:
            raise HarnessError(
                f"a Letta server on {cfg.base_url} that this harness did not start answers "
                "without a key; stop it or set LOCAL_LETTA_PORT"
            )
        _say("the running Letta server takes requests without a key: restarting it with one")
        stop_letta()
    if is_healthy(cfg.base_url):
        if not cfg.model_url and not _model_ok(cfg):
            with _lock(cfg):  # Letta is up but the scripted model died: bring it back
                _start_model(cfg)
        return cfg.base_url
    t0 = time.monotonic()
    install(cfg)
    with _lock(cfg):
        url = _start_all(cfg)
    _say(
        f"all up in {time.monotonic() - t0:.1f}s: {url}  "
        f"(model handle {model_handle()}, logs {cfg.logs})"
    )
    return url


def start_letta() -> str:
    """Start only the Letta server (its dependencies are started too if they are down)."""
    return start()


def stop_letta() -> bool:
    """Stop only the Letta server; True if it was running."""
    cfg = config()
    with _lock(cfg):
        pid = _read_pid(cfg, "letta")
        if pid is None:
            return False
        _kill(pid)
        (cfg.run / "letta.pid").unlink(missing_ok=True)
        deadline = time.monotonic() + 10
        while _port_open(cfg.letta_port) and time.monotonic() < deadline:
            time.sleep(0.1)
        _say(f"stopped letta (pid {pid})")
        return True


def kill_letta() -> bool:
    """SIGKILL the Letta server at once (a crash: nothing of it finishes); True if it ran."""
    cfg = config()
    with _lock(cfg):
        pid = _read_pid(cfg, "letta")
        if pid is None:
            return False
        for send in (os.killpg, os.kill):
            try:
                send(pid, signal.SIGKILL)
                break
            except OSError:
                continue
        deadline = time.monotonic() + 10
        while _pid_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        (cfg.run / "letta.pid").unlink(missing_ok=True)
        _say(f"killed letta (pid {pid})")
        return True


def pause_letta(paused: bool = True) -> None:
    """SIGSTOP the Letta server (it hangs: connections open, nothing answered), or SIGCONT it."""
    cfg = config()
    pid = _read_pid(cfg, "letta")
    if pid is None:
        raise RuntimeError("the Letta server is not running")
    sig = signal.SIGSTOP if paused else signal.SIGCONT
    try:
        os.killpg(pid, sig)
    except OSError:
        os.kill(pid, sig)


def restart_letta() -> str:
    """Stop the Letta server process and start it again (db, redis, model keep running)."""
    stop_letta()
    return start_letta()


def stop() -> None:
    """Stop Letta, the scripted model, redis and postgres (the processes this harness started)."""
    cfg = config()
    if not cfg.root.exists():
        return
    stop_letta()
    with _lock(cfg):
        for name in ("model", "redis"):
            pid = _read_pid(cfg, name)
            if pid is not None:
                _kill(pid)
                _say(f"stopped {name} (pid {pid})")
            (cfg.run / f"{name}.pid").unlink(missing_ok=True)
        if cfg.venv.exists() and _stop_postgres(cfg):
            _say("stopped postgres")


def status() -> dict:
    """A snapshot: install state, each process (pid / running) and whether Letta is healthy."""
    cfg = config()
    procs = {}
    for name in ("letta", "model", "redis"):
        pid = _read_pid(cfg, name) if cfg.run.exists() else None
        procs[name] = {"running": pid is not None, "pid": pid, "log": str(cfg.logs / f"{name}.log")}
    if cfg.model_url:
        procs["model"] = {"running": None, "pid": None, "external_url": cfg.model_url}
    pg = _postmaster_pid(cfg)
    procs["postgres"] = {
        "running": pg is not None,
        "pid": pg,
        "log": str(cfg.logs / "postgres.log"),
    }
    return {
        "base_url": cfg.base_url,
        "healthy": is_healthy(cfg.base_url),
        "installed": is_installed(cfg),
        "letta_version": LETTA_VERSION,
        "root": str(cfg.root),
        "api_key_file": str(cfg.key_file),
        "refuses_requests_without_key": refuses_anonymous(cfg.base_url),
        "model_handle": model_handle(),
        "openai_base_url": cfg.openai_base_url,
        "pg_uri": cfg.pg_uri,
        "redis": f"127.0.0.1:{cfg.redis_port}",
        "processes": procs,
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    cmd = argv[0] if argv else "start"
    try:
        if cmd == "install":
            install()
        elif cmd == "start":
            print(start(), flush=True)
        elif cmd == "stop":
            stop()
        elif cmd == "status":
            print(json.dumps(status(), indent=2))
        elif cmd == "url":
            print(base_url())
        elif cmd == "key":
            print(api_key())
        elif cmd == "restart-letta":
            print(restart_letta(), flush=True)
        elif cmd == "stop-letta":
            stop_letta()
        elif cmd == "start-letta":
            print(start_letta(), flush=True)
        else:
            print(
                "usage: python -m devtools.local_letta "
                "[install|start|stop|status|url|key|restart-letta|stop-letta|start-letta]",
                file=sys.stderr,
            )
            return 2
    except HarnessError as e:
        print(f"local_letta: ERROR: {e}", file=sys.stderr)
        return 1
    return 0
